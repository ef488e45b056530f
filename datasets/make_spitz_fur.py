"""Draw the bundled synthetic dataset: Spitz-like dogs with black-and-white strand fur.

Each dog is built from simple shapes (body, legs, tail plume, chest ruff, paws, head with ears
and muzzle). Every part is filled with thousands of short strands that follow a flow field
(the direction fur grows in that part, bent by smooth noise), so the texture has the fine,
directional detail that fur inpainting must learn. The region masks (face, chest, tail, paws)
are the exact visible areas of those parts. Everything derives from one integer seed, so the
same command always writes the same files.

    python datasets/make_spitz_fur.py            # rewrites datasets/spitz-fur/{train,heldout}
    python datasets/make_spitz_fur.py --out DIR --train 24 --heldout 8
    python datasets/make_spitz_fur.py --preview  # also redraws the pictures of datasets/README.md

Rendering happens at twice the output size and is area-downsampled (anti-aliased strands);
a mask pixel is 1 when more than half of it belongs to the region.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REGIONS = ("face", "chest", "tail", "paws")
SPLIT_SEEDS = {"train": 1000, "heldout": 2000}
SUPERSAMPLE = 2


@dataclass
class Dog:
    """Random choices of one dog (normalised coordinates: x, y in [0, 1] of the canvas)."""

    pattern: str  # "black", "white", "parti"
    scale: float
    cx: float
    cy: float
    facing_left: bool
    tail_curl: float
    ear_height: float
    background: str
    hair_length: float


PATTERN_TEXT = {
    "black": "a black spitz dog with a white chest and white paws",
    "white": "a white spitz dog",
    "parti": "a black and white parti-coloured spitz dog",
}
BACKGROUND_TEXT = {"grass": "on green grass", "studio": "in front of a grey studio backdrop", "floor": "on a wooden floor"}


def _draw_dog_params(rng: np.random.Generator) -> Dog:
    return Dog(
        pattern=str(rng.choice(["black", "white", "parti"])),
        scale=float(rng.uniform(0.85, 1.05)),
        cx=float(rng.uniform(0.45, 0.55)),
        cy=float(rng.uniform(0.50, 0.56)),
        facing_left=bool(rng.random() < 0.5),
        tail_curl=float(rng.uniform(0.7, 1.2)),
        ear_height=float(rng.uniform(0.07, 0.10)),
        background=str(rng.choice(["grass", "studio", "floor"])),
        hair_length=float(rng.uniform(0.8, 1.25)),
    )


def _background(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    low = cv2.resize(rng.normal(0, 1, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if kind == "grass":
        top, bottom = np.array([150, 170, 120]), np.array([70, 120, 50])
    elif kind == "studio":
        top, bottom = np.array([175, 175, 180]), np.array([110, 110, 118])
    else:
        top, bottom = np.array([200, 190, 175]), np.array([130, 90, 60])
    img = top * (1 - y) + bottom * y + 8.0 * low
    if kind == "floor":  # plank lines
        img[(np.arange(h) % max(4, h // 12)) == 0] *= 0.85
    return np.clip(img, 0, 255).astype(np.float32)


def _shapes(dog: Dog, h: int, w: int) -> dict[str, np.ndarray]:
    """uint8 {0,1} masks of each part, drawn facing right (mirrored later if facing_left)."""
    s = dog.scale * min(h, w)
    cx, cy = dog.cx * w, dog.cy * h

    def P(dx: float, dy: float) -> tuple[int, int]:
        return int(round(cx + dx * s)), int(round(cy + dy * s))

    def L(v: float) -> int:
        return max(1, int(round(v * s)))

    parts = {k: np.zeros((h, w), np.uint8) for k in ("body", "legs", "tail", "chest", "paws", "head")}
    cv2.ellipse(parts["body"], P(0, 0.02), (L(0.25), L(0.15)), 0, 0, 360, 1, -1)
    for dx in (-0.19, -0.10, 0.09, 0.17):
        cv2.rectangle(parts["legs"], P(dx - 0.035, 0.05), P(dx + 0.035, 0.27), 1, -1)
        cv2.ellipse(parts["paws"], P(dx + 0.01, 0.29), (L(0.048), L(0.032)), 0, 0, 360, 1, -1)
    # tail plume: a thick curve rising from the rump and curling forward over the back
    t = np.linspace(0, 1, 24)
    curl = dog.tail_curl
    xs = -0.24 - 0.10 * np.sin(np.pi * t) * curl + 0.16 * t * curl
    ys = -0.02 - 0.30 * np.sin(0.5 * np.pi * t) + 0.10 * t**2
    width = 0.055 + 0.05 * np.sin(np.pi * t)
    for x0, y0, r in zip(xs, ys, width):
        cv2.circle(parts["tail"], P(x0, y0), L(r), 1, -1)
    cv2.ellipse(parts["chest"], P(0.19, -0.04), (L(0.12), L(0.16)), -15, 0, 360, 1, -1)
    cv2.circle(parts["head"], P(0.25, -0.22), L(0.12), 1, -1)
    cv2.ellipse(parts["head"], P(0.36, -0.19), (L(0.07), L(0.045)), 10, 0, 360, 1, -1)  # muzzle
    eh = dog.ear_height
    for ex in (0.18, 0.29):
        tri = np.array([P(ex - 0.05, -0.29), P(ex + 0.045, -0.30), P(ex - 0.005, -0.30 - eh * 1.6)], np.int32)
        cv2.fillConvexPoly(parts["head"], tri, 1)
    return parts


def _flow(part: str, dog: Dog, x: np.ndarray, y: np.ndarray, h: int, w: int, noise: tuple[float, ...]) -> np.ndarray:
    """Growth direction (angle, radians) of the fur of ``part`` at canvas points (x, y)."""
    s = dog.scale * min(h, w)
    cx, cy = dog.cx * w, dog.cy * h
    if part == "head":  # radial from the eyes, so hair points away from the face centre
        base = np.arctan2(y - (cy - 0.21 * s), x - (cx + 0.27 * s))
    elif part == "chest":  # ruff: down and outward
        base = np.arctan2(np.full_like(x, 1.0), (x - (cx + 0.19 * s)) / s * 3.0)
    elif part == "tail":  # plume: away from the tail root
        base = np.arctan2(y - (cy - 0.02 * s), x - (cx - 0.24 * s)) + 0.4
    elif part in ("legs", "paws"):
        base = np.full_like(x, np.pi / 2)
    else:  # body: backwards and a little down
        base = np.pi - 0.35 + 0.5 * (y - cy) / s
    a, b, c, d = noise
    return base + 0.55 * np.sin(x / s * a + c) * np.cos(y / s * b + d)


def _colours(part: str, dog: Dog, x: np.ndarray, y: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Base grey level (0..255) of the fur at each strand start."""
    white = part in ("chest", "paws") or dog.pattern == "white"
    if dog.pattern == "parti" and part in ("body", "head", "tail", "legs"):
        h, w = patch.shape
        white = patch[np.clip(y.astype(int), 0, h - 1), np.clip(x.astype(int), 0, w - 1)] > 0
        return np.where(white, 225.0, 35.0)
    if dog.pattern == "black" and part == "head":  # white muzzle on a black face
        h, w = patch.shape
        return np.where(patch[np.clip(y.astype(int), 0, h - 1), np.clip(x.astype(int), 0, w - 1)] > 0.5, 215.0, 35.0)
    return np.full(x.shape, 225.0 if white else 35.0)


