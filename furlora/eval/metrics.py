"""Fur-aware inpainting metrics: pure numpy functions of float images in [0, 1].

Images are float [H, W, 3] (or [H, W]) in [0, 1]; masks are [H, W], True / >= 0.5 = repainted.
What each metric answers:

- ``masked_psnr`` / ``masked_ssim``: how close the repaint is to the original inside the mask
  (when the input holds a meaningful original there).
- ``outside_drift``: did anything change outside the blend band? Must be exactly 0.
- ``seam_error``: is there a gradient discontinuity along the mask border? Mean gradient
  magnitude on a thin seam line divided by the mean gradient magnitude just beside it on both
  sides; about 1 for a seamless result, larger for a visible edge (a hard paste).
- ``detail_ratio``: high-frequency energy (luma minus its Gaussian blur, squared) inside the
  mask relative to the original: below 1 means fur detail was smoothed away.
- ``colour_contrast`` / ``colour_shift``: mean colour inside the mask vs the ring around the band,
  and how much that contrast moved relative to the original (colour smudges).
- ``delta_e`` / ``colour_error``: colour against the original in CIE Lab (opencv's sRGB D65
  conversion), as CIE76 distances: the mean per-pixel distance (colour and texture together),
  and the distance between the mean colours (a colour cast, e.g. orange painted on grey fur;
  about 2.3 is a just-noticeable difference).
"""

from __future__ import annotations

import math

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def luma(image: np.ndarray) -> np.ndarray:
    """float64 [H, W]: ITU-R 601 luma of an RGB image (a 2-D image is returned as float64)."""
    image = np.asarray(image, dtype=np.float64)
    return image if image.ndim == 2 else image[..., :3] @ LUMA


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (radius 3 sigma, reflected borders) of [H, W] or [H, W, C] float64."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, weight in enumerate(kernel):
            acc += weight * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def box_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool [H, W]: ``mask`` dilated by a (2 radius + 1)^2 square (nothing comes in from beyond the border)."""
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0


def border(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: mask pixels with a 4-neighbour outside the mask (the inner boundary line)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def ring(band: np.ndarray, width: int) -> np.ndarray:
    """bool [H, W]: pixels within ``width`` px (square neighbourhood) outside ``band``."""
    return box_dilate(band, width) & ~np.asarray(band, dtype=bool)


def _mean_over(values: np.ndarray, where: np.ndarray) -> float:
    return float(values[where].mean()) if where.any() else float("nan")


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values (nan when there is none): how reports average metrics."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def masked_psnr(output: np.ndarray, reference: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB over the mask's pixels (all channels); inf when identical, nan for an empty mask."""
    where = np.asarray(mask, dtype=bool)
    if not where.any():
        return float("nan")
    diff = np.asarray(output, dtype=np.float64)[where] - np.asarray(reference, dtype=np.float64)[where]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def masked_ssim(output: np.ndarray, reference: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM of the luma over the mask's pixels (Gaussian window, K1 = 0.01, K2 = 0.03, range 1)."""
    where = np.asarray(mask, dtype=bool)
    if not where.any():
        return float("nan")
    a, b = luma(output), luma(reference)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
    var_a = gaussian_blur(a * a, sigma) - mu_a**2
    var_b = gaussian_blur(b * b, sigma) - mu_b**2
    cov = gaussian_blur(a * b, sigma) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map[where].mean())


