"""Mask algebra: pure numpy / OpenCV functions on float32 masks.

Conventions used everywhere in furlora:

* A mask is a float32 array ``[H, W]`` with values in ``[0, 1]``; **1 = the region to learn /
  repaint**, 0 = leave alone. Binary masks hold only 0 and 1; grey masks keep weights in between.
  The merged training mask is a weight map: ``[0, 1]`` too unless a region weight
  (``data.region_weights``, >= 0) is above 1.
* Pixel amounts (dilate / erode / feather) are counted in pixels of the image the mask belongs
  to (the training image, after resize and crop), not in latent cells.

Overlapping regions (the documented rule, tested in tests/data/test_masks.py):

* ``union``: the merged value is the max of the *unweighted* region masks, so binary regions
  give exactly their set union; weights are ignored.
* ``max``: the merged value is ``max_r(w_r * m_r)``: where regions overlap the highest weighted
  value wins (face 1.0 over chest 0.5 gives 1.0, never 1.5 and never 0.5).
* ``weighted_sum``: the merged value is ``min(cap, sum_r w_r * m_r)`` with
  ``cap = max(1, max_r w_r)``: overlaps add up, capped at 1 (or at the largest weight when one
  is above 1, so a weight of 2 is not clipped back to 1).

Downsampling to latent size uses area averaging: each latent cell gets the mean of the
``factor x factor`` pixels it covers, so a thin region (a strand of fur, a whisker) keeps a
partial weight instead of vanishing (nearest) or growing to a whole cell (max-pooling).
"""

from __future__ import annotations

from typing import Literal, Sequence

import cv2
import numpy as np

MergeMode = Literal["union", "max", "weighted_sum"]


def to_unit_float(values: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to float32 ``[0, 1]`` (uint8 / 255, uint16 / 65535, bool as 0/1)."""
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    if values.dtype == np.uint16:
        return values.astype(np.float32) / 65535.0
    if np.issubdtype(values.dtype, np.integer):
        # 32-bit integer images (PIL mode "I") usually hold 16-bit data.
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        return np.clip(values.astype(np.float32) / top, 0.0, 1.0)
    return np.clip(values.astype(np.float32), 0.0, 1.0)


def prepare_mask(values: np.ndarray, mode: Literal["binary", "grey"] = "binary", threshold: float = 0.5) -> np.ndarray:
    """Turn a raw mask ``[H, W]`` (any dtype) into float32 ``[0, 1]``.

    ``binary``: ``1`` where ``value >= threshold`` else ``0``. ``grey``: the value itself (a weight).
    """
    unit = to_unit_float(values)
    return (unit >= threshold).astype(np.float32) if mode == "binary" else unit


def grey_fraction(values: np.ndarray, tolerance: float = 1.0 / 255.0) -> float:
    """Fraction of pixels of a ``[0, 1]`` mask that are neither ~0 nor ~1 (grey levels)."""
    unit = to_unit_float(values)
    if unit.size == 0:
        return 0.0
    grey = (unit > tolerance) & (unit < 1.0 - tolerance)
    return float(grey.mean())


def merge_regions(masks: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float], mode: MergeMode = "max") -> np.ndarray:
    """Merge region masks ``R x [H, W]`` into one training mask (a weight map) ``[H, W]`` float32.

    ``masks`` is a list of ``[H, W]`` arrays or one ``[R, H, W]`` array; ``weights`` has one value
    ``>= 0`` per region. See the module docstring for the rule at overlapping pixels. The result
    is in ``[0, max(1, max weight)]``. An empty list is an error (the caller decides what "no
    region" means).
    """
    if len(masks) == 0:
        raise ValueError("merge_regions needs at least one region mask")
    if len(masks) != len(weights):
        raise ValueError(f"{len(masks)} masks but {len(weights)} weights")
    if mode not in ("union", "max", "weighted_sum"):
        raise ValueError(f"merge mode must be union, max or weighted_sum, got {mode!r}")
    if any(not float(w) >= 0.0 for w in weights):
        raise ValueError(f"region weights must be >= 0, got {list(weights)}")
    # Accumulate region by region: no [R, H, W] temporaries (this runs per sample at 1024 px).
    out = np.zeros(np.shape(masks[0]), np.float32)
    for m, w in zip(masks, weights):
        m = np.asarray(m, dtype=np.float32)
        if mode == "union":
            np.maximum(out, m, out=out)
        elif mode == "max":
            np.maximum(out, m * np.float32(w), out=out)
        else:
            out += m * np.float32(w)
    cap = 1.0 if mode == "union" else max(1.0, *(float(w) for w in weights))
    return np.clip(out, 0.0, cap, out=out)


def _disk(px: int) -> np.ndarray:
    """The Euclidean disk of radius ``px`` (offsets with dx^2 + dy^2 <= px^2): growing a binary mask
    with it is exactly "every pixel within ``px`` of the mask" (eval's grow / shrink uses it too)."""
    d = np.arange(-px, px + 1)
    return ((d[:, None] ** 2 + d[None, :] ** 2) <= px * px).astype(np.uint8)


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a ``[H, W]`` mask by ``px`` pixels (a disk-shaped max filter; grey values grow too)."""
    if px <= 0:
        return mask.astype(np.float32, copy=False)
    return cv2.dilate(mask.astype(np.float32, copy=False), _disk(px), borderType=cv2.BORDER_REPLICATE)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """Shrink a ``[H, W]`` mask by ``px`` pixels (a disk-shaped min filter)."""
    if px <= 0:
        return mask.astype(np.float32, copy=False)
    return cv2.erode(mask.astype(np.float32, copy=False), _disk(px), borderType=cv2.BORDER_REPLICATE)


def feather(mask: np.ndarray, px: int) -> np.ndarray:
    """Soften the edges of a ``[H, W]`` mask with a Gaussian blur of radius ``px`` (sigma = px / 2).

    The result stays in ``[0, 1]``; interior pixels farther than ``px`` from the edge keep their value.
    """
    if px <= 0:
        return mask.astype(np.float32, copy=False)
    size = 2 * px + 1
    blurred = cv2.GaussianBlur(mask.astype(np.float32, copy=False), (size, size), sigmaX=px / 2.0, borderType=cv2.BORDER_REPLICATE)
    return np.clip(blurred, 0.0, 1.0)


def refine(mask: np.ndarray, erode_px: int = 0, dilate_px: int = 0, feather_px: int = 0) -> np.ndarray:
    """Erode, then dilate, then feather (each step skipped at 0 px). ``[H, W]`` float32 in, out."""
    return feather(dilate(erode(mask, erode_px), dilate_px), feather_px)


def bounding_box(mask: np.ndarray, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (bottom/right exclusive) of pixels ``> threshold``, or None if none."""
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def coverage(mask: np.ndarray) -> float:
    """Mean value of a ``[0, 1]`` mask: 0 = empty, 1 = covers everything."""
    return float(np.asarray(mask, dtype=np.float32).mean()) if mask.size else 0.0
