"""Masked diffusion loss math: pure functions of tensors, no model, no randomness.

Shapes: predictions and targets are float [B, C, h, w] (latent space); masks and weight maps
are float [B, 1, h, w] with 1 = the region to learn; per-sample losses are float32 [B].
Everything is computed in float32 whatever the prediction dtype (mixed precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-8


def to_latent_size(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average a pixel mask [B, K, H, W] to latent size [B, K, h, w].

    Area averaging keeps grey levels and fractional coverage of thin structures (a hair line
    covering 1/8 of an 8x8 block gives weight 0.125 instead of vanishing or becoming 1).
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.float()
    return F.interpolate(mask.float(), size=size, mode="area")


def weight_map(mask: torch.Tensor, floor_weight: float = 0.0) -> torch.Tensor:
    """Per-pixel loss weights: ``max(mask, floor_weight)``; [B, 1, h, w] -> [B, 1, h, w]."""
    return mask.float().clamp_min(floor_weight)


def inpaint_weight_map(region_weights: torch.Tensor, hole: torch.Tensor, floor_weight: float = 0.0) -> torch.Tensor:
    """Per-pixel loss weights of the 9-channel inpainting objective; [B, 1, h, w] -> [B, 1, h, w].

    ``region_weights``: the merged training mask (data.region_weights applied) at latent size;
    ``hole``: the share of each latent cell's pixels inside the inpainting hole (0..1).
    Inside the hole the weight is ``max(1, region weight)``: every hole pixel is content the UNet
    must make up, and a region weighted above 1 counts more. Outside it is ``floor_weight``: the
    UNet sees those pixels through the masked-image latents, so the region mask gives them no
    extra weight. A cell partly in the hole mixes the two by its share.
    """
    hole = hole.float().clamp(0.0, 1.0)
    return hole * region_weights.float().clamp_min(1.0) + (1.0 - hole) * floor_weight


def hole_weight_share(weights: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Share of each sample's loss weight that lies inside the hole: [B, 1, h, w] x2 -> float32 [B].

    1 = the loss is all inside the hole; a sample without any weight gives 0.
    """
    return weighted_mean(hole.float(), weights.float(), normalize_by_area=True)


def per_pixel_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over channels: [B, C, h, w] -> float32 [B, 1, h, w]."""
    return (prediction.float() - target.float()).pow(2).mean(dim=1, keepdim=True)


def weighted_mean(error: torch.Tensor, weights: torch.Tensor, normalize_by_area: bool) -> torch.Tensor:
    """Per-sample weighted error: [B, 1, h, w] x [B, 1, h, w] -> [B].

    ``normalize_by_area``: sum(w * e) / sum(w) (a sample with an empty weight map gives 0);
    otherwise the plain mean of w * e over all pixels.
    """
    weighted = (error * weights).flatten(1)
    if normalize_by_area:
        return weighted.sum(dim=1) / weights.flatten(1).sum(dim=1).clamp_min(_EPS)
    return weighted.mean(dim=1)


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """3x3 Laplacian of each channel (replicate padding): [B, C, h, w] -> [B, C, h, w].

    A high-pass filter: flat areas give 0, fine texture (fur strands) gives large values.
    """
    channels = x.shape[1]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
    kernel = kernel.expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)


def snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma weights [B] (Hang et al. 2023).

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t). Epsilon prediction: min(SNR, gamma) / SNR;
    v-prediction: min(SNR, gamma) / (SNR + 1).
    """
    abar = alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    snr = abar / (1.0 - abar)
    clipped = snr.clamp_max(gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


@dataclass
class LossTerms:
    """The loss of one micro-batch and its parts (all detached except ``total``)."""

    total: torch.Tensor
    """Scalar float32, differentiable: what backward runs on."""
    denoise: torch.Tensor
    """Scalar: the weighted masked denoising term."""
    detail: torch.Tensor | None = None
    prior: torch.Tensor | None = None


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    normalize_by_area: bool = True,
    sample_weights: torch.Tensor | None = None,
    detail_weight: float = 0.0,
    base_prediction: torch.Tensor | None = None,
    prior_mask: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> LossTerms:
    """Combine the loss terms of one micro-batch.

    ``weights`` [B, 1, h, w]: per-pixel weights (already floored / region-weighted).
    ``sample_weights`` [B]: e.g. min-SNR weights (None = 1).
    ``detail_weight``: adds ``detail_weight * weighted_mean(laplacian(pred - target)^2)``.
    ``base_prediction`` / ``prior_mask`` / ``prior_weight``: prior preservation, adds
    ``prior_weight * weighted_mean((pred - base_pred)^2, 1 - prior_mask)``.
    The total is the batch mean of ``sample_weight * (denoise + detail + prior)``.
    """
    per_sample = weighted_mean(per_pixel_error(prediction, target), weights, normalize_by_area)
    denoise = per_sample
    detail = prior = None
    if detail_weight > 0:
        diff = prediction.float() - target.float()
        detail = weighted_mean(laplacian(diff).pow(2).mean(dim=1, keepdim=True), weights, normalize_by_area)
        per_sample = per_sample + detail_weight * detail
    if prior_weight > 0:
        if base_prediction is None or prior_mask is None:
            raise ValueError("prior preservation needs base_prediction and prior_mask")
        outside = 1.0 - prior_mask.float().clamp(0.0, 1.0)
        prior = weighted_mean(per_pixel_error(prediction, base_prediction), outside, normalize_by_area)
        per_sample = per_sample + prior_weight * prior
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.float()
    return LossTerms(
        total=per_sample.mean(),
        denoise=denoise.detach().mean(),
        detail=None if detail is None else detail.detach().mean(),
        prior=None if prior is None else prior.detach().mean(),
    )


def region_error_sums(
    prediction: torch.Tensor,
    target: torch.Tensor,
    region_masks: torch.Tensor,
    region_names: Sequence[Sequence[str]],
    within: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per region name: a float32 tensor [2] = (sum over the region of the squared error, region area).

    ``region_masks`` [B, R, h, w] at latent size; unnamed (padding) regions are left out.
    ``within`` [B, 1, h, w] (e.g. the inpainting hole): count only that part of each region.
    The tensors stay on the prediction's device (no host sync: logging reads them later); the
    mean error of a region over any number of micro-batches is sum(first) / sum(second), and a
    region whose summed area is 0 has no mean.
    """
    error = per_pixel_error(prediction.detach(), target.detach())  # [B, 1, h, w]
    masks = region_masks.detach().float()
    if within is not None:
        masks = masks * within.detach().float()
    pairs = torch.stack([(error * masks).flatten(2).sum(dim=2), masks.flatten(2).sum(dim=2)], dim=2)  # [B, R, 2]
    where: dict[str, tuple[list[int], list[int]]] = {}
    for b, names in enumerate(region_names):
        for r, name in enumerate(names[: masks.shape[1]]):
            if name:
                rows, cols = where.setdefault(name, ([], []))
                rows.append(b)
                cols.append(r)
    return {name: pairs[rows, cols].sum(dim=0) for name, (rows, cols) in where.items()}