def outside_drift(output: np.ndarray, reference: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """Change outside the blend band: ``drift_max`` / ``drift_mean`` (abs, [0, 1] units), ``drift_pixels``."""
    outside = ~np.asarray(band, dtype=bool)
    if not outside.any():
        return {"drift_max": float("nan"), "drift_mean": float("nan"), "drift_pixels": 0.0}
    diff = np.abs(np.asarray(output, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    values = diff[outside]
    return {
        "drift_max": float(values.max()),
        "drift_mean": float(values.mean()),
        "drift_pixels": float(np.count_nonzero(values)),
    }


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """float64 [H, W]: |grad| of the luma (central differences)."""
    gy, gx = np.gradient(luma(image))
    return np.hypot(gx, gy)


def seam_error(image: np.ndarray, mask: np.ndarray, width: int = 2) -> float:
    """Mean |grad| on the seam (within ``width`` px of the mask border) over the mean |grad| beside it.

    "Beside" is the zone from ``width`` to ``4 width`` px from the border, inside and outside.
    About 1 when the border is invisible; a hard paste of different content gives a large value.
    nan if the mask is empty or covers the whole image.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        return float("nan")
    line = border(mask) | border(~mask)
    seam = box_dilate(line, width - 1) if width > 1 else line
    beside = box_dilate(line, 4 * width) & ~box_dilate(line, width)
    grad = gradient_magnitude(image)
    on_seam = _mean_over(grad, seam)
    near = _mean_over(grad, beside)
    return on_seam / max(near, 1e-8)


def detail_energy(image: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Mean squared high-frequency luma (luma - Gaussian blur of luma) over the mask."""
    y = luma(image)
    high = y - gaussian_blur(y, sigma)
    return _mean_over(high**2, np.asarray(mask, dtype=bool))


def colour_contrast(image: np.ndarray, inside: np.ndarray, around: np.ndarray) -> np.ndarray:
    """Per-channel mean colour inside the mask minus that of the surrounding ring ([0, 1] units; nan if either is empty)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[..., None]
    inside, around = np.asarray(inside, dtype=bool), np.asarray(around, dtype=bool)
    means = [image[where].mean(axis=0) if where.any() else np.full(image.shape[2], np.nan) for where in (inside, around)]
    return means[0] - means[1]


def to_lab(image: np.ndarray) -> np.ndarray:
    """float64 [H, W, 3] CIE Lab (L in [0, 100]) of an sRGB image in [0, 1] (grey: [H, W] or 1 channel)."""
    import cv2

    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return cv2.cvtColor(np.ascontiguousarray(np.clip(rgb[..., :3], 0.0, 1.0)), cv2.COLOR_RGB2Lab).astype(np.float64)


def lab_errors(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``delta_e``: mean per-pixel CIE76 distance over the mask; ``colour_error``: CIE76 distance
    between the mean Lab colours of output and reference over the mask. nan for an empty mask."""
    where = np.asarray(mask, dtype=bool)
    if not where.any():
        return {"delta_e": float("nan"), "colour_error": float("nan")}
    out, ref = to_lab(output)[where], to_lab(reference)[where]
    return {
        "delta_e": float(np.linalg.norm(out - ref, axis=1).mean()),
        "colour_error": float(np.linalg.norm(out.mean(axis=0) - ref.mean(axis=0))),
    }


def compute_metrics(
    output: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    band: np.ndarray,
    *,
    seam_mask: np.ndarray | None = None,
    regions: dict[str, np.ndarray] | None = None,
    seam_width: int = 2,
    ring_width: int = 16,
    detail_sigma: float = 1.5,
    ssim_sigma: float = 1.5,
) -> dict[str, float]:
    """Every metric of one repaint (flat dict of floats), plus ``region/<name>/<metric>`` for each
    region mask (>= 0.5 = in).

    ``mask``: the region judged (bool [H, W]); ``band``: where the output was allowed to change;
    ``seam_mask``: the line whose border is checked for seams (default ``mask``).
    ``reference`` is the original (the input image).
    """
    mask = np.asarray(mask, dtype=bool)
    allowed = np.asarray(band, dtype=bool) | mask
    around = ring(allowed, ring_width)
    seam_on = mask if seam_mask is None else np.asarray(seam_mask, dtype=bool)
    detail_out = detail_energy(output, mask, detail_sigma)
    detail_ref = detail_energy(reference, mask, detail_sigma)
    contrast_out = colour_contrast(output, mask, around)
    contrast_ref = colour_contrast(reference, mask, around)
    metrics = {
        "psnr": masked_psnr(output, reference, mask),
        "ssim": masked_ssim(output, reference, mask, ssim_sigma),
        **outside_drift(output, reference, allowed),
        "seam_error": seam_error(output, seam_on, seam_width),
        "seam_error_input": seam_error(reference, seam_on, seam_width),
        "detail_energy": detail_out,
        "detail_energy_input": detail_ref,
        "detail_ratio": detail_out / detail_ref if detail_ref > 0 else float("nan"),
        "colour_shift": float(np.linalg.norm(contrast_out - contrast_ref)),
        **lab_errors(output, reference, mask),
        "luma_inside": _mean_over(luma(output), mask),
        "luma_ring": _mean_over(luma(output), around),
        "mask_pixels": float(mask.sum()),
    }
    options = {"seam_width": seam_width, "ring_width": ring_width, "detail_sigma": detail_sigma, "ssim_sigma": ssim_sigma}
    for name, region in (regions or {}).items():
        region_mask = np.asarray(region) >= 0.5
        if not region_mask.any():
            continue
        for key, value in compute_metrics(output, reference, region_mask, band, **options).items():
            if key.startswith("drift"):
                continue  # drift is a property of the whole band, not of a region
            metrics[f"region/{name}/{key}"] = value
    return metrics
