"""VAE round trips scaled the way diffusers' SDXL pipelines scale their latents.

furlora encodes with the VAE itself and hands latents (and ``masked_image_latents``) to
diffusers' inpainting pipeline, never images: the pipeline's own encode upcasts the VAE and
then casts it to the prompt-embeds dtype, which would leave an fp32 VAE in bf16 / fp16 for the
rest of the run. Inputs are moved to the VAE's device and dtype; the VAE is never cast.
"""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def vae_encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Scaled latents [B, 4, H/8, W/8] of pixels [B, 3, H, W] in [-1, 1] (the posterior's mode: deterministic)."""
    x = pixels.to(vae.device, vae.dtype)
    return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor


@torch.no_grad()
def vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """float32 pixels [B, 3, H, W] in [-1, 1] from scaled latents (undoing latents_mean/std like the pipeline)."""
    latents = latents.to(vae.device, vae.dtype)
    config = vae.config
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    return vae.decode(latents, return_dict=False)[0].float().clamp(-1.0, 1.0)
