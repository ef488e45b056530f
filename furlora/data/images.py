"""Decode image and mask files into numpy arrays, whatever their mode, with EXIF rotation.

Images come out as uint8 RGB ``[H, W, 3]`` (plus the alpha channel as float32 ``[H, W]`` in
``[0, 1]`` when there is one); masks as float32 ``[H, W]`` in ``[0, 1]`` before binarisation.
Handled modes: 1, L, P (with or without transparency), LA, PA, RGB, RGBA, CMYK, YCbCr, 16-bit
grey (I;16*), 32-bit I and F. 16-bit RGB PNGs are read by Pillow as 8-bit RGB.

EXIF orientation: the image's orientation tag is applied to the image *and to its masks*
(masks are stored in the same pixel orientation as the image file they belong to), unless a
mask file carries its own orientation tag, which then wins, or a mask of a non-square image has
the displayed (rotated) size rather than the stored one: it was drawn on the displayed image
(GIMP, Photoshop, LabelMe) and is used as drawn. Every decoding failure becomes a
:class:`~furlora.errors.DatasetError` naming the file: no traceback from inside Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from furlora.data.masks import to_unit_float
from furlora.errors import DatasetError

#: File extensions treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_ORIENTATION_TAG = 0x0112
_HIGH_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: Pillow modes with an alpha channel (a "P" image may also have one: a transparency entry).
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Guard against decompression bombs without Pillow's warning-or-error split: one clear limit.
_MAX_PIXELS = 16384 * 16384


@dataclass
class LoadedImage:
    """A decoded image after EXIF rotation."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    alpha: np.ndarray | None  # float32 [H, W] in [0, 1], None when the file has no alpha channel
    orientation: int  # the EXIF orientation that was applied (1 = none)
    mode: str  # the file's Pillow mode, e.g. "RGB", "I;16", "CMYK"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) after EXIF rotation."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to ``[H, W, ...]``, as Pillow's ``exif_transpose`` does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(array)) if op else array


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path``; turn every Pillow / OS failure into a DatasetError."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except Image.DecompressionBombError:
        raise DatasetError(f"{what} {path} is too large to decode safely; downscale it first") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{what} {path} is not an image file Pillow can read (corrupt, empty or a different format); re-export it as PNG or JPEG") from None
    except OSError as exc:
        raise DatasetError(f"{what} {path} cannot be opened: {exc}") from None
    if img.width * img.height > _MAX_PIXELS:
        raise DatasetError(f"{what} {path} is {img.width}x{img.height}: larger than {_MAX_PIXELS} pixels; downscale it first")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # truncated data, bad CRC, broken chunks
        raise DatasetError(f"{what} {path} is truncated or damaged ({exc}); re-export or remove it") from None
    return img


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag (1-8), or None when the file has none (or a broken one)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def load_image(path: str | Path) -> LoadedImage:
    """Decode an image file into uint8 RGB (+ alpha), EXIF rotation applied. Raises DatasetError."""
    path = Path(path)
    img = _open(path, "image")
    mode = img.mode
    orientation = _orientation(img) or 1
    alpha: np.ndarray | None = None
    if mode in _HIGH_BIT_GREY:
        grey = np.round(to_unit_float(np.asarray(img)) * 255.0).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        has_alpha = _has_alpha(img)
        converted = img.convert("RGBA" if has_alpha else "RGB")
        data = np.array(converted)
        rgb = np.ascontiguousarray(data[..., :3])
        if has_alpha:
            alpha = data[..., 3].astype(np.float32) / 255.0
    rgb = apply_orientation(rgb, orientation)
    if alpha is not None:
        alpha = apply_orientation(alpha, orientation)
    return LoadedImage(rgb=rgb, alpha=alpha, orientation=orientation, mode=mode)


@dataclass
class LoadedMask:
    """A decoded mask in the displayed (EXIF-rotated) orientation of its image."""

    values: np.ndarray  # float32 [H, W] in [0, 1], not binarised
    drawn_on_displayed: bool  # the file was drawn on the rotated view and is used as it is


def drawn_on_displayed_view(stored: tuple[int, int], orientation: int, displayed: tuple[int, int] | None) -> bool:
    """True when a mask of ``stored`` (h, w) can only have been drawn on the displayed image.

    GIMP, Photoshop and LabelMe rotate a phone photo by its EXIF tag before you draw, so the
    exported mask has the displayed size. With a 90-degree orientation (5-8) and a non-square
    image the two sizes differ, which makes this unambiguous; for square images (and 180-degree
    or mirror orientations) the sizes agree, so the file is taken as drawn on the stored pixels.
    """
    return displayed is not None and orientation in (5, 6, 7, 8) and stored == displayed and stored != displayed[::-1]


def load_mask(path: str | Path, image_orientation: int = 1, displayed_size: tuple[int, int] | None = None) -> LoadedMask:
    """Decode a mask file into float32 ``[H, W]`` in ``[0, 1]`` (not binarised).

    Grey masks are used as they are; colour masks use their brightest channel (a red-on-black
    mask counts like a white-on-black one); an alpha channel multiplies the value (transparent
    = 0). The image's EXIF orientation is applied unless the mask file has its own, or unless
    the mask has the image's displayed (h, w) ``displayed_size`` and not its stored size
    (:func:`drawn_on_displayed_view`): then it is used as drawn.
    """
    path = Path(path)
    img = _open(path, "mask")
    own = _orientation(img)
    if img.mode in _HIGH_BIT_GREY:
        values = to_unit_float(np.asarray(img))
    elif img.mode in ("1", "L"):
        values = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    else:
        has_alpha = _has_alpha(img)
        data = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
        values = data[..., :3].max(axis=2)
        if has_alpha:
            values = values * data[..., 3]
    values = np.ascontiguousarray(values, dtype=np.float32)
    if own is None and drawn_on_displayed_view(values.shape, image_orientation, displayed_size):
        return LoadedMask(values, True)
    return LoadedMask(apply_orientation(values, own if own is not None else image_orientation), False)


def peek(path: str | Path) -> tuple[str, tuple[int, int]] | None:
    """(Pillow mode, (height, width) as stored) from the header only, or None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.mode, (img.height, img.width)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
