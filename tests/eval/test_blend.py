"""Mask growth, feathering and compositing: exact values and the outside-band guarantee."""

from __future__ import annotations

import numpy as np
import pytest

from furlora.errors import EvaluationError
from furlora.eval.blend import (
    binarize,
    blend_weight,
    cell_mask,
    composite,
    expand_cells,
    feather_weight,
    grow_mask,
    tile_ramp,
    union_weight,
)


def square(size=41, half=5):
    mask = np.zeros((size, size), bool)
    c = size // 2
    mask[c - half : c + half + 1, c - half : c + half + 1] = True
    return mask


def test_grow_and_shrink_follow_euclidean_distance():
    mask = square()
    grown = grow_mask(mask, 3)
    # Along the centre row the square (11 px wide) grows by 3 px on each side.
    assert grown[20].sum() == 11 + 6
    # A corner grows as a disk: the diagonal point at distance sqrt(8) < 3 is in, sqrt(18) > 3 is out.
    assert grown[20 - 5 - 2, 20 - 5 - 2] and not grown[20 - 5 - 3, 20 - 5 - 3]
    shrunk = grow_mask(mask, -2)
    assert shrunk[20].sum() == 11 - 4
    assert (grow_mask(mask, 0) == mask).all()


def test_shrink_keeps_a_mask_at_the_image_border():
    mask = np.zeros((20, 20), bool)
    mask[:, :6] = True  # touches the left edge
    shrunk = grow_mask(mask, -2)
    assert shrunk[10, 0] and shrunk[10, 3] and not shrunk[10, 4]


def test_feather_is_a_smoothstep_of_the_distance_and_zero_from_feather_on():
    mask = square()
    w = feather_weight(mask, 8)
    assert (w[mask] == 1.0).all()
    row = w[20, 20 + 5 + 1 :]  # distances 1, 2, ... to the right of the square
    for d, value in enumerate(row[:10], start=1):
        t = max(0.0, 1 - d / 8)
        assert value == pytest.approx(t * t * (3 - 2 * t), abs=1e-6)
    assert (row[7:] == 0).all()  # d >= 8
    assert np.all(np.diff(row[:8]) < 0)


def test_blend_weight_errors_when_shrinking_erases_the_mask():
    with pytest.raises(EvaluationError, match=r"passes\[1\].*shrinking by 9 px"):
        blend_weight(square(half=3), grow=-9, feather=0, what="eval.passes[1]")


def test_composite_is_bit_identical_outside_the_band():
    rng = np.random.default_rng(0)
    base = rng.random((41, 41, 3), dtype=np.float32)
    generated = rng.random((41, 41, 3), dtype=np.float32)
    generated[0, 0] = np.nan  # even garbage outside the band must not leak
    w = blend_weight(square(), grow=2, feather=6)
    out = composite(base, generated, w)
    outside = w == 0
    assert np.array_equal(out[outside], base[outside])
    inside = w == 1
    assert np.array_equal(out[inside], generated[inside])
    edge = (w > 0) & (w < 1)
    expected = w[edge][:, None] * generated[edge] + (1 - w[edge][:, None]) * base[edge]
    assert np.allclose(out[edge], expected)


def test_union_weight_of_sequential_blends():
    a = np.array([[0.0, 0.5, 1.0]], np.float32)
    b = np.array([[0.0, 0.5, 0.0]], np.float32)
    assert np.allclose(union_weight([a, b]), [[0.0, 0.75, 1.0]])


def test_cell_mask_catches_thin_lines_and_expands_back():
    w = np.zeros((16, 24), np.float32)
    w[9, 3] = 0.01  # one faint pixel in cell (1, 0)
    cells = cell_mask(w, 8)
    assert cells.shape == (2, 3) and cells.sum() == 1 and cells[1, 0]
    px = expand_cells(cells, 8)
    assert px.shape == (16, 24) and px[8:16, 0:8].all() and px.sum() == 64


def test_binarize_and_tile_ramp():
    assert binarize(np.array([0.2, 0.5, 0.9]), 0.5).tolist() == [False, True, True]
    ramp = tile_ramp(4, 6, ramp_top=0, ramp_left=3)
    assert np.allclose(ramp[0], [0.25, 0.5, 0.75, 1, 1, 1]) and np.allclose(ramp[:, 5], 1)
