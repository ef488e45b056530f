"""Pictures of what training sees: mask overlays per sample and a contact sheet.

For each sample, one PNG with four panels: the image; the merged training mask in red (its
opacity = the mask value, so region weights show); each region in its own colour with its
outline; the masked image of the inpainting objective (the hole in grey). The contact sheet
puts the region panels of all samples on one page with their keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from furlora.data.layouts import safe_name
from furlora.progress import progress_bar

logger = logging.getLogger(__name__)

#: RGB colours of regions, in region order (cycled when there are more regions).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 60, 60), (60, 140, 240), (250, 200, 40), (70, 200, 90), (200, 90, 220), (40, 210, 210), (250, 130, 40), (150, 150, 150),
)


def to_uint8(pixel_values: Any) -> np.ndarray:
    """``[3, H, W]`` float in [-1, 1] (tensor or array) -> uint8 ``[H, W, 3]``."""
    # .float(): numpy has no bfloat16 (bf16 VAE decodes)
    arr = np.asarray(pixel_values.detach().float().cpu() if hasattr(pixel_values, "detach") else pixel_values, dtype=np.float32)
    return np.clip(np.round((arr.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], strength: float = 0.55) -> np.ndarray:
    """Blend ``colour`` into uint8 ``[H, W, 3]`` where float ``mask`` [H, W] in [0, 1] is set."""
    a = (np.clip(mask, 0.0, 1.0) * strength)[..., None]
    return np.clip(image * (1 - a) + np.array(colour, np.float32) * a, 0, 255).astype(np.uint8)


def region_overlay(image: np.ndarray, region_masks: np.ndarray) -> np.ndarray:
    """Each region of ``[R, H, W]`` tinted in its palette colour with a 1-px outline."""
    out = image.copy()
    for r, m in enumerate(region_masks):
        colour = PALETTE[r % len(PALETTE)]
        out = tint(out, m, colour, 0.45)
        contours, _ = cv2.findContours((m > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
    return out


def load_font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow without sized default fonts
        return ImageFont.load_default()


def sample_panels(sample: dict[str, Any]) -> Image.Image:
    """The four-panel picture of one sample dict (as returned by MaskedDataset.sample)."""
    image = to_uint8(sample["pixel_values"])
    merged = np.asarray(sample["mask"][0], dtype=np.float32)
    regions = np.asarray(sample["region_masks"], dtype=np.float32)
    hole = np.asarray(sample["inpaint_mask"][0], dtype=np.float32)
    masked = to_uint8(sample["masked_pixel_values"])
    masked = tint(masked, hole, (128, 128, 128), 1.0)
    panels = [image, tint(image, merged, (255, 0, 0), 0.7), region_overlay(image, regions), masked]
    h, w = image.shape[:2]
    legend_h = 18
    sheet = Image.new("RGB", (4 * w + 3 * 4, h + legend_h), (255, 255, 255))
    for k, p in enumerate(panels):
        sheet.paste(Image.fromarray(p), (k * (w + 4), legend_h))
    draw = ImageDraw.Draw(sheet)
    font = load_font(11)
    titles = ["image", "merged mask", "regions", f"inpaint hole ({sample.get('inpaint_kind', '?')})"]
    for k, t in enumerate(titles):
        draw.text((k * (w + 4) + 2, 3), t, fill=(0, 0, 0), font=font)
    x = 2 * (w + 4) + 60
    for r, name in enumerate(sample["region_names"]):
        if name:
            draw.text((x, 3), name, fill=PALETTE[r % len(PALETTE)], font=font)
            x += 7 * len(name) + 8
    return sheet


def contact_sheet(samples: list[dict[str, Any]], cell: int = 192, columns: int = 6) -> Image.Image:
    """Region overlays of ``samples`` in a grid, each fitted into ``cell`` px with its key below."""
    rows = (len(samples) + columns - 1) // columns
    label = 16
    sheet = Image.new("RGB", (columns * (cell + 6) + 6, rows * (cell + label + 6) + 6 + 20), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = load_font(11)
    names = samples[0]["region_names"] if samples else []
    x = 6
    draw.text((x, 4), "regions:", fill=(0, 0, 0), font=font)
    x += 60
    for r, name in enumerate(names):
        draw.text((x, 4), name, fill=PALETTE[r % len(PALETTE)], font=font)
        x += 7 * len(name) + 12
    for k, sample in enumerate(samples):
        over = region_overlay(to_uint8(sample["pixel_values"]), np.asarray(sample["region_masks"], dtype=np.float32))
        thumb = Image.fromarray(over)
        thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        cx = 6 + (k % columns) * (cell + 6) + (cell - thumb.width) // 2
        cy = 26 + (k // columns) * (cell + label + 6) + (cell - thumb.height) // 2
        sheet.paste(thumb, (cx, cy))
        draw.text((6 + (k % columns) * (cell + 6), 26 + (k // columns) * (cell + label + 6) + cell + 1), str(sample["key"])[:30], fill=(0, 0, 0), font=font)
    return sheet


def write_preview(dataset: Any, out_dir: str | Path, *, limit: int | None = None, epoch: int = 0, augment: bool = False) -> list[Path]:
    """Write ``<key>.png`` four-panel pictures and ``contact_sheet.png`` into ``out_dir``; returns the files.

    ``augment=False`` (the default) shows samples without augmentation; ``True`` shows epoch
    ``epoch`` exactly as training would see it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    written: list[Path] = []
    samples = []
    with progress_bar(count, "preview", "img", disable=count < 50) as bar:
        for i in range(count):
            sample = dataset.sample(i, epoch, augment=augment)
            samples.append(sample)
            path = out / f"{safe_name(sample['key'])}.png"
            sample_panels(sample).save(path)
            written.append(path)
            bar.update()
    sheet = out / "contact_sheet.png"
    contact_sheet(samples).save(sheet)
    written.append(sheet)
    logger.info("wrote %d preview pictures and %s", count, sheet)
    return written
