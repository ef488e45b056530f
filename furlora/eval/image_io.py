"""Reading images and masks for inpainting, and giving results back in the input's own format.

The model works on float32 RGB in [0, 1]. Inputs may be 8-bit or 16-bit, grayscale, RGB or
RGBA (or float arrays in [0, 1]); :func:`to_rgb_float` converts them and :func:`restore_layout`
writes repainted pixels back in the input's dtype and channel layout: grayscale results are
converted back to grey (ITU-R 601 luma), the alpha channel is carried through untouched, and
pixels outside the repainted band are copied from the input, bit for bit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from furlora.data.images import IMAGE_EXTENSIONS
from furlora.errors import EvaluationError

logger = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Layout:
    """How an input image is stored: its dtype, channel count (1, 3 or 4) and full-scale value."""

    dtype: np.dtype
    channels: int
    scale: float


def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file unchanged: [H, W] or [H, W, C] (RGB / RGBA order), uint8 or uint16."""
    import cv2

    file = Path(path)
    if not file.is_file():
        raise EvaluationError(f"image file {file} does not exist")
    data = np.fromfile(file, dtype=np.uint8)  # (not cv2.imread: it cannot open non-ASCII paths everywhere)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise EvaluationError(f"{file}: not a readable image (supported: {', '.join(IMAGE_EXTENSIONS)})")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def as_array(image: Any, what: str = "image") -> np.ndarray:
    """A path, PIL image or array as a numpy array (PIL and files keep their bit depth)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image_file(image)
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL.Image without importing PIL
        if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
            # Palette / grey+alpha / other colour spaces: RGB(A), as OpenCV reads such files.
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        elif image.mode == "1" and what.startswith("image"):
            image = image.convert("L")
        return np.asarray(image)
    if isinstance(image, np.ndarray):
        return image
    raise EvaluationError(f"{what}: expected a file path, PIL image or numpy array, got {type(image).__name__}")


def layout_of(array: np.ndarray, what: str = "image") -> Layout:
    """The :class:`Layout` of an image array; raises for shapes and dtypes furlora cannot repaint."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        channels = 1
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        channels = array.shape[2]
    else:
        raise EvaluationError(f"{what}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise EvaluationError(f"{what}: unsupported dtype {array.dtype} (use uint8, uint16 or float in [0, 1])")
    scale = original_dtype_scale(array.dtype)
    if scale == 1.0 and array.size and (not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0):
        raise EvaluationError(f"{what}: float images must hold finite values in [0, 1]")
    if min(array.shape[:2]) < 8:
        raise EvaluationError(f"{what}: {array.shape[1]}x{array.shape[0]} px is too small (at least 8x8)")
    return Layout(dtype=array.dtype, channels=channels, scale=scale)


def to_rgb_float(array: np.ndarray, what: str = "image") -> tuple[np.ndarray, Layout]:
    """float32 [H, W, 3] RGB in [0, 1] and the input's :class:`Layout` (grey is replicated, alpha dropped)."""
    layout = layout_of(array, what)
    data = array.astype(np.float32) / np.float32(layout.scale)
    if layout.channels == 1:
        data = np.repeat(data.reshape(data.shape[0], data.shape[1], 1), 3, axis=2)
        logger.info("%s is grayscale: repainted as RGB, written back as grey", what)
    elif layout.channels == 4:
        data = data[:, :, :3]
        logger.info("%s has an alpha channel: RGB is repainted, alpha is kept unchanged", what)
    return np.ascontiguousarray(data), layout


def restore_layout(original: np.ndarray, layout: Layout, rgb: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Write repainted pixels back into a copy of ``original``, in its own layout.

    ``rgb``: float32 [H, W, 3] in [0, 1]; ``changed``: bool [H, W], the pixels to take from ``rgb``.
    Every other pixel (and the alpha channel) is copied from ``original`` unchanged.
    """
    out = original.copy()
    if not changed.any():
        return out
    values = np.clip(rgb[changed], 0.0, 1.0)  # [N, 3]
    if layout.channels == 1:
        values = values @ LUMA  # [N]
    if layout.scale != 1.0:
        values = np.rint(values * layout.scale)
    values = values.astype(layout.dtype)
    if out.ndim == 2:
        out[changed] = values
    else:
        out[changed, :3] = values.reshape(len(values), -1)  # [N, 1] (grey) or [N, 3]
    return out


def load_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """A mask (path, PIL image or array) as float32 [H, W] in [0, 1] (1 = repaint), not binarised.

    Colour masks are reduced to their luma; an RGBA mask whose colour is constant but whose alpha
    varies uses the alpha.
    """
    array = as_array(mask, what)
    if array.dtype == bool:
        array = array.astype(np.float32)
    dtype = array.dtype
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        colour = array[:, :, :3]
        constant = array.shape[2] == 4 and float(colour.max()) == float(colour.min())
        array = array[:, :, 3] if constant else colour.astype(np.float32) @ LUMA
    if array.ndim != 2:
        raise EvaluationError(f"{what}: expected a single-channel mask [H, W], got shape {array.shape}")
    return _check_mask_values(array.astype(np.float32) / np.float32(original_dtype_scale(dtype)), what)


def original_dtype_scale(dtype: np.dtype) -> float:
    """Full-scale value of an integer dtype (255, 65535) or 1 for floats."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise EvaluationError(f"mask dtype {dtype} is not supported (use uint8, uint16, bool or float in [0, 1])")


def _check_mask_values(mask: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(mask).all() or mask.min() < 0.0 or mask.max() > 1.0 + 1e-6:
        raise EvaluationError(f"{what}: values must be finite and in [0, 1] (1 = repaint)")
    return np.clip(mask, 0.0, 1.0)


def match_mask_size(mask: np.ndarray, size: tuple[int, int], resize: bool, what: str = "mask") -> np.ndarray:
    """Return ``mask`` if it is ``size`` (h, w); else resize it (nearest) when allowed, or raise."""
    if mask.shape[:2] == size:
        return mask
    if not resize:
        raise EvaluationError(
            f"{what} is {mask.shape[1]}x{mask.shape[0]} px but its image is {size[1]}x{size[0]} px; "
            "give a mask of the image's size or set eval.resize_mask: true to resize it"
        )
    import cv2

    logger.warning("%s resized from %sx%s to %sx%s (eval.resize_mask)", what, mask.shape[1], mask.shape[0], size[1], size[0])
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write [H, W], [H, W, 3] or [H, W, 4] (uint8, uint16 or float in [0, 1]) as a PNG; returns the path."""
    import cv2

    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    array = image
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise EvaluationError(f"cannot encode {file} as PNG")
    encoded.tofile(file)
    return file
