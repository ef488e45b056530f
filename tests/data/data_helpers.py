"""Helpers for the data tests: write small images, masks and captions into a temporary folder.

(A uniquely named module rather than conftest.py, so `from data_helpers import ...` never
picks up another folder's conftest.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from furlora.data.settings import DataSettings  # noqa: E402


def scene(h: int = 64, w: int = 64, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An image whose regions can be read back from its pixels.

    Background: dark grey noise (values < 90). Region ``a``: pure red disc; region ``b``: pure
    green rectangle; region ``c``: pure blue ellipse; disjoint. Masks are uint8 {0, 255}.
    """
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(20, 80, (h, w, 3)).astype(np.uint8)
    a = np.zeros((h, w), np.uint8)
    b = np.zeros((h, w), np.uint8)
    c = np.zeros((h, w), np.uint8)
    cv2.circle(a, (w // 4, h // 4), max(3, min(h, w) // 6), 255, -1)
    cv2.rectangle(b, (w // 2 + 2, h // 8), (w - 4, h // 2 - 2), 255, -1)
    cv2.ellipse(c, (w // 2, 3 * h // 4), (max(3, w // 4), max(2, h // 8)), 0, 0, 360, 255, -1)
    img[a > 0] = (255, 0, 0)
    img[b > 0] = (0, 255, 0)
    img[c > 0] = (0, 0, 255)
    return img, {"a": a, "b": b, "c": c}


class Maker:
    """Writes files under ``root``; every method returns the written path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def image(self, rel: str, array: np.ndarray, mode: str | None = None, exif_orientation: int | None = None, **save: Any) -> Path:
        p = self.path(rel)
        img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
        if exif_orientation is not None:
            exif = img.getexif()
            exif[0x0112] = exif_orientation
            save["exif"] = exif.tobytes()
        img.save(p, **save)
        return p

    def text(self, rel: str, content: str) -> Path:
        p = self.path(rel)
        p.write_text(content, encoding="utf-8")
        return p

    def bytes(self, rel: str, data: bytes) -> Path:
        p = self.path(rel)
        p.write_bytes(data)
        return p

    def furlora_sample(self, stem: str, seed: int = 0, size: tuple[int, int] = (64, 64), regions: tuple[str, ...] = ("a", "b", "c"), caption: str | None = "a test image") -> Path:
        img, masks = scene(*size, seed=seed)
        path = self.image(f"{stem}.png", img)
        for r in regions:
            self.image(f"{stem}.{r}.png", masks[r])
        if caption is not None:
            self.text(f"{stem}.txt", caption)
        return path


def settings(**kw: Any) -> DataSettings:
    """Small, fast settings for tests (64 px, no augmentation, hole = region) unless overridden."""
    base: dict[str, Any] = {
        "resolution": 64,
        "augment": {"enabled": False},
        "inpaint_mask": {"region": 1.0, "region_grown": 0.0, "strokes": 0.0, "boxes": 0.0, "ellipses": 0.0},
    }
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return DataSettings.model_validate(base)
