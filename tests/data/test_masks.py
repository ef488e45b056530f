"""Mask algebra: merge semantics, overlap rule, morphology in pixels, area-averaged downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from furlora.data.masks import (
    bounding_box,
    dilate,
    erode,
    feather,
    grey_fraction,
    merge_regions,
    prepare_mask,
    refine,
    to_unit_float,
)


def _disjoint(h=32, w=32):
    a = np.zeros((h, w), np.float32)
    b = np.zeros((h, w), np.float32)
    c = np.zeros((h, w), np.float32)
    a[2:8, 2:8] = 1
    b[10:20, 4:12] = 1
    c[25:30, 20:31] = 1
    return a, b, c


@pytest.mark.parametrize("mode", ["union", "max", "weighted_sum"])
def test_union_of_three_disjoint_regions_is_their_exact_union(mode):
    a, b, c = _disjoint()
    merged = merge_regions([a, b, c], [1.0, 1.0, 1.0], mode)
    expected = ((a + b + c) > 0).astype(np.float32)
    np.testing.assert_array_equal(merged, expected)
    assert merged.sum() == a.sum() + b.sum() + c.sum()


def test_merge_never_empty_when_any_region_is_set():
    # The failure to beat: a public 3-region merge returned an empty mask half of the time.
    rng = np.random.default_rng(0)
    for _ in range(50):
        masks = [(rng.random((16, 16)) > 0.97).astype(np.float32) for _ in range(3)]
        merged = merge_regions(masks, [1, 1, 1], "union")
        np.testing.assert_array_equal(merged > 0, np.any(np.stack(masks) > 0, axis=0))


def test_weights_are_applied_per_region():
    a, b, c = _disjoint()
    for mode in ("max", "weighted_sum"):
        merged = merge_regions([a, b, c], [1.0, 0.5, 0.25], mode)
        assert np.all(merged[a > 0] == 1.0)
        assert np.all(merged[b > 0] == 0.5)
        assert np.all(merged[c > 0] == 0.25)
        assert np.all(merged[(a + b + c) == 0] == 0.0)
    # union ignores weights (documented): binary union
    np.testing.assert_array_equal(merge_regions([a, b, c], [1.0, 0.5, 0.25], "union"), ((a + b + c) > 0).astype(np.float32))


def test_overlapping_regions_follow_the_documented_rule():
    face = np.zeros((4, 4), np.float32)
    chest = np.zeros((4, 4), np.float32)
    face[:, :3] = 1
    chest[:, 1:] = 1  # overlap in columns 1 and 2
    w = [0.8, 0.5]
    mx = merge_regions([face, chest], w, "max")
    ws = merge_regions([face, chest], w, "weighted_sum")
    un = merge_regions([face, chest], w, "union")
    assert mx[0, 0] == pytest.approx(0.8) and mx[0, 3] == pytest.approx(0.5)
    assert mx[0, 1] == pytest.approx(0.8)  # highest weighted value wins
    assert ws[0, 1] == pytest.approx(1.0)  # 0.8 + 0.5 clipped to 1
    assert un[0, 1] == 1.0 and un[0, 3] == 1.0
    low = merge_regions([face, chest], [0.3, 0.4], "weighted_sum")
    assert low[0, 1] == pytest.approx(0.7)  # sums below 1 are kept


def test_weights_above_one_are_kept_and_cap_weighted_sum():
    # One rule set for data.region_weights: >= 0, a weight above 1 stresses a region (loss weight map).
    face = np.zeros((1, 4), np.float32)
    chest = np.zeros((1, 4), np.float32)
    face[0, :2] = 1
    chest[0, 1:3] = 1  # overlap at column 1
    assert merge_regions([face, chest], [2.0, 0.5], "max").tolist() == [[2.0, 2.0, 0.5, 0.0]]
    # weighted_sum caps at max(1, largest weight): 2 + 0.5 -> 2 (never 1: the weight 2 stays 2)
    assert merge_regions([face, chest], [2.0, 0.5], "weighted_sum").tolist() == [[2.0, 2.0, 0.5, 0.0]]
    assert merge_regions([face, chest], [1.5, 0.25], "weighted_sum").tolist() == [[1.5, 1.5, 0.25, 0.0]]
    assert merge_regions([face, chest], [0.0, 1.0], "max").tolist() == [[0.0, 1.0, 1.0, 0.0]]  # weight 0: left out


def test_merge_rejects_bad_input():
    with pytest.raises(ValueError, match="must be >= 0"):
        merge_regions([np.zeros((2, 2))], [-0.5], "max")
    with pytest.raises(ValueError, match="at least one"):
        merge_regions([], [], "max")
    with pytest.raises(ValueError, match="weights"):
        merge_regions([np.zeros((2, 2))], [1, 1], "max")
    with pytest.raises(ValueError, match="merge mode"):
        merge_regions([np.zeros((2, 2))], [1], "avg")


def test_prepare_binary_grey_and_dtypes():
    raw = np.array([[0, 100, 128, 255]], np.uint8)
    np.testing.assert_array_equal(prepare_mask(raw, "binary", 0.5), [[0, 0, 1, 1]])
    np.testing.assert_allclose(prepare_mask(raw, "grey"), raw / 255.0, rtol=1e-6)
    sixteen = np.array([[0, 65535, 32768]], np.uint16)
    np.testing.assert_allclose(to_unit_float(sixteen), [[0, 1, 32768 / 65535]], rtol=1e-6)
    assert grey_fraction(raw) == pytest.approx(0.5)


def test_dilate_erode_feather_in_pixels():
    m = np.zeros((21, 21), np.float32)
    m[10, 10] = 1
    d = dilate(m, 3)
    assert d[10, 13] == 1 and d[10, 14] == 0 and d[13, 10] == 1 and d[7, 10] == 1
    assert d[13, 13] == 0  # a disk, not a square
    assert d[12, 12] == 1 and d[11, 13] == 0  # the Euclidean disk: 2^2 + 2^2 <= 9 < 1^2 + 3^2
    np.testing.assert_array_equal(erode(d, 3), m)
    block = np.zeros((40, 40), np.float32)
    block[10:30, 10:30] = 1
    f = feather(block, 4)
    assert f[20, 20] == pytest.approx(1.0) and f[0, 0] == 0.0
    assert 0.2 < f[20, 10] < 0.8  # the edge becomes soft
    assert f.min() >= 0 and f.max() <= 1
    np.testing.assert_array_equal(refine(block, 0, 0, 0), block)


def test_bounding_box():
    m = np.zeros((10, 12), np.float32)
    assert bounding_box(m) is None
    m[2:5, 3:9] = 1
    assert bounding_box(m) == (2, 3, 5, 9)
