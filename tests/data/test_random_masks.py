"""Random inpainting holes: recreatable from (seed, epoch, index), every kind sensible."""

from __future__ import annotations

import numpy as np
import pytest

from furlora.data.masks import dilate
from furlora.data.random_masks import KINDS, is_deterministic, make_inpaint_mask, sample_rng
from furlora.data.settings import InpaintMaskSettings


def _only(kind: str, **kw) -> InpaintMaskSettings:
    weights = {k: 0.0 for k in KINDS}
    weights[kind] = 1.0
    return InpaintMaskSettings(**weights, **kw)


def _region():
    m = np.zeros((64, 64), np.float32)
    m[20:40, 24:44] = 1
    return m


def test_same_seed_epoch_index_gives_the_same_mask_whatever_came_before():
    s = InpaintMaskSettings(region=1, strokes=1, boxes=1, ellipses=1)
    first = make_inpaint_mask(s, _region(), sample_rng(7, 3, 11, 1))
    for i in range(5):  # unrelated draws in between
        make_inpaint_mask(s, _region(), sample_rng(7, 3, i, 1))
    again = make_inpaint_mask(s, _region(), sample_rng(7, 3, 11, 1))
    assert first[1] == again[1]
    np.testing.assert_array_equal(first[0], again[0])
    others = {make_inpaint_mask(s, _region(), sample_rng(7, e, 11, 1))[0].tobytes() for e in range(8)}
    assert len(others) > 1  # epochs differ


@pytest.mark.parametrize("kind", ["strokes", "boxes", "ellipses"])
def test_random_shapes_are_binary_and_not_empty(kind):
    for i in range(10):
        hole, got = make_inpaint_mask(_only(kind), _region(), sample_rng(0, 0, i))
        assert got == kind
        assert set(np.unique(hole)) <= {0.0, 1.0}
        assert hole.any() and hole.dtype == np.float32 and hole.shape == (64, 64)


def test_region_kinds():
    region = _region()
    hole, kind = make_inpaint_mask(_only("region"), region, sample_rng(0, 0, 0))
    assert kind == "region"
    np.testing.assert_array_equal(hole, region)
    grown, kind = make_inpaint_mask(_only("region_grown", grow_px=(5, 5)), region, sample_rng(0, 0, 0))
    np.testing.assert_array_equal(grown, dilate(region, 5))
    shrunk, _ = make_inpaint_mask(_only("region_shrunk", shrink_px=(3, 3)), region, sample_rng(0, 0, 0))
    assert shrunk.sum() < region.sum() and np.all(region[shrunk > 0] == 1)
    full, _ = make_inpaint_mask(_only("full"), region, sample_rng(0, 0, 0))
    assert full.all()
    soft = region * 0.3  # a weighted merged mask still gives a binary hole
    hole, _ = make_inpaint_mask(_only("region"), soft, sample_rng(0, 0, 0))
    np.testing.assert_array_equal(hole, region)


def test_empty_region_falls_back_to_strokes():
    hole, kind = make_inpaint_mask(_only("region"), np.zeros((32, 32), np.float32), sample_rng(0, 0, 0))
    assert kind == "strokes(fallback)" and hole.any()


def test_settings_and_determinism_flag():
    assert is_deterministic(_only("region"))
    assert not is_deterministic(InpaintMaskSettings())
    with pytest.raises(ValueError, match="all inpaint mask weights are 0"):
        InpaintMaskSettings(**{k: 0.0 for k in KINDS})
    with pytest.raises(ValueError, match=">= 0"):
        sample_rng(-1, 0, 0)
