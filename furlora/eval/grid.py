"""Comparison grids as PNG: input, mask overlay and each variant side by side, with zoomed crops
of the mask border below (where seams, halos and smudged fur show first).

Layout of one grid (one image, one seed)::

    | input | mask overlay | variant 1 | variant 2 | ...     <- full images, scaled to a cell
    | zoom 1 of each column ...                        |     <- crops of the mask border,
    | zoom 2 ...                                       |        nearest-neighbour enlarged

Each column has a title; variant columns carry their key metrics under the title.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from furlora.eval.metrics import border
from furlora.eval.settings import ReportSettings

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MASK_TINT = np.array([1.0, 0.15, 0.15], dtype=np.float32)
BAND_LINE = np.array([1.0, 0.85, 0.1], dtype=np.float32)
CROP_LINE = (80, 200, 255)


@dataclass
class Column:
    """One column of the grid: a title, optional caption lines and a float32 [H, W, 3] image in [0, 1]."""

    title: str
    image: np.ndarray
    caption: list[str]


def mask_overlay(image: np.ndarray, mask: np.ndarray, band: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3]: the image with the mask tinted red and the band's outer edge in yellow."""
    out = image.copy()
    out[mask] = 0.45 * out[mask] + 0.55 * MASK_TINT
    out[border(band)] = BAND_LINE
    return out


def grid_caption(metrics: dict[str, Any]) -> list[str]:
    """Two short lines of key metrics under a variant's grid column."""
    def f(name: str, fmt: str) -> str:
        value = metrics.get(name, float("nan"))
        return "–" if not isinstance(value, float) or math.isnan(value) else format(value, fmt)

    return [f"PSNR {f('psnr', '.1f')}  SSIM {f('ssim', '.2f')}",
            f"seam {f('seam_error', '.2f')}  detail {f('detail_ratio', '.2f')}"]


def zoom_centres(seam_mask: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` (row, col) points on the mask border, spread by angle around its centroid."""
    if count <= 0 or not seam_mask.any() or seam_mask.all():
        return []
    rows, cols = np.nonzero(border(seam_mask))  # not empty: some mask pixel has a 4-neighbour outside
    cy, cx = rows.mean(), cols.mean()
    angles = np.arctan2(rows - cy, cols - cx)
    centres = []
    for k in range(count):
        target = -math.pi + (k + 0.5) * 2 * math.pi / count
        diff = np.abs(np.angle(np.exp(1j * (angles - target))))
        i = int(np.argmin(diff))
        point = (int(rows[i]), int(cols[i]))
        if point not in centres:
            centres.append(point)
    return centres


def crop_box(centre: tuple[int, int], size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a ``size`` square around ``centre``, shifted to stay inside ``shape``."""
    h, w = shape
    size_h, size_w = min(size, h), min(size, w)
    top = min(max(0, centre[0] - size_h // 2), h - size_h)
    left = min(max(0, centre[1] - size_w // 2), w - size_w)
    return top, left, top + size_h, left + size_w


def _to_cell(image: np.ndarray, cell: int) -> "Image.Image":  # noqa: F821
    from PIL import Image

    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    h, w = pixels.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Enlarge small images pixel by pixel (shows what the model made); shrink large ones smoothly.
    return picture.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)


def render_grid(columns: list[Column], seam_mask: np.ndarray, cell: int, zoom_crops: int, zoom_size: int,
                title: str = "") -> np.ndarray:
    """uint8 [H, W, 3]: the grid image of ``columns`` (all images the same size)."""
    from PIL import Image, ImageDraw

    from furlora.data.preview import load_font

    font, small = load_font(max(11, cell // 14)), load_font(max(10, cell // 18))
    line_h = max(13, cell // 14 + 3)
    caption_lines = max(len(c.caption) for c in columns)
    pad = 6
    head = (line_h + pad if title else 0) + line_h * (1 + caption_lines) + pad
    shape = columns[0].image.shape[:2]
    centres = zoom_centres(seam_mask, zoom_crops)
    boxes = [crop_box(c, zoom_size, shape) for c in centres]
    thumb_w, thumb_h = _to_cell(columns[0].image, cell).size
    width = pad + len(columns) * (cell + pad)
    height = head + thumb_h + pad + len(boxes) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y0 = pad
    if title:
        draw.text((pad, y0), title, fill=TEXT, font=font)
        y0 += line_h + pad
    scale = thumb_w / shape[1]
    for j, column in enumerate(columns):
        x = pad + j * (cell + pad)
        draw.text((x, y0), column.title, fill=TEXT, font=font)
        for k, line in enumerate(column.caption):
            draw.text((x, y0 + line_h * (k + 1)), line, fill=(180, 180, 180), font=small)
        canvas.paste(_to_cell(column.image, cell), (x, head))
        for r, (top, left, bottom, right) in enumerate(boxes):  # each zoom below, and where it comes from
            draw.rectangle([x + left * scale, head + top * scale, x + right * scale - 1, head + bottom * scale - 1],
                           outline=CROP_LINE)
            canvas.paste(_to_cell(column.image[top:bottom, left:right], cell), (x, head + thumb_h + pad + r * (cell + pad)))
    return np.asarray(canvas)


def result_grid(first: Any, outputs: list[tuple[str, Any, dict[str, float]]], report: ReportSettings, title: str,
                input_title: str = "input") -> np.ndarray:
    """uint8 [H, W, 3]: the grid of one image: the input and mask overlay of ``first`` (an
    :class:`~furlora.eval.inpaint.InpaintResult`), then a column per (name, result, metrics) of
    ``outputs``, laid out by ``report`` (the ``eval.report`` settings)."""
    columns = [Column(input_title, first.input_rgb, []), Column("mask", mask_overlay(first.input_rgb, first.mask, first.band), [])]
    columns += [Column(name, result.output_rgb, grid_caption(metrics)) for name, result, metrics in outputs]
    return render_grid(columns, first.seam_mask, report.thumbnail_size, report.zoom_crops, report.zoom_size, title=title)
