"""Where a pass runs: the whole image, a crop around the mask, or tiles, and the mapping between
that region of the full image and the working canvas the model sees.

A :class:`Region` is a box of the full image plus the working size (multiples of 8). The whole
image and tiles are reflect-padded to multiples of 8 (no resampling, so unrepainted detail is
not blurred); a crop is resized to the working resolution and the result resized back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from furlora.data.masks import bounding_box
from furlora.errors import EvaluationError


def round8(value: float) -> int:
    """Nearest multiple of 8, at least 8."""
    return max(8, int(round(value / 8.0)) * 8)


def ceil8(value: int) -> int:
    """Smallest multiple of 8 >= value."""
    return (value + 7) // 8 * 8


@dataclass(frozen=True)
class Region:
    """A box (top, left, bottom, right; bottom/right exclusive) of the full image and its working size."""

    top: int
    left: int
    bottom: int
    right: int
    work_height: int
    work_width: int
    resize: bool
    """True: the box is resized to the working size (crop); False: it is padded (whole image / tile)."""

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.top, self.left, self.bottom, self.right)

    def cut(self, array: np.ndarray) -> np.ndarray:
        """The box's part of a full-size [H, W, ...] array."""
        return array[self.top : self.bottom, self.left : self.right]

    def to_work(self, patch: np.ndarray, *, is_weight: bool = False) -> np.ndarray:
        """A [h, w(, C)] patch of this box at the working size (float32).

        Images are reflect-padded or resized (area when shrinking, cubic when enlarging, clipped
        to [0, 1]); weights are zero-padded or resized linearly.
        """
        import cv2

        patch = np.ascontiguousarray(patch, dtype=np.float32)
        if not self.resize:
            pad_h, pad_w = self.work_height - self.height, self.work_width - self.width
            if pad_h == 0 and pad_w == 0:
                return patch
            pads = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (patch.ndim - 2)
            if is_weight:
                return np.pad(patch, pads, mode="constant")
            return np.pad(patch, pads, mode="reflect" if min(patch.shape[:2]) > 1 else "edge")
        shrink = self.work_height * self.work_width < self.height * self.width
        interp = cv2.INTER_AREA if shrink else (cv2.INTER_LINEAR if is_weight else cv2.INTER_CUBIC)
        out = cv2.resize(patch, (self.work_width, self.work_height), interpolation=interp)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def from_work(self, patch: np.ndarray) -> np.ndarray:
        """A working-size [H', W', C] float32 image back at the box's size."""
        import cv2

        if not self.resize:
            return patch[: self.height, : self.width]
        shrink = self.height * self.width < self.work_height * self.work_width
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        out = cv2.resize(np.ascontiguousarray(patch), (self.width, self.height), interpolation=interp)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def full_region(height: int, width: int) -> Region:
    """The whole image, padded to multiples of 8."""
    return Region(0, 0, height, width, ceil8(height), ceil8(width), resize=False)


def crop_region(weight: np.ndarray, padding: int, resolution: int) -> Region:
    """The box around the band (``weight > 0``) plus ``padding``, clipped to the image, at a working
    size whose long side is ``resolution`` (aspect kept, each side a multiple of 8)."""
    height, width = weight.shape
    box = bounding_box(weight)
    if box is None:
        raise EvaluationError("the mask is empty: nothing to crop to")
    top, left, bottom, right = box
    top, left = max(0, top - padding), max(0, left - padding)
    bottom, right = min(height, bottom + padding), min(width, right + padding)
    scale = resolution / max(bottom - top, right - left)
    return Region(
        top, left, bottom, right,
        work_height=round8((bottom - top) * scale), work_width=round8((right - left) * scale), resize=True,
    )


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(8, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the border
    return sorted(set(starts))


def tile_regions(weight: np.ndarray, tile: int, overlap: int) -> list[tuple[Region, int, int]]:
    """Tiles (raster order) of side ``tile`` overlapping by ``overlap`` that touch the band.

    Returns (region, ramp_top, ramp_left): how many rows / columns of the tile overlap tiles
    processed before it (the width of its blend ramp on that side).
    """
    height, width = weight.shape
    band = weight > 0
    tiles: list[tuple[Region, int, int]] = []
    done: list[Region] = []
    for top in _starts(height, tile, overlap):
        for left in _starts(width, tile, overlap):
            bottom, right = min(height, top + tile), min(width, left + tile)
            if not band[top:bottom, left:right].any():
                continue
            region = Region(top, left, bottom, right, ceil8(bottom - top), ceil8(right - left), resize=False)
            ramp_top = max((d.bottom - top for d in done if d.bottom > top and d.top < top
                            and d.left < right and d.right > left), default=0)
            ramp_left = max((d.right - left for d in done if d.right > left and d.left < left
                             and d.top < bottom and d.bottom > top), default=0)
            tiles.append((region, ramp_top, ramp_left))
            done.append(region)
    return tiles
