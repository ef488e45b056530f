"""One training forward pass: the masked 4-channel objective and the 9-channel inpainting objective.

Inputs of the SDXL inpainting UNet (as diffusers' ``StableDiffusionXLInpaintPipeline`` builds
them at inference): ``cat([noisy_latents, mask, masked_image_latents], dim=1)`` = 4 + 1 + 4
channels, where ``mask`` is the binary inpainting mask resized (nearest) to latent size and
``masked_image_latents`` are the VAE latents of the image with the hole set to 0 in [-1, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from furlora.errors import ConfigError
from furlora.models.conditioning import batch_micro_conditioning
from furlora.train.encode import BatchEncoder
from furlora.train.loss import (
    LossTerms,
    diffusion_loss,
    hole_weight_share,
    inpaint_weight_map,
    region_error_sums,
    snr_weights,
    to_latent_size,
    weight_map,
)
from furlora.train.noise import StepDraws
from furlora.train.settings import LossSettings


@dataclass
class PreparedBatch:
    """A micro-batch in model space. Latent size = pixel size / 8.

    ``latents`` float32 [B, 4, h, w]; ``loss_mask`` float32 [B, 1, h, w] (the dataset's merged
    training mask = region weight map, area-averaged, not yet floored); ``region_masks`` float32
    [B, R, h, w]; ``inpaint_mask`` float32 [B, 1, h, w] binary, what the UNet is given (inpaint
    objective only); ``hole`` float32 [B, 1, h, w]: the share of each latent cell's pixels inside
    the hole, what the loss weights use (inpaint objective only); ``masked_latents`` float32
    [B, 4, h, w] (inpaint objective only); ``prompt_embeds`` [B, 77, D]; ``pooled`` [B, P];
    ``time_ids`` float32 [B, 6].
    """

    latents: torch.Tensor
    loss_mask: torch.Tensor
    region_masks: torch.Tensor
    region_names: list[list[str]]
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor
    inpaint_mask: torch.Tensor | None = None
    hole: torch.Tensor | None = None
    masked_latents: torch.Tensor | None = None


def unet_input(
    noisy_latents: torch.Tensor, inpaint_mask: torch.Tensor | None, masked_latents: torch.Tensor | None
) -> torch.Tensor:
    """The UNet's ``sample`` argument: [B, 4, h, w] (base) or [B, 9, h, w] = noisy | mask | masked-image latents."""
    if inpaint_mask is None:
        return noisy_latents
    if masked_latents is None:
        raise ValueError("the inpainting objective needs masked_latents")
    return torch.cat([noisy_latents, inpaint_mask.to(noisy_latents.dtype), masked_latents.to(noisy_latents.dtype)], dim=1)


def _pairs(values: Any) -> list[list[int]]:
    """Collated sizes (list of pairs, or a [B, 2] tensor, or a pair of [B] tensors) -> [[a, b], ...]."""
    if isinstance(values, torch.Tensor):
        return [[int(x) for x in row] for row in values.reshape(-1, 2).tolist()]
    values = list(values)
    if len(values) == 2 and all(isinstance(v, torch.Tensor) and v.ndim == 1 for v in values):
        return [[int(a), int(b)] for a, b in zip(values[0].tolist(), values[1].tolist())]
    return [[int(v[0]), int(v[1])] for v in values]


def _region_names(batch: dict[str, Any], count: int) -> list[list[str]]:
    names = batch.get("region_names")
    if names is None:
        return [[] for _ in range(count)]
    if names and isinstance(names[0], str):  # a single sample's list
        return [list(names) for _ in range(count)]
    return [list(n) for n in names]


def prepare_batch(
    batch: dict[str, Any], draws: StepDraws, encoder: BatchEncoder, inpaint: bool, text_trainable: bool
) -> PreparedBatch:
    """Encode a collated dataset batch (see furlora.data contract) for one micro-step.

    Full-mask samples (``draws.full_mask``) get an all-ones inpainting mask and an all-zero
    masked image, i.e. plain text-to-image.
    """
    device = encoder.device
    pixels = batch["pixel_values"]
    count = pixels.shape[0]
    keys = masked_keys = None
    if "cache_keys" in batch:  # the dataset knows when augmentation makes a sample uncacheable
        keys = [(k or {}).get("latents") for k in batch["cache_keys"]]
        masked_keys = [(k or {}).get("masked_latents") for k in batch["cache_keys"]]
    latents = encoder.latents(pixels, keys=keys)
    size = tuple(latents.shape[-2:])
    names = _region_names(batch, count)
    region_masks = batch.get("region_masks")
    if region_masks is None:
        region_masks = torch.zeros((count, 0, *pixels.shape[-2:]))
    region_masks = to_latent_size(region_masks, size).to(device)
    # Region weights are applied once, by the dataset (data.region_weights): read them from its mask.
    loss_mask = to_latent_size(batch["mask"], size).to(device)
    prompt_embeds, pooled = encoder.text(list(batch["caption"]), trainable=text_trainable)
    time_ids = batch_micro_conditioning(
        _pairs(batch["original_size"]), _pairs(batch["crop_top_left"]), _pairs(batch["target_size"])
    ).to(device)
    prepared = PreparedBatch(latents=latents, loss_mask=loss_mask, region_masks=region_masks, region_names=names,
                             prompt_embeds=prompt_embeds, pooled=pooled, time_ids=time_ids)
    if inpaint:
        full = draws.full_mask.view(-1, 1, 1, 1)
        pixel_mask = torch.where(full, torch.ones_like(batch["inpaint_mask"]), batch["inpaint_mask"].float())
        masked_pixels = torch.where(full, torch.zeros_like(batch["masked_pixel_values"]), batch["masked_pixel_values"])
        # Cached only where the dataset gives a key: a hole from its fixed set (cache mode), or a
        # region hole; a full-mask sample's masked image is all zeros, one entry per size.
        if masked_keys is not None:
            masked_keys = [{"kind": "blank", "size": list(pixels.shape[-2:])} if bool(f) else k for f, k in zip(full.view(-1), masked_keys)]
        prepared.masked_latents = encoder.latents(masked_pixels, cache=masked_keys is not None, keys=masked_keys)
        # What the UNet sees: the binary mask resized nearest, as the SDXL inpaint pipeline does.
        prepared.inpaint_mask = F.interpolate(pixel_mask.float(), size=size, mode="nearest").to(device)
        prepared.hole = to_latent_size(pixel_mask, size).to(device)
    return prepared