def _strands(shape: np.ndarray, part: str, dog: Dog, rng: np.random.Generator, patch: np.ndarray, density: float) -> tuple[np.ndarray, np.ndarray]:
    """Fur of one part: (colour float32 [h, w, 3], coverage float32 [h, w] in [0, 1]).

    The part's shape gets an undercoat; strands start inside it and follow the flow field,
    bent outwards near the outline, so hair tufts stick out past the shape (a fluffy edge).
    """
    h, w = shape.shape
    colour = np.zeros((h, w, 3), np.float32)
    cover = np.zeros((h, w), np.uint8)
    ys, xs = np.nonzero(shape)
    if xs.size == 0:
        return colour, cover.astype(np.float32)
    white_part = dog.pattern == "white" or part in ("chest", "paws")
    under = _colours(part, dog, xs.astype(np.float64), ys.astype(np.float64), patch) * (0.72 if white_part else 0.8)
    colour[ys, xs] = under[:, None]
    cover[ys, xs] = 255
    # outward normal near the outline, from the distance-to-background gradient
    dist = cv2.distanceTransform(shape, cv2.DIST_L2, 3)
    gx = cv2.Sobel(dist, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(dist, cv2.CV_32F, 0, 1, ksize=3)
    n = int(xs.size * density)
    pick = rng.integers(0, xs.size, n)
    x = xs[pick] + rng.uniform(-0.5, 0.5, n)
    y = ys[pick] + rng.uniform(-0.5, 0.5, n)
    base = _colours(part, dog, x, y, patch)
    noise = tuple(rng.uniform(2.0, 7.0, 2)) + tuple(rng.uniform(0, 2 * np.pi, 2))
    steps = 6
    step_len = 2.0 * SUPERSAMPLE * dog.hair_length * (0.6 + 0.8 * rng.random(n))
    edge = 6.0 * SUPERSAMPLE
    pts = np.zeros((n, steps + 1, 2))
    pts[:, 0, 0], pts[:, 0, 1] = x, y
    for k in range(steps):
        px, py = pts[:, k, 0], pts[:, k, 1]
        ang = _flow(part, dog, px, py, h, w, noise)
        ix, iy = np.clip(px.astype(int), 0, w - 1), np.clip(py.astype(int), 0, h - 1)
        pull = 1.6 * np.exp(-dist[iy, ix] / edge)  # near the edge: bend outwards (= down the distance)
        dx, dy = np.cos(ang) - pull * gx[iy, ix], np.sin(ang) - pull * gy[iy, ix]
        norm = np.hypot(dx, dy) + 1e-6
        pts[:, k + 1, 0] = px + dx / norm * step_len
        pts[:, k + 1, 1] = py + dy / norm * step_len
    spread = 34.0 if white_part or dog.pattern == "parti" else 24.0
    shade = base + rng.normal(0, spread, n) + np.where(rng.random(n) < 0.12, 45, 0) - np.where(rng.random(n) < 0.10, 60, 0)
    bins = np.clip((np.clip(shade, 0, 255) // 16).astype(int), 0, 15)
    polys = np.round(pts * 4).astype(np.int32)  # 2 fractional bits: sub-pixel strand positions
    for b in range(16):
        sel = np.flatnonzero(bins == b)
        if sel.size:
            v = float(b * 16 + 8)
            lines = list(polys[sel])
            cv2.polylines(colour, lines, False, (v, v * 0.98, v * 0.95), thickness=1, lineType=cv2.LINE_8, shift=2)
            cv2.polylines(cover, lines, False, 255, thickness=1, lineType=cv2.LINE_8, shift=2)
    return colour, cover.astype(np.float32) / 255.0


def render_dog(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """One dog: (RGB uint8 [h, w, 3], {region: uint8 {0, 255} [h, w]}, caption). Pure function of seed.

    Parts are composited back to front with their fur coverage as alpha; a region's weight at
    a pixel is its alpha times the transparency of everything in front, and the mask is where
    that weight exceeds one half after downsampling: the exact visible area of the region.
    """
    rng = np.random.default_rng(seed)
    dog = _draw_dog_params(rng)
    h, w = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    canvas = _background(rng, dog.background, h, w)
    parts = _shapes(dog, h, w)
    patch_noise = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    patch = (patch_noise > 0.3).astype(np.float32) if dog.pattern == "parti" else np.zeros((h, w), np.float32)
    s = dog.scale * min(h, w)
    if dog.pattern == "black":  # muzzle blaze: a soft spot around the nose
        yy, xx = np.mgrid[0:h, 0:w]
        patch = np.exp(-(((xx - (dog.cx * w + 0.35 * s)) / (0.09 * s)) ** 2 + ((yy - (dog.cy * h - 0.18 * s)) / (0.07 * s)) ** 2)).astype(np.float32)
    weights: dict[str, np.ndarray] = {}
    for part in ("legs", "body", "tail", "chest", "paws", "head"):  # back to front
        colour, alpha = _strands(parts[part], part, dog, rng, patch, density=0.55 if part == "body" else 0.7)
        canvas = canvas * (1 - alpha[..., None]) + colour * alpha[..., None]
        for k in weights:
            weights[k] *= 1 - alpha
        weights[part] = alpha
    features = np.zeros((h, w), np.float32)  # eyes and nose belong to the face
    for ex in (0.22, 0.30):
        cv2.circle(features, (int(dog.cx * w + ex * s), int(dog.cy * h - 0.25 * s)), max(2, int(0.014 * s)), 1.0, -1)
    cv2.ellipse(features, (int(dog.cx * w + 0.42 * s), int(dog.cy * h - 0.20 * s)), (max(2, int(0.022 * s)), max(2, int(0.016 * s))), 0, 0, 360, 1.0, -1)
    canvas = canvas * (1 - features[..., None]) + np.array([14.0, 11.0, 9.0]) * features[..., None]
    for k in weights:
        weights[k] *= 1 - features
    weights["head"] = weights["head"] + features
    regions = {"face": weights["head"], "chest": weights["chest"], "tail": weights["tail"], "paws": weights["paws"]}
    if dog.facing_left:
        canvas = canvas[:, ::-1]
        regions = {k: v[:, ::-1] for k, v in regions.items()}
    out_size = (size[1], size[0])
    rgb = cv2.resize(np.ascontiguousarray(np.clip(canvas, 0, 255), dtype=np.float32), out_size, interpolation=cv2.INTER_AREA)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    masks = {k: (cv2.resize(np.ascontiguousarray(v, dtype=np.float32), out_size, interpolation=cv2.INTER_AREA) > 0.5).astype(np.uint8) * 255 for k, v in regions.items()}
    pose = "facing left" if dog.facing_left else "facing right"
    caption = f"{PATTERN_TEXT[dog.pattern]}, {pose}, {BACKGROUND_TEXT[dog.background]}, fluffy double coat with fine fur strands"
    return rgb, masks, caption


def image_size(i: int) -> tuple[int, int]:
    """(h, w) of dog ``i``: mostly 256 x 256, some landscape and portrait (to exercise buckets)."""
    if i % 6 == 5:
        return 256, 384
    if i % 8 == 7:
        return 384, 256
    return 256, 256


def dog_seed(split: str, i: int) -> int:
    return SPLIT_SEEDS[split] + i


def write_split(out: Path, split: str, count: int) -> None:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("dog_*"):
        old.unlink()
    for i in range(count):
        rgb, masks, caption = render_dog(dog_seed(split, i), image_size(i))
        stem = f"dog_{i:03d}"
        Image.fromarray(rgb).save(folder / f"{stem}.png", optimize=True)
        for region in REGIONS:
            Image.fromarray(masks[region]).convert("1").save(folder / f"{stem}.{region}.png", optimize=True)
        (folder / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "spitz-fur")
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--preview", action="store_true", help="redraw the README pictures with furlora's preview code")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    write_split(args.out, "train", args.train)
    write_split(args.out, "heldout", args.heldout)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.train} + {args.heldout} dogs to {args.out} ({total / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")
    if args.preview:
        write_readme_pictures(args.out / "train", Path(__file__).resolve().parent)
    return 0


def write_readme_pictures(train: Path, folder: Path) -> None:
    """The contact sheet and one four-panel sample shown in datasets/README.md (needs furlora)."""
    from furlora.data.dataset import MaskedDataset
    from furlora.data.preview import contact_sheet, sample_panels
    from furlora.data.settings import DataSettings

    ds = MaskedDataset(DataSettings(resolution=256), train)
    samples = [ds.sample(i, 0, augment=False) for i in range(len(ds))]
    contact_sheet(samples, cell=128, columns=8).save(folder / "spitz-fur-preview.png", optimize=True)
    augmented = MaskedDataset(
        DataSettings(resolution=256, region_weights={"chest": 0.6, "paws": 0.3}, augment={"rotate_deg": 8.0, "zoom": (1.0, 1.3)}), train, seed=1
    )
    sample_panels(augmented.sample(3, 1)).save(folder / "spitz-fur-sample.png", optimize=True)
    print(f"wrote {folder / 'spitz-fur-preview.png'} and {folder / 'spitz-fur-sample.png'}")


if __name__ == "__main__":
    sys.exit(main())
