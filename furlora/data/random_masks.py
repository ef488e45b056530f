"""Random inpainting holes for the 9-channel objective, recreatable from (seed, epoch, index).

Every draw comes from an explicit ``numpy.random.Generator``; :func:`sample_rng` derives it from
the integers that identify a sample, so sample 17 of epoch 3 is the same on every run, process
and worker, whatever was drawn before it. Masks are float32 ``[H, W]`` in {0, 1}, 1 = hole.
"""

from __future__ import annotations

import cv2
import numpy as np

from furlora.data.masks import dilate, erode
from furlora.data.settings import InpaintMaskSettings

KINDS: tuple[str, ...] = ("region", "region_grown", "region_shrunk", "strokes", "boxes", "ellipses", "full")


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """A generator that is a pure function of its arguments (a SeedSequence over all four).

    ``stream`` separates independent uses for one sample (0 = augmentation, 1 = inpaint mask ...).
    Negative values are not allowed by SeedSequence, so they are rejected here with a clear error.
    """
    parts = [seed, epoch, index, stream]
    if any(int(p) < 0 for p in parts):
        raise ValueError(f"seed, epoch, index and stream must be >= 0, got {parts}")
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def choose_kind(settings: InpaintMaskSettings, rng: np.random.Generator) -> str:
    """Draw one of :data:`KINDS` with the relative weights of ``settings``."""
    weights = np.array([getattr(settings, k) for k in KINDS], dtype=np.float64)
    return KINDS[int(rng.choice(len(KINDS), p=weights / weights.sum()))]


def strokes(shape: tuple[int, int], rng: np.random.Generator, count: tuple[int, int] = (1, 4)) -> np.ndarray:
    """Thick random brush strokes (polylines of 3-8 points, width 2-10 % of the short side)."""
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    short = min(h, w)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        n = int(rng.integers(3, 9))
        start = rng.uniform([0, 0], [w, h])
        steps = rng.normal(0.0, short * 0.15, size=(n - 1, 2))
        pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
        width = max(1, int(rng.uniform(0.02, 0.10) * short))
        cv2.polylines(out, [np.round(pts).astype(np.int32)], False, 1, thickness=width, lineType=cv2.LINE_8)
    return out.astype(np.float32)


def boxes(shape: tuple[int, int], rng: np.random.Generator, count: tuple[int, int] = (1, 3)) -> np.ndarray:
    """Random axis-aligned rectangles, each 10-50 % of the image side."""
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        bh, bw = int(rng.uniform(0.1, 0.5) * h), int(rng.uniform(0.1, 0.5) * w)
        top, left = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
        out[top : top + max(1, bh), left : left + max(1, bw)] = 1
    return out.astype(np.float32)


def ellipses(shape: tuple[int, int], rng: np.random.Generator, count: tuple[int, int] = (1, 3)) -> np.ndarray:
    """Random rotated ellipses, semi-axes 5-25 % of the image side."""
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (max(1, int(rng.uniform(0.05, 0.25) * w)), max(1, int(rng.uniform(0.05, 0.25) * h)))
        cv2.ellipse(out, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return out.astype(np.float32)


def make_inpaint_mask(
    settings: InpaintMaskSettings, region_mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """The binary hole ``[H, W]`` float32 {0,1} for one sample, and the kind that was drawn.

    ``region_mask`` is the merged training mask (any value > 0 counts as inside). Region-based
    kinds fall back to random strokes when the region is empty in this crop (logged by the
    caller through the returned kind, ``"strokes(fallback)"``), because an empty hole would
    teach the inpainting UNet nothing.
    """
    shape = region_mask.shape
    kind = choose_kind(settings, rng)
    binary = (region_mask > 0).astype(np.float32)
    if kind.startswith("region") and not binary.any():
        return strokes(shape, rng), "strokes(fallback)"
    if kind == "region":
        hole = binary
    elif kind == "region_grown":
        hole = dilate(binary, int(rng.integers(settings.grow_px[0], settings.grow_px[1] + 1)))
    elif kind == "region_shrunk":
        hole = erode(binary, int(rng.integers(settings.shrink_px[0], settings.shrink_px[1] + 1)))
        if not hole.any():  # a thin region can vanish entirely; keep the region itself then
            hole = binary
    elif kind == "strokes":
        hole = strokes(shape, rng)
    elif kind == "boxes":
        hole = boxes(shape, rng)
    elif kind == "ellipses":
        hole = ellipses(shape, rng)
    else:  # full
        hole = np.ones(shape, np.float32)
    return (hole > 0.5).astype(np.float32), kind


def is_deterministic(settings: InpaintMaskSettings) -> bool:
    """True when the hole is always the region mask itself (so masked latents can be cached)."""
    others = settings.region_grown + settings.region_shrunk + settings.strokes + settings.boxes + settings.ellipses + settings.full
    return settings.region > 0 and others == 0
