"""VAE round trips of the inpainter: images in [0, 1] to scaled latents and back, done the way
diffusers' SDXL inpainting pipeline scales its own latents (so latents can be handed to it)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from furlora.models.vae import vae_decode, vae_encode

logger = logging.getLogger(__name__)


def encode_latents(pipe: Any, image: np.ndarray) -> Any:
    """Scaled VAE latents [1, 4, H/8, W/8] (the distribution's mode) of a float32 [H, W, 3] image in [0, 1].

    Deterministic (no sampling), scaled like the pipeline scales its own image latents.
    """
    import torch

    vae = pipe.vae
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(vae.device, vae.dtype) * 2.0 - 1.0
    return vae_encode(vae, x)


def decode_latents(pipe: Any, latents: Any) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] from scaled latents [1, 4, h, w] (undoing mean/std like the pipeline)."""
    image = vae_decode(pipe.vae, latents)[0] / 2.0 + 0.5
    return image.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def keep_vae_fp32(pipe: Any) -> None:
    """Run the VAE in fp32 when it is fp16 and marked force_upcast (the SDXL VAE overflows in fp16)."""
    import torch

    vae = pipe.vae
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        logger.info("VAE is fp16 with force_upcast: running it in fp32")
        vae.to(torch.float32)
