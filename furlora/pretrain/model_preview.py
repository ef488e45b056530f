"""Preview pictures of pretrained models: what a person looks at to judge them.

One PNG grid, rows of ``size`` x ``size`` tiles:
1. unseen corpus pictures, 2. their VAE reconstructions,
3. text-to-image samples of the 4-channel model for the same captions,
4. the inpainting input (hole shown grey), 5. the 9-channel model's inpainting result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from furlora.data.preview import to_uint8
from furlora.pretrain.corpus import ProceduralCorpus


def _tiles(images: torch.Tensor) -> np.ndarray:
    """float [B,3,H,W] in [-1,1] -> uint8 [H, B*W, 3]."""
    return np.concatenate([to_uint8(x) for x in images], axis=1)


@torch.no_grad()
def preview_grid(base_folder: Path, inpaint_folder: Path, out_png: Path, count: int = 6, seed: int = 99,
                 steps: int = 25, size: int = 128, guidance: float = 5.0) -> Path:
    """Render the preview grid of the two pretrained folders into ``out_png``."""
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
    from PIL import Image

    from furlora.models.sdxl import load_sdxl

    corpus = ProceduralCorpus(seed, size, full_mask_fraction=0.0)
    batch = corpus.batch(list(range(count)))
    pixels, mask, captions = batch["pixel_values"], batch["inpaint_mask"], batch["captions"]
    base, inpaint = load_sdxl(base_folder), load_sdxl(inpaint_folder)
    recon = inpaint.vae.decode(inpaint.vae.encode(pixels).latent_dist.mode()).sample  # type: ignore[arg-type]
    gen = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    t2i = StableDiffusionXLPipeline(**base.pipeline_components())
    t2i.set_progress_bar_config(disable=True)
    samples = t2i(prompt=list(captions), height=size, width=size, num_inference_steps=steps,  # type: ignore[arg-type]
                  guidance_scale=guidance, generator=gen, output_type="pt").images * 2 - 1
    inp = StableDiffusionXLInpaintPipeline(**inpaint.pipeline_components())
    inp.set_progress_bar_config(disable=True)
    gen = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    filled = inp(prompt=list(captions), image=(pixels + 1) / 2, mask_image=mask, height=size, width=size,  # type: ignore[arg-type]
                 num_inference_steps=steps, guidance_scale=guidance, strength=1.0, generator=gen,
                 output_type="pt").images * 2 - 1
    holed = batch["masked_pixel_values"]  # the hole set to 0 (grey)
    rows = [_tiles(pixels), _tiles(recon), _tiles(samples), _tiles(holed), _tiles(filled)]  # type: ignore[arg-type]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_png)
    return out_png
