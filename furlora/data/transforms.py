"""Geometric augmentation applied identically to the image and every mask; colour to the image only.

Random parameters are drawn first from an explicit generator (:func:`plan_geometry`,
:func:`plan_colour`), then applied through albumentations with those fixed values, so a sample
is a pure function of its generator and the applied parameters are known (they give SDXL's
crop micro-conditioning and the cache keys).

Order: rotate (about the image centre, reflected borders) -> resize so the bucket is covered
(times zoom) -> crop the bucket-sized window -> flips. Masks go through the same warps as
the image, with linear interpolation (binary masks are re-thresholded by the caller).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from furlora.data.settings import AugmentSettings


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


@dataclass(frozen=True)
class GeometryParams:
    """The geometric transform of one sample (all sizes (h, w), offsets (top, left), in pixels)."""

    original_size: tuple[int, int]
    angle: float  # degrees, counter-clockwise
    resized_size: tuple[int, int]  # after the cover resize (and zoom), before cropping
    crop: tuple[int, int]  # window top-left in the resized image, before flips
    target_size: tuple[int, int]  # the bucket
    hflip: bool
    vflip: bool

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """SDXL micro-conditioning crop: the window's top-left in the resized image, flips included."""
        top, left = self.crop
        if self.hflip:
            left = self.resized_size[1] - left - self.target_size[1]
        if self.vflip:
            top = self.resized_size[0] - top - self.target_size[0]
        return top, left


@dataclass(frozen=True)
class ColourParams:
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    seed: int = 0  # orders the four operations (albumentations shuffles them)

    @property
    def identity(self) -> bool:
        return self.brightness == 1.0 and self.contrast == 1.0 and self.saturation == 1.0 and self.hue == 0.0


def rotated_bbox(bbox: tuple[int, int, int, int], size: tuple[int, int], angle: float) -> tuple[float, float, float, float]:
    """Axis-aligned box (top, left, bottom, right) around ``bbox`` after rotating the image by ``angle``."""
    if angle == 0:
        return tuple(float(v) for v in bbox)  # type: ignore[return-value]
    h, w = size
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    top, left, bottom, right = bbox
    corners = np.array([[left, top, 1], [right, top, 1], [left, bottom, 1], [right, bottom, 1]], dtype=np.float64)
    pts = corners @ matrix.T
    return (max(0.0, pts[:, 1].min()), max(0.0, pts[:, 0].min()), min(float(h), pts[:, 1].max()), min(float(w), pts[:, 0].max()))


def _offset(rng: np.random.Generator, slack: int, lo: float | None, hi: float | None, length: int, mode: str) -> int:
    """Crop offset along one axis in [0, slack]."""
    if slack <= 0:
        return 0
    if mode == "center":
        return slack // 2
    if mode == "around_mask" and lo is not None and hi is not None:
        if hi - lo <= length:  # the mask fits: any window that contains it
            a, b = math.ceil(hi - length), math.floor(lo)
        else:  # the mask is bigger than the window: any window inside the mask's extent
            a, b = math.ceil(lo), math.floor(hi - length)
        a, b = max(0, a), min(slack, b)
        if a <= b:
            return int(rng.integers(a, b + 1))
    return int(rng.integers(0, slack + 1))


