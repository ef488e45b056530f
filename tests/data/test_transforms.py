"""Image and masks stay aligned under every geometric transform (masks are drawn from image content)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from data_helpers import scene

from furlora.data.dataset import MaskedDataset
from furlora.data.random_masks import sample_rng
from furlora.data.settings import AugmentSettings
from furlora.data.transforms import GeometryParams, apply_colour, apply_geometry, plan_colour, plan_geometry

COLOURS = {"a": 0, "b": 1, "c": 2}  # region -> the pure channel it is painted in


def _painted(image: np.ndarray, region: str) -> np.ndarray:
    ch = COLOURS[region]
    others = [c for c in range(3) if c != ch]
    return (image[..., ch] > 150) & (image[..., others[0]] < 110) & (image[..., others[1]] < 110)


def _core(x: np.ndarray) -> np.ndarray:
    """Pixels of ``x`` whose 8 neighbours are in ``x`` too (edges blend under interpolation)."""
    return cv2.erode(x.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _assert_aligned(image: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    """Inside each mask the image shows the region's colour, and vice versa (1-px edges excepted)."""
    for region, m in masks.items():
        inside = m > 0.5
        painted = _painted(image, region)
        core_mask, core_paint = _core(inside), _core(painted)
        assert (core_mask & ~painted).sum() <= 0.02 * core_mask.sum() + 2, f"{region}: mask where the image is not painted"
        assert (core_paint & ~inside).sum() <= 0.02 * core_paint.sum() + 2, f"{region}: painted where the mask is 0"


CASES = {
    "hflip": dict(hflip=1.0),
    "vflip": dict(vflip=1.0),
    "rotate": dict(rotate_deg=20.0),
    "random_crop": dict(crop="random"),
    "around_mask_crop": dict(crop="around_mask"),
    "zoom": dict(zoom=(1.5, 2.0), crop="random"),
    "everything": dict(hflip=0.5, vflip=0.5, rotate_deg=15.0, zoom=(1.0, 1.6), crop="random"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("size,bucket", [((96, 128), (64, 64)), ((160, 96), (64, 64)), ((256, 256), (64, 64))])
def test_masks_stay_aligned_under_each_geometric_transform(name, size, bucket):
    image, raw = scene(*size, seed=3)
    names = list(raw)
    settings = AugmentSettings(**{"hflip": 0.0, **CASES[name]})
    for i in range(4):
        params = plan_geometry(size, bucket, settings, sample_rng(0, i, 0))
        out, warped = apply_geometry(image, [raw[n].astype(np.float32) / 255.0 for n in names], params)
        assert out.shape == (*bucket, 3) and all(w.shape == bucket for w in warped)
        _assert_aligned(out, dict(zip(names, warped)))


def test_transforms_really_move_pixels():
    # guard against a vacuous alignment test: flipped output differs from unflipped
    image, raw = scene(64, 64, seed=1)
    base = plan_geometry((64, 64), (64, 64), AugmentSettings(hflip=0.0), sample_rng(0, 0, 0))
    flipped = plan_geometry((64, 64), (64, 64), AugmentSettings(hflip=1.0), sample_rng(0, 0, 0))
    a, _ = apply_geometry(image, [], base)
    b, _ = apply_geometry(image, [], flipped)
    np.testing.assert_array_equal(b, a[:, ::-1])


def test_crop_top_left_reports_the_window_of_the_flipped_image():
    p = GeometryParams(original_size=(100, 200), angle=0.0, resized_size=(64, 128), crop=(0, 10), target_size=(64, 64), hflip=True, vflip=False)
    assert p.crop_top_left == (0, 128 - 10 - 64)
    assert GeometryParams((100, 200), 0.0, (64, 128), (0, 10), (64, 64), False, False).crop_top_left == (0, 10)


def test_around_mask_crop_keeps_the_mask_inside_the_window():
    size = (64, 256)
    mask = np.zeros(size, np.float32)
    mask[20:40, 200:230] = 1
    image = np.zeros((*size, 3), np.uint8)
    settings = AugmentSettings(crop="around_mask", hflip=0.0)
    for i in range(20):
        params = plan_geometry(size, (64, 64), settings, sample_rng(0, i, 0), mask_bbox=(20, 200, 40, 230))
        _, (out,) = apply_geometry(image, [mask], params)
        assert (out > 0.5).sum() == pytest.approx(mask.sum(), rel=0.05)


def test_colour_jitter_changes_only_the_image(maker, make_settings):
    for k in range(3):
        maker.furlora_sample(f"img{k}", seed=k, size=(80, 96))
    geo = {"enabled": True, "hflip": 0.5, "rotate_deg": 10.0, "crop": "random"}
    plain = MaskedDataset(make_settings(augment=geo), maker.root, seed=5)
    jitter = MaskedDataset(make_settings(augment={**geo, "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}), maker.root, seed=5)
    for i in range(len(plain)):
        s1, s2 = plain.sample(i, 2), jitter.sample(i, 2)
        assert np.array_equal(s1["region_masks"].numpy(), s2["region_masks"].numpy())
        assert s1["crop_top_left"] == s2["crop_top_left"]
        assert not np.allclose(s1["pixel_values"].numpy(), s2["pixel_values"].numpy())
    params = plan_colour(AugmentSettings(brightness=0.5), sample_rng(0, 0, 0))
    img = np.full((8, 8, 3), 100, np.uint8)
    assert not np.array_equal(apply_colour(img, params), img)


def test_dataset_samples_stay_aligned_with_full_augmentation(maker, make_settings):
    for k in range(3):
        maker.furlora_sample(f"img{k}", seed=k, size=(96 + 32 * k, 128))
    aug = {"enabled": True, "hflip": 0.5, "vflip": 0.5, "rotate_deg": 15.0, "crop": "random", "zoom": (1.0, 1.5)}
    ds = MaskedDataset(make_settings(resolution=64, augment=aug), maker.root, seed=1)
    for epoch in range(3):
        for i in range(len(ds)):
            s = ds.sample(i, epoch)
            img = ((s["pixel_values"].numpy().transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
            _assert_aligned(img, {n: s["region_masks"][r].numpy() for r, n in enumerate(s["region_names"])})
