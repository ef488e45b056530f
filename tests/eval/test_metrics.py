"""Metrics against hand-made images whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from furlora.eval.blend import blend_weight, composite
from furlora.eval.metrics import (
    box_dilate,
    compute_metrics,
    detail_energy,
    gaussian_blur,
    masked_psnr,
    masked_ssim,
    outside_drift,
    seam_error,
)


def fur(size=96, seed=0):
    """Fine random texture over a gradient, float [H, W, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.3, 0.6, size)[None, :, None]
    return np.clip(ramp + 0.15 * rng.standard_normal((size, size, 3)), 0, 1)


def centre_mask(size=96):
    mask = np.zeros((size, size), bool)
    mask[32:64, 32:64] = True
    return mask


def test_psnr_of_a_known_offset_and_identity():
    image = np.full((32, 32, 3), 0.5)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    shifted = image.copy()
    shifted[mask] += 0.1
    assert masked_psnr(shifted, image, mask) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert masked_psnr(image, image, mask) == float("inf")
    assert np.isnan(masked_psnr(image, image, np.zeros((32, 32), bool)))


def test_ssim_is_one_for_identical_and_lower_for_noise():
    image, mask = fur(), centre_mask()
    assert masked_ssim(image, image, mask) == pytest.approx(1.0)
    assert masked_ssim(fur(seed=1), image, mask) < 0.5


def test_a_blurred_patch_lowers_detail_energy():
    image, mask = fur(), centre_mask()
    blurred = image.copy()
    blurred[mask] = gaussian_blur(image, 2.0)[mask]
    m = compute_metrics(blurred, image, mask, mask)
    assert m["detail_ratio"] < 0.2
    assert m["detail_energy"] < m["detail_energy_input"]
    same = compute_metrics(image, image, mask, mask)
    assert same["detail_ratio"] == pytest.approx(1.0)
    # A different texture of the same statistics keeps its detail.
    other = image.copy()
    other[mask] = fur(seed=3)[mask]
    assert 0.8 < compute_metrics(other, image, mask, mask)["detail_ratio"] < 1.25


def test_a_hard_paste_raises_seam_error_and_a_feathered_one_less():
    image, mask = fur(), centre_mask()
    patch = np.clip(fur(seed=5) + 0.3, 0, 1)  # brighter content: a visible edge if pasted hard
    hard = image.copy()
    hard[mask] = patch[mask]
    soft = composite(image, patch, blend_weight(mask, 0, 10))
    seamless = seam_error(image, mask)
    assert 0.8 < seamless < 1.2
    assert seam_error(hard, mask) > 1.4 * seamless
    assert seam_error(soft, mask) < seam_error(hard, mask)


def test_outside_drift_counts_changed_pixels_outside_the_band_only():
    image, mask = fur(), centre_mask()
    changed = image.copy()
    changed[mask] = 0.0  # inside: allowed
    assert outside_drift(changed, image, mask) == {"drift_max": 0.0, "drift_mean": 0.0, "drift_pixels": 0.0}
    changed[0, 0, 1] += 0.25
    drift = outside_drift(changed, image, mask)
    assert drift["drift_pixels"] == 1.0 and drift["drift_max"] == pytest.approx(0.25)


def test_colour_shift_and_regions():
    image = np.full((64, 64, 3), 0.5)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    tinted = image.copy()
    tinted[mask] += np.array([0.1, 0.0, 0.0])  # a red smudge inside, surroundings unchanged
    face = np.zeros((64, 64), np.float32)
    face[16:32, 16:48] = 1.0
    m = compute_metrics(tinted, image, mask, mask, regions={"face": face, "absent": np.zeros((64, 64))})
    assert m["colour_shift"] == pytest.approx(0.1)
    assert m["region/face/colour_shift"] == pytest.approx(0.1)
    assert m["region/face/mask_pixels"] == 16 * 32
    assert not any(k.startswith("region/absent/") for k in m)
    assert not any(k.startswith("region/face/drift") for k in m)


def test_lab_colour_errors_separate_texture_from_a_colour_cast():
    stripes = np.zeros((32, 32, 3))
    stripes[:, ::2] = 1.0  # black and white fur strands
    swapped = 1.0 - stripes  # same colours, strands moved by one pixel
    mask = np.ones((32, 32), bool)
    m = compute_metrics(swapped, stripes, mask, mask)
    # white is L=100 and black L=0 in Lab: every pixel is 100 off, the mean colour not at all
    assert m["delta_e"] == pytest.approx(100.0, abs=1e-3) and m["colour_error"] == pytest.approx(0.0, abs=1e-3)
    orange = stripes * np.array([1.0, 0.6, 0.2])  # the strands painted orange: a colour cast
    cast = compute_metrics(orange, stripes, mask, mask, regions={"face": mask.astype(np.float32)})
    # only the white strands moved, all by the same Lab vector: the whole error is a colour cast
    assert cast["colour_error"] > 25.0 and cast["colour_error"] == pytest.approx(cast["delta_e"])
    assert cast["region/face/colour_error"] == cast["colour_error"]
    assert compute_metrics(stripes, stripes, mask, mask)["delta_e"] == 0.0


def test_box_dilate_matches_a_square_neighbourhood():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    assert box_dilate(mask, 2).sum() == 25 and box_dilate(mask, 2)[2:7, 2:7].all()


def test_detail_energy_of_a_flat_image_is_zero():
    flat = np.full((16, 16, 3), 0.3)
    assert detail_energy(flat, np.ones((16, 16), bool)) == pytest.approx(0.0, abs=1e-12)
