"""VAE round trips of the inpainter: images in [0, 1] to scaled latents and back, done the way
diffusers' SDXL inpainting pipeline scales its own latents (so latents can be handed to it)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def encode_latents(pipe: Any, image: np.ndarray) -> Any:
    """Scaled VAE latents [1, 4, H/8, W/8] (the distribution's mode) of a float32 [H, W, 3] image in [0, 1].

    Deterministic (no sampling), scaled like the pipeline scales its own image latents.
    """
    import torch

    vae = pipe.vae
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(vae.device, vae.dtype) * 2.0 - 1.0
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode()
    return latents * vae.config.scaling_factor


def decode_latents(pipe: Any, latents: Any) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] from scaled latents [1, 4, h, w] (undoing mean/std like the pipeline)."""
    import torch

    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    config = vae.config
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    image = (image[0].float() / 2.0 + 0.5).clamp(0.0, 1.0)
    return image.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def keep_vae_fp32(pipe: Any) -> None:
    """Run the VAE in fp32 when it is fp16 and marked force_upcast (the SDXL VAE overflows in fp16)."""
    import torch

    vae = pipe.vae
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        logger.info("VAE is fp16 with force_upcast: running it in fp32")
        vae.to(torch.float32)
