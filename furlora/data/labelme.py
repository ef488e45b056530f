"""LabelMe JSON annotations: parse shapes and rasterise them into region masks.

A LabelMe file ``<stem>.json`` beside the image holds ``shapes``: each with a ``label`` (the
region name), ``points`` ([[x, y], ...] in pixels of the image as LabelMe shows it, i.e. after
EXIF rotation) and a ``shape_type`` (polygon, rectangle, circle; others are reported).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from furlora.errors import DatasetError

SUPPORTED_SHAPES = ("polygon", "rectangle", "circle")


@dataclass(frozen=True)
class Shape:
    label: str
    shape_type: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class LabelMeFile:
    path: Path
    shapes: tuple[Shape, ...]
    size: tuple[int, int] | None  # (height, width) declared in the file


def looks_like_labelme(path: Path) -> bool:
    """True if ``path`` is a JSON object with a ``shapes`` list (cheap check for auto-detection)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def read_labelme(path: Path) -> LabelMeFile:
    """Parse a LabelMe file; raise DatasetError naming the file and the bad shape on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"LabelMe file {path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"LabelMe file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError(f"LabelMe file {path} has no `shapes` list")
    shapes = []
    for i, raw in enumerate(data["shapes"]):
        where = f"LabelMe file {path}, shapes[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("label"), str) or not raw["label"]:
            raise DatasetError(f"{where}: needs a non-empty `label` (the region name)")
        kind = raw.get("shape_type") or "polygon"
        if kind not in SUPPORTED_SHAPES:
            raise DatasetError(f"{where} ({raw['label']!r}): shape_type {kind!r} is not supported (use {', '.join(SUPPORTED_SHAPES)})")
        try:
            points = tuple((float(x), float(y)) for x, y in raw.get("points") or [])
        except (TypeError, ValueError):
            raise DatasetError(f"{where} ({raw['label']!r}): points must be [[x, y], ...]") from None
        need = 3 if kind == "polygon" else 2
        if len(points) < need:
            raise DatasetError(f"{where} ({raw['label']!r}): a {kind} needs at least {need} points, got {len(points)}")
        shapes.append(Shape(label=raw["label"], shape_type=kind, points=points))
    size = None
    if isinstance(data.get("imageHeight"), int) and isinstance(data.get("imageWidth"), int):
        size = (int(data["imageHeight"]), int(data["imageWidth"]))
    return LabelMeFile(path=path, shapes=tuple(shapes), size=size)


def rasterize(shapes: list[Shape] | tuple[Shape, ...], size: tuple[int, int]) -> np.ndarray:
    """Fill ``shapes`` into a float32 ``[H, W]`` mask of ``size`` = (height, width); 1 inside."""
    h, w = size
    out = np.zeros((h, w), np.uint8)
    for shape in shapes:
        pts = np.asarray(shape.points, dtype=np.float64)
        if shape.shape_type == "polygon":
            cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
        elif shape.shape_type == "rectangle":
            (x0, y0), (x1, y1) = pts[0], pts[1]
            cv2.rectangle(out, (int(round(min(x0, x1))), int(round(min(y0, y1)))), (int(round(max(x0, x1))), int(round(max(y0, y1)))), 1, -1)
        elif shape.shape_type == "circle":  # LabelMe: centre, then a point on the circle
            (cx, cy), (px, py) = pts[0], pts[1]
            radius = int(round(float(np.hypot(px - cx, py - cy))))
            cv2.circle(out, (int(round(cx)), int(round(cy))), radius, 1, -1)
    return out.astype(np.float32)