def plan_geometry(
    size: tuple[int, int],
    bucket: tuple[int, int],
    settings: AugmentSettings,
    rng: np.random.Generator,
    mask_bbox: tuple[int, int, int, int] | None = None,
) -> GeometryParams:
    """Draw the transform of one sample: ``size`` = image (h, w), ``bucket`` = output (h, w).

    ``mask_bbox`` (top, left, bottom, right) of the merged mask in the original image steers the
    ``around_mask`` crop. With augmentation disabled: no rotation, no zoom, centre crop, no flips.
    """
    on = settings.enabled
    angle = float(rng.uniform(-settings.rotate_deg, settings.rotate_deg)) if on and settings.rotate_deg > 0 else 0.0
    zoom = float(rng.uniform(*settings.zoom)) if on and settings.zoom[1] > settings.zoom[0] else (settings.zoom[0] if on else 1.0)
    h, w = size
    bh, bw = bucket
    scale = max(bh / h, bw / w) * zoom
    rh, rw = max(bh, int(round(h * scale))), max(bw, int(round(w * scale)))
    box: tuple[float | None, ...] = (None, None, None, None)
    if mask_bbox is not None:
        t, l, b, r = rotated_bbox(mask_bbox, size, angle)
        box = (t * rh / h, l * rw / w, b * rh / h, r * rw / w)
    mode = settings.crop if on else "center"
    top = _offset(rng, rh - bh, box[0], box[2], bh, mode)
    left = _offset(rng, rw - bw, box[1], box[3], bw, mode)
    hflip = bool(on and settings.hflip > 0 and rng.random() < settings.hflip)
    vflip = bool(on and settings.vflip > 0 and rng.random() < settings.vflip)
    return GeometryParams(original_size=(h, w), angle=angle, resized_size=(rh, rw), crop=(top, left), target_size=(bh, bw), hflip=hflip, vflip=vflip)


def plan_colour(settings: AugmentSettings, rng: np.random.Generator) -> ColourParams:
    """Draw colour-jitter factors (identity when augmentation or every jitter amount is off)."""
    if not settings.enabled or not (settings.brightness or settings.contrast or settings.saturation or settings.hue):
        return ColourParams()
    return ColourParams(
        brightness=float(rng.uniform(1 - settings.brightness, 1 + settings.brightness)),
        contrast=float(rng.uniform(1 - settings.contrast, 1 + settings.contrast)),
        saturation=float(rng.uniform(1 - settings.saturation, 1 + settings.saturation)),
        hue=float(rng.uniform(-settings.hue, settings.hue)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def apply_geometry(image: np.ndarray, masks: list[np.ndarray], params: GeometryParams) -> tuple[np.ndarray, list[np.ndarray]]:
    """Warp uint8 ``[H, W, 3]`` and float32 masks ``[H, W]`` identically -> bucket-sized arrays."""
    A = _albumentations()
    rh, rw = params.resized_size
    top, left = params.crop
    bh, bw = params.target_size
    shrinking = rh < params.original_size[0]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    ops: list[Any] = []
    if params.angle:
        ops.append(A.Rotate(limit=(params.angle, params.angle), border_mode=cv2.BORDER_REFLECT_101, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_LINEAR, p=1.0))
    if (rh, rw) != params.original_size:
        ops.append(A.Resize(rh, rw, interpolation=interp, mask_interpolation=interp, p=1.0))
    if (rh, rw) != (bh, bw):
        ops.append(A.Crop(x_min=left, y_min=top, x_max=left + bw, y_max=top + bh, p=1.0))
    if params.hflip:
        ops.append(A.HorizontalFlip(p=1.0))
    if params.vflip:
        ops.append(A.VerticalFlip(p=1.0))
    if not ops:
        return image, list(masks)
    pipeline = A.Compose(ops, p=1.0)
    if not masks:
        return pipeline(image=image)["image"], []
    # All masks as the channels of one [H, W, R] target: one warp per op instead of one per mask.
    out = pipeline(image=image, mask=np.stack([np.asarray(m, dtype=np.float32) for m in masks], axis=-1))
    warped = out["mask"].reshape(*out["image"].shape[:2], len(masks))
    return out["image"], [warped[..., r] for r in range(len(masks))]


def apply_colour(image: np.ndarray, params: ColourParams) -> np.ndarray:
    """Colour-jitter a uint8 ``[H, W, 3]`` image (masks never pass through here)."""
    if params.identity:
        return image
    A = _albumentations()
    jitter = A.ColorJitter(
        brightness=(params.brightness, params.brightness), contrast=(params.contrast, params.contrast),
        saturation=(params.saturation, params.saturation), hue=(params.hue, params.hue), p=1.0,
    )
    return A.Compose([jitter], p=1.0, seed=params.seed)(image=image)["image"]
