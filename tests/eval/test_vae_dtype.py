"""The fp32 VAE stays fp32 under model.dtype bf16 after the training sample grid and after inpainting.

diffusers' inpainting pipeline, given an image, encodes it with ``_encode_vae_image``, which
upcasts a ``force_upcast`` VAE and then casts it to the prompt dtype: from then on every training
latent would be encoded in bf16. furlora hands the pipeline latents only.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from eval_helpers import box_mask, fast_settings, textured_image


@pytest.fixture(scope="module")
def bf16_components(tiny_sdxl_inpaint):
    from furlora.models.sdxl import load_sdxl

    components = load_sdxl(tiny_sdxl_inpaint, dtype="bf16", vae_dtype="fp32")
    components.vae.register_to_config(force_upcast=True)  # as the real SDXL VAE config says
    return components


def _vae_dtypes(components) -> set[torch.dtype]:
    return {p.dtype for p in components.vae.parameters()}


def _sample(size: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    hole = torch.zeros(1, size, size)
    hole[:, 16:48, 16:48] = 1.0
    return {"pixel_values": torch.rand(3, size, size, generator=g) * 2 - 1, "inpaint_mask": hole,
            "caption": "a spitz, white fur"}


def test_sample_grid_keeps_the_vae_fp32(bf16_components, tmp_path):
    from PIL import Image

    from furlora.train.sample_grid import write_sample_grid

    assert _vae_dtypes(bf16_components) == {torch.float32}
    path = write_sample_grid(bf16_components, [_sample(), _sample()], tmp_path / "grid.png", num_images=2, steps=2,
                             seed=0, disabled=contextlib.nullcontext)
    assert _vae_dtypes(bf16_components) == {torch.float32}
    assert bf16_components.unet.dtype == torch.bfloat16
    grid = Image.open(path)
    assert grid.size == (2 + 4 * (64 + 2), 2 + 2 * (64 + 2))  # image | hole | base | LoRA, two rows


def test_inpainting_keeps_the_vae_fp32(bf16_components):
    from furlora.eval.inpaint import MultiPassInpainter

    inpainter = MultiPassInpainter(bf16_components, fast_settings())
    result = inpainter.inpaint(textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48), prompt="fur", seed=0)
    assert result.band.any()
    assert _vae_dtypes(bf16_components) == {torch.float32}
