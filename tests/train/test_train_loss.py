"""Loss math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from furlora.train.loss import (
    diffusion_loss,
    laplacian,
    region_error_sums,
    region_weight_map,
    snr_weights,
    to_latent_size,
    weight_map,
    weighted_mean,
)


def _one_sample() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # 1 sample, 1 channel, 2x2 pixels. Squared errors: [[1, 4], [9, 0]].
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    return pred, target, mask


def test_masked_mean_normalised_by_area() -> None:
    pred, target, mask = _one_sample()
    # sum(w*e) = 1*1 + 0.5*4 = 3; sum(w) = 1.5 -> 2.0
    terms = diffusion_loss(pred, target, weight_map(mask), normalize_by_area=True)
    assert terms.total.item() == pytest.approx(2.0)


def test_masked_mean_without_normalisation() -> None:
    pred, target, mask = _one_sample()
    # mean over 4 pixels of w*e = 3 / 4
    terms = diffusion_loss(pred, target, weight_map(mask), normalize_by_area=False)
    assert terms.total.item() == pytest.approx(0.75)


def test_floor_weight_outside_mask() -> None:
    pred, target, mask = _one_sample()
    w = weight_map(mask, floor_weight=0.25)
    assert w.flatten().tolist() == [1.0, 0.5, 0.25, 0.25]
    # sum(w*e) = 1 + 2 + 0.25*9 + 0 = 5.25; sum(w) = 2.0
    terms = diffusion_loss(pred, target, w, normalize_by_area=True)
    assert terms.total.item() == pytest.approx(2.625)


def test_normalisation_makes_small_and_large_masks_count_equally() -> None:
    error = torch.ones(2, 1, 4, 4)
    small = torch.zeros(1, 1, 4, 4)
    small[..., 0, 0] = 1
    large = torch.ones(1, 1, 4, 4)
    weights = torch.cat([small, large])
    assert weighted_mean(error, weights, True).tolist() == [1.0, 1.0]
    assert weighted_mean(error, weights, False).tolist() == [1 / 16, 1.0]


def test_empty_mask_gives_zero_not_nan() -> None:
    pred, target, _ = _one_sample()
    terms = diffusion_loss(pred, target, torch.zeros(1, 1, 2, 2), normalize_by_area=True)
    assert terms.total.item() == 0.0


def test_channels_are_averaged_and_batch_is_averaged() -> None:
    pred = torch.zeros(2, 2, 1, 1)
    pred[0, 0] = 2.0  # sample 0: errors (4, 0) -> 2
    pred[1, :] = 1.0  # sample 1: errors (1, 1) -> 1
    terms = diffusion_loss(pred, torch.zeros_like(pred), torch.ones(2, 1, 1, 1))
    assert terms.total.item() == pytest.approx(1.5)


def test_region_weights_take_the_maximum_by_name() -> None:
    regions = torch.zeros(1, 3, 1, 3)
    regions[0, 0, 0, :2] = 1.0  # face covers pixels 0, 1
    regions[0, 1, 0, 1:] = 1.0  # chest covers pixels 1, 2
    names = [["face", "chest"]]  # the third region is padding
    w = region_weight_map(regions, names, {"face": 2.0, "chest": 0.5, "tail": 9.0})
    assert w.flatten().tolist() == [2.0, 2.0, 0.5]
    # Unknown region names get weight 0.
    assert region_weight_map(regions, names, {"tail": 1.0}).flatten().tolist() == [0.0, 0.0, 0.0]


def test_region_error_sums_for_logging() -> None:
    pred = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    regions = torch.zeros(1, 2, 1, 3)
    regions[0, 0, 0, 0] = 1.0
    regions[0, 1, 0, 1:] = 1.0
    sums = region_error_sums(pred, torch.zeros_like(pred), regions, [["face", "chest"]])
    assert sums == {"face": (1.0, 1.0), "chest": (13.0, 2.0)}


def test_min_snr_weights() -> None:
    abar = torch.tensor([0.8, 0.5, 0.1])
    t = torch.tensor([0, 1, 2])
    # SNR = 4, 1, 1/9; gamma 2 -> min = 2, 1, 1/9
    eps = snr_weights(abar, t, 2.0, "epsilon")
    assert eps.tolist() == pytest.approx([0.5, 1.0, 1.0])
    v = snr_weights(abar, t, 2.0, "v_prediction")
    assert v.tolist() == pytest.approx([2 / 5, 1 / 2, (1 / 9) / (10 / 9)])


def test_sample_weights_scale_each_sample() -> None:
    pred = torch.ones(2, 1, 1, 1)
    terms = diffusion_loss(pred, torch.zeros_like(pred), torch.ones(2, 1, 1, 1), sample_weights=torch.tensor([0.5, 1.0]))
    assert terms.total.item() == pytest.approx(0.75)


def test_laplacian_is_zero_on_flat_and_large_on_texture() -> None:
    flat = torch.full((1, 1, 4, 4), 3.0)
    assert laplacian(flat).abs().max().item() == 0.0
    spike = torch.zeros(1, 1, 3, 3)
    spike[0, 0, 1, 1] = 1.0
    lap = laplacian(spike)
    assert lap[0, 0, 1, 1].item() == -4.0
    assert lap[0, 0, 0, 1].item() == 1.0


def test_detail_term_adds_weighted_laplacian_energy() -> None:
    pred = torch.zeros(1, 1, 3, 3)
    pred[0, 0, 1, 1] = 1.0
    target = torch.zeros_like(pred)
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0
    # Only the centre counts: denoise = 1, laplacian at centre = -4 -> 16.
    terms = diffusion_loss(pred, target, w, detail_weight=0.5)
    assert terms.denoise.item() == pytest.approx(1.0)
    assert terms.detail.item() == pytest.approx(16.0)
    assert terms.total.item() == pytest.approx(1.0 + 0.5 * 16.0)


def test_prior_preservation_only_outside_the_mask() -> None:
    pred = torch.tensor([[[[1.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    base = torch.tensor([[[[5.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])
    terms = diffusion_loss(
        pred, target, weight_map(mask), base_prediction=base, prior_mask=mask, prior_weight=2.0
    )
    # denoise: only pixel 0 (error 0) -> 0. prior: only pixel 1, (2 - 0)^2 = 4 -> total 2 * 4.
    assert terms.denoise.item() == 0.0
    assert terms.prior.item() == pytest.approx(4.0)
    assert terms.total.item() == pytest.approx(8.0)


def test_total_is_differentiable_and_float32_for_half_inputs() -> None:
    pred = torch.ones(1, 4, 2, 2, dtype=torch.bfloat16, requires_grad=True)
    terms = diffusion_loss(pred, torch.zeros(1, 4, 2, 2), torch.ones(1, 1, 2, 2))
    assert terms.total.dtype == torch.float32
    terms.total.backward()
    assert pred.grad is not None and math.isfinite(pred.grad.float().sum().item())


def test_mask_area_downsampling_keeps_coverage() -> None:
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 0, :8] = 1.0  # one line of 8 pixels in the first 8x8 block
    small = to_latent_size(mask, (2, 2))
    assert small.flatten().tolist() == pytest.approx([8 / 64, 0.0, 0.0, 0.0])
