"""Sample inpaintings during training, written as a PNG grid.

Each row is one held-out sample (as drawn in epoch 0): the image, its inpainting hole (grey),
the base model's inpainting and the LoRA's (generated pixels inside the hole only), with the same seed, so the grid shows what the
adapter changed. Uses diffusers' ``StableDiffusionXLInpaintPipeline`` on the training
components (it also runs a 4-channel base UNet, by blending latents), fed with latents that
furlora encodes itself so the VAE keeps its dtype (:mod:`furlora.models.vae`).
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
from furlora.models.vae import vae_decode, vae_encode

logger = logging.getLogger(__name__)


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
def write_sample_grid(components: Any, dataset: Any, path: str | Path, *, num_images: int, steps: int, seed: int,
                      disabled: Callable[[], contextlib.AbstractContextManager[Any]],
                      prompt_transform: Callable[[str], str] | None = None) -> Path:
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
    vae = components.vae
    nine_channels = unet.config.in_channels == 9
    was_training = unet.training
    unet.eval()
    rows = []
    try:
        for index in range(min(num_images, len(dataset))):
            sample = dataset.sample(index, 0) if hasattr(dataset, "sample") else dataset[index]
            pixels = sample["pixel_values"][None]
            hole_t = (sample["inpaint_mask"][None] > 0.5).float()
            image = to_uint8(sample["pixel_values"])
            hole = hole_t[0, 0].cpu().numpy() > 0.5
            shown = image.copy()
            shown[hole] = 128
            height, width = image.shape[:2]
            # Latents in, latents out: the pipeline never touches the VAE (its own encode casts
            # an fp32 VAE to the prompt dtype for good). The masked image is built as in
            # training: the hole at 0 in [-1, 1].
            kwargs: dict[str, Any] = dict(
                prompt=(prompt_transform or str)(sample.get("caption", "")),
                image=vae_encode(vae, pixels),
                mask_image=hole_t,
                height=height,
                width=width,
                num_inference_steps=steps,
                strength=1.0,
                output_type="latent",
            )
            if nine_channels:
                kwargs["masked_image_latents"] = vae_encode(vae, pixels * (1.0 - hole_t))
            with disabled():
                base = pipe(generator=torch.Generator("cpu").manual_seed(seed + index), **kwargs).images
            lora = pipe(generator=torch.Generator("cpu").manual_seed(seed + index), **kwargs).images
            # Show the generated pixels inside the hole only, as an inpainting result is used.
            keep = hole[..., None]
            rows.append([image, shown, np.where(keep, to_uint8(vae_decode(vae, base)[0]), image),
                         np.where(keep, to_uint8(vae_decode(vae, lora)[0]), image)])
    finally:
        unet.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_grid(rows)).save(path)
    logger.info("sample inpaintings (image | hole | base | LoRA): %s", path)
    return path