def loss_weights(prepared: PreparedBatch, floor_weight: float) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, h, w] of a prepared batch.

    9-channel objective: ``max(1, region weight)`` inside the hole, ``floor_weight`` outside
    (:func:`~furlora.train.loss.inpaint_weight_map`). 4-channel objective: the region weight map,
    at least ``floor_weight``.
    """
    if prepared.hole is not None:
        return inpaint_weight_map(prepared.loss_mask, prepared.hole, floor_weight)
    return weight_map(prepared.loss_mask, floor_weight)


def prediction_target(
    noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet should output: the noise (epsilon) or the velocity (v-prediction)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction_type {prediction_type!r} (use epsilon or v_prediction)")


def predict(unet: Any, prepared: PreparedBatch, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """One UNet forward: [B, 4, h, w] prediction."""
    sample = unet_input(noisy, prepared.inpaint_mask, prepared.masked_latents)
    return unet(
        sample,
        timesteps,
        encoder_hidden_states=prepared.prompt_embeds,
        added_cond_kwargs={"text_embeds": prepared.pooled, "time_ids": prepared.time_ids},
        return_dict=False,
    )[0]


@dataclass
class StepOutput:
    """The result of :func:`training_loss`: loss terms, and figures for logging kept on the device.

    ``regions``: per region name, a tensor (error sum, area) (inside the hole with the 9-channel
    objective); ``hole_share`` [B]: the share of each sample's loss weight inside the hole
    (9-channel objective only). Feed both to :class:`furlora.train.loss_log.LossLog`.
    """

    loss: LossTerms
    regions: dict[str, torch.Tensor]
    hole_share: torch.Tensor | None = None


def training_loss(
    unet: Any,
    prepared: PreparedBatch,
    draws: StepDraws,
    noise_scheduler: Any,
    prediction_type: str,
    loss_settings: LossSettings,
    base_unet: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> StepOutput:
    """Noise the latents, run the UNet, and compute the configured loss.

    ``base_unet``: a context manager factory under which ``unet`` computes the *base* model
    (adapter disabled); needed for prior preservation. ``autocast``: mixed-precision context.
    """
    device = prepared.latents.device
    noise = draws.noise.to(device)
    timesteps = draws.timesteps.to(device)
    latents = prepared.latents
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(noise_scheduler, latents, noise, timesteps, prediction_type)
    with autocast():
        prediction = predict(unet, prepared, noisy, timesteps)
    base_prediction = None
    if loss_settings.prior_preservation_weight > 0:
        if base_unet is None:
            raise ValueError("prior preservation needs a way to disable the adapter (base_unet)")
        with torch.no_grad(), base_unet(), autocast():
            base_prediction = predict(unet, prepared, noisy, timesteps).detach()
    sample_weights = None
    if loss_settings.min_snr_gamma is not None:
        sample_weights = snr_weights(noise_scheduler.alphas_cumprod, timesteps, loss_settings.min_snr_gamma, prediction_type)
    weights = loss_weights(prepared, loss_settings.floor_weight)
    terms = diffusion_loss(
        prediction,
        target,
        weights,
        normalize_by_area=loss_settings.normalize_by_area,
        sample_weights=sample_weights,
        detail_weight=loss_settings.detail_weight,
        base_prediction=base_prediction,
        prior_mask=prepared.loss_mask,
        prior_weight=loss_settings.prior_preservation_weight,
    )
    regions = region_error_sums(prediction, target, prepared.region_masks, prepared.region_names, within=prepared.hole)
    share = hole_weight_share(weights, prepared.hole) if prepared.hole is not None else None
    return StepOutput(loss=terms, regions=regions, hole_share=share)


def resolve_objective(setting: str, unet_in_channels: int, source: Sequence[str] | str = "model") -> bool:
    """True for the 9-channel inpainting objective. Raises ConfigError when setting and UNet disagree."""
    if setting == "auto":
        return unet_in_channels == 9
    if setting == "inpaint" and unet_in_channels != 9:
        raise ConfigError(
            f"train.objective is 'inpaint' but {source} has a {unet_in_channels}-channel UNet; the inpainting "
            "objective needs a 9-channel inpainting UNet (e.g. tiny-sdxl-inpaint or "
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1). Use train.objective=masked for a base model."
        )
    if setting == "masked" and unet_in_channels != 4:
        raise ConfigError(
            f"train.objective is 'masked' but {source} has a {unet_in_channels}-channel inpainting UNet; use "
            "train.objective=inpaint (or auto) with it."
        )
    return setting == "inpaint"
