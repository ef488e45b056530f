"""Sample inpaintings during training, written as a PNG grid.

Each row is one held-out sample (as drawn in epoch 0): the image, its inpainting hole (grey),
the base model's inpainting and the LoRA's (generated pixels inside the hole only), with the same seed, so the grid shows what the
adapter changed. Uses diffusers' ``StableDiffusionXLInpaintPipeline`` on the training
components (it also runs a 4-channel base UNet, by blending latents).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from furlora.data.preview import to_uint8

logger = logging.getLogger(__name__)


def _floatto_uint8(image: np.ndarray) -> np.ndarray:
    """float [H, W, 3] in [0, 1] -> uint8."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def _grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of equal-size uint8 tiles [h, w, 3] -> one uint8 image with white padding."""
    h = max(t.shape[0] for r in rows for t in r)
    w = max(t.shape[1] for r in rows for t in r)
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return out


@torch.no_grad()
def write_sample_grid(
    components: Any,
    dataset: Any,
    path: str | Path,
    *,
    num_images: int,
    steps: int,
    seed: int,
    disabled: Callable[[], contextlib.AbstractContextManager[Any]],
    prompt_transform: Callable[[str], str] | None = None,
) -> Path:
    """Inpaint ``num_images`` held-out samples with and without the adapter; save the grid as PNG.

    ``disabled``: context manager factory that turns the adapter off (base model).
    ``prompt_transform``: caption -> prompt (e.g. inserting learned tokens, short form: the
    pipeline expands multi-vector tokens itself).
    """
    from diffusers import StableDiffusionXLInpaintPipeline
    from PIL import Image

    pipe = StableDiffusionXLInpaintPipeline(**components.pipeline_components())
    pipe.set_progress_bar_config(disable=True)
    unet = components.unet
    was_training = unet.training
    unet.eval()
    rows = []
    try:
        for index in range(min(num_images, len(dataset))):
            sample = dataset.sample(index, 0) if hasattr(dataset, "sample") else dataset[index]
            image = to_uint8(sample["pixel_values"])
            hole = sample["inpaint_mask"][0].cpu().numpy() > 0.5
            shown = image.copy()
            shown[hole] = 128
            height, width = image.shape[:2]
            kwargs = dict(
                prompt=(prompt_transform or str)(sample.get("caption", "")),
                image=Image.fromarray(image),
                mask_image=Image.fromarray((hole * 255).astype(np.uint8)),
                height=height,
                width=width,
                num_inference_steps=steps,
                strength=1.0,
                output_type="np",
            )
            with disabled():
                base = pipe(generator=torch.Generator("cpu").manual_seed(seed + index), **kwargs).images[0]
            lora = pipe(generator=torch.Generator("cpu").manual_seed(seed + index), **kwargs).images[0]
            # Show the generated pixels inside the hole only, as an inpainting result is used.
            keep = hole[..., None]
            rows.append([image, shown, np.where(keep, _floatto_uint8(base), image), np.where(keep, _floatto_uint8(lora), image)])
    finally:
        unet.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_grid(rows)).save(path)
    logger.info("sample inpaintings (image | hole | base | LoRA): %s", path)
    return path
