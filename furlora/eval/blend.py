"""Mask growth, feathering and compositing: the guarantee that nothing outside the band changes.

The blend weight of a pass (float32 [H, W] in [0, 1]) is built from the binary repaint mask:

1. grow (``grow > 0``) or shrink (``grow < 0``) the mask by ``|grow|`` pixels (Euclidean distance);
2. feather outward: with ``d`` the Euclidean distance of a pixel to the grown mask,
   ``w = 1`` inside the grown mask (``d = 0``), ``w = s(1 - d / feather)`` for ``0 < d < feather``
   where ``s(t) = t^2 (3 - 2 t)`` (smoothstep), and ``w = 0`` for ``d >= feather``.

The *band* is ``w > 0``. Compositing writes ``w * generated + (1 - w) * base`` inside the band
and copies ``base`` unchanged outside it, so pixels outside the band are bit-identical to the
input whatever the VAE round trip did to them. Several passes combine to the union weight
``1 - prod(1 - w_k)``.
"""

from __future__ import annotations

import numpy as np

from furlora.data.masks import dilate, erode
from furlora.errors import EvaluationError


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """bool [H, W]: ``mask >= threshold`` (1 = repaint)."""
    return np.asarray(mask) >= threshold


def distance_to(mask: np.ndarray) -> np.ndarray:
    """float32 [H, W]: Euclidean distance of each pixel to the nearest True pixel of ``mask`` (0 on it)."""
    import cv2

    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    # distanceTransform measures the distance to the nearest zero pixel: make the mask the zeros.
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """bool [H, W]: ``mask`` grown by ``pixels`` (> 0) or shrunk by ``-pixels`` (< 0), Euclidean
    (the training masks' disk morphology, :mod:`furlora.data.masks`).

    Shrinking does not eat in from the image border: a mask touching the edge stays at the edge.
    """
    if pixels == 0 or not mask.any():
        return mask.copy()
    grown = dilate(mask, pixels) if pixels > 0 else erode(mask, -pixels)
    return grown > 0.5


def feather_weight(mask: np.ndarray, feather: int) -> np.ndarray:
    """float32 [H, W] in [0, 1]: 1 on ``mask``, smoothstep falloff over ``feather`` px outside, else 0."""
    if feather <= 0 or not mask.any():
        return mask.astype(np.float32)
    t = np.clip(1.0 - distance_to(mask) / np.float32(feather), 0.0, 1.0)
    weight = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    weight[mask] = 1.0
    return weight


def blend_weight(mask: np.ndarray, grow: int, feather: int, what: str = "mask") -> np.ndarray:
    """The blend weight of a pass from a binary mask: grow/shrink, then feather (see module doc)."""
    grown = grow_mask(mask, grow)
    if mask.any() and not grown.any():
        raise EvaluationError(
            f"{what}: shrinking by {-grow} px leaves nothing to repaint; use a smaller shrink (grow closer to 0)"
        )
    return feather_weight(grown, feather)


def composite(base: np.ndarray, generated: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """float32 [H, W, C]: ``w * generated + (1 - w) * base`` where ``w > 0``, ``base`` elsewhere (exactly)."""
    w = weight[..., None] if weight.ndim == base.ndim - 1 else weight
    mixed = w * generated + (1.0 - w) * base
    return np.where(w > 0, mixed, base).astype(base.dtype, copy=False)


def union_weight(weights: list[np.ndarray]) -> np.ndarray:
    """float32 [H, W]: the combined weight of sequential blends, ``1 - prod(1 - w_k)`` (0 outside every band)."""
    keep = np.ones_like(weights[0], dtype=np.float32)
    for w in weights:
        keep *= 1.0 - w
    return (1.0 - keep).astype(np.float32)


def cell_mask(weight: np.ndarray, factor: int) -> np.ndarray:
    """bool [H / factor, W / factor]: latent cells that hold any pixel of the band (``weight > 0``).

    Max pooling (not the pipeline's nearest sampling) so thin parts of the band are never missed.
    ``H`` and ``W`` must be multiples of ``factor``.
    """
    h, w = weight.shape
    if h % factor or w % factor:
        raise ValueError(f"weight {w}x{h} is not a multiple of {factor}")
    return (weight > 0).reshape(h // factor, factor, w // factor, factor).any(axis=(1, 3))


def expand_cells(cells: np.ndarray, factor: int) -> np.ndarray:
    """float32 [H, W]: a cell mask back at pixel size (each cell becomes a factor x factor block)."""
    return np.repeat(np.repeat(cells.astype(np.float32), factor, axis=0), factor, axis=1)


def tile_ramp(height: int, width: int, ramp_top: int, ramp_left: int) -> np.ndarray:
    """float32 [H, W]: 1 inside a tile, rising linearly from ~0 over the first ``ramp_*`` rows / columns.

    Tiles run in raster order; each ramps only along edges shared with tiles already done, so it
    blends into their results and is itself overwritten smoothly by the tiles after it.
    """
    rows = np.ones(height, dtype=np.float32)
    cols = np.ones(width, dtype=np.float32)
    if ramp_top > 0:
        rows[:ramp_top] = (np.arange(ramp_top, dtype=np.float32) + 1.0) / (ramp_top + 1.0)
    if ramp_left > 0:
        cols[:ramp_left] = (np.arange(ramp_left, dtype=np.float32) + 1.0) / (ramp_left + 1.0)
    return rows[:, None] * cols[None, :]
