"""Loss math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from furlora.train.loss import (
    diffusion_loss,
    hole_weight_share,
    inpaint_weight_map,
    laplacian,
    per_pixel_error,
    region_error_sums,
    snr_weights,
    to_latent_size,
    weight_map,
    weighted_mean,
)
from furlora.train.loss_log import LossLog


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


def test_inpaint_weights_follow_the_hole_not_the_region_mask() -> None:
    # Five latent cells: region weight map (data.region_weights merged) and the hole.
    region = torch.tensor([[[[2.0, 0.5, 0.0, 2.0, 0.0]]]])  # face 2 | chest 0.5 | none | face 2 | none
    hole = torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.5]]]])  # in | in | a random box off the regions | out | half in
    w = inpaint_weight_map(region, hole, floor_weight=0.1)
    # inside: max(1, w); outside: the floor; half in: 0.5 * 1 + 0.5 * 0.1
    assert w.flatten().tolist() == pytest.approx([2.0, 1.0, 1.0, 0.1, 0.55])
    # The region map alone (what the 9-channel objective used before) weighs the box 0.1 and the
    # face outside the hole 2.0:
    assert weight_map(region, 0.1).flatten().tolist() == pytest.approx([2.0, 0.5, 0.1, 2.0, 0.1])
    assert inpaint_weight_map(region, hole, 0.0).flatten().tolist() == pytest.approx([2.0, 1.0, 1.0, 0.0, 0.5])


def test_hole_weight_share() -> None:
    hole = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    weights = torch.tensor([[[[1.0, 2.0, 0.5, 0.5]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    # sample 0: 3 of 4 inside; sample 1: no weight at all -> 0, not nan
    assert hole_weight_share(weights, hole).tolist() == pytest.approx([0.75, 0.0])


def _old_region_error_sums(pred, target, region_masks, region_names):
    """The per-sample float() implementation the device sums replace (reference for equal values)."""
    error = per_pixel_error(pred, target)
    out: dict[str, list[float]] = {}
    for b, names in enumerate(region_names):
        for r, name in enumerate(names[: region_masks.shape[1]]):
            m = region_masks[b, r].float()
            area = float(m.sum())
            if area <= 0:
                continue
            acc = out.setdefault(name, [0.0, 0.0])
            acc[0] += float((error[b, 0] * m).sum())
            acc[1] += area
    return out


def test_region_error_sums_for_logging() -> None:
    pred = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    regions = torch.zeros(1, 2, 1, 3)
    regions[0, 0, 0, 0] = 1.0
    regions[0, 1, 0, 1:] = 1.0
    sums = region_error_sums(pred, torch.zeros_like(pred), regions, [["face", "chest"]])
    assert {k: v.tolist() for k, v in sums.items()} == {"face": [1.0, 1.0], "chest": [13.0, 2.0]}
    # Only inside the hole (the 9-channel objective's logs): the chest pixel with error 9.
    hole = torch.tensor([[[[0.0, 0.0, 1.0]]]])
    within = region_error_sums(pred, torch.zeros_like(pred), regions, [["face", "chest"]], within=hole)
    assert {k: v.tolist() for k, v in within.items()} == {"face": [0.0, 0.0], "chest": [9.0, 1.0]}
    log = LossLog()
    log.add(within)
    assert log.read() == {"loss/region/chest": 9.0}  # no mean for a region with no area


def test_loss_log_equals_the_per_step_floats_and_reads_the_host_once(monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    micro_batches = []
    for k in range(3):  # 3 micro-batches, padded region lists, a region absent in one sample
        pred, target = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
        masks = (torch.rand(2, 3, 4, 4, generator=g) > 0.5).float()
        masks[1, 2] = 0.0
        masks[0, 1] = 0.0 if k == 0 else masks[0, 1]
        names = [["face", "chest", "tail"], ["chest", "face", ""]]
        micro_batches.append((pred, target, masks, names))
    expected: dict[str, list[float]] = {}
    for pred, target, masks, names in micro_batches:
        for name, (err, area) in _old_region_error_sums(pred, target, masks, names).items():
            acc = expected.setdefault(name, [0.0, 0.0])
            acc[0] += err
            acc[1] += area
    reads = {"n": 0}
    log = LossLog()
    real_tolist = torch.Tensor.tolist

    def counting(name, real):
        def wrapper(self, *args, **kwargs):
            reads["n"] += 1
            return real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in ("__float__", "item", "tolist", "cpu", "numpy", "__bool__"):
        counting(name, getattr(torch.Tensor, name))
    for pred, target, masks, names in micro_batches:
        log.add(region_error_sums(pred, target, masks, names), hole_share=torch.tensor([0.25, 0.75]))
    assert reads["n"] == 0  # nothing read on the host between logging steps
    metrics = log.read()
    assert reads["n"] == 1  # one transfer at the logging step
    monkeypatch.setattr(torch.Tensor, "tolist", real_tolist)
    assert set(metrics) == {"loss/region/face", "loss/region/chest", "loss/region/tail", "loss/hole_weight_share"}
    for name, (err, area) in expected.items():
        assert metrics[f"loss/region/{name}"] == pytest.approx(err / area, rel=1e-6)
    assert metrics["loss/hole_weight_share"] == pytest.approx(0.5)
    assert log.read() == {}  # it starts over after a read


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
