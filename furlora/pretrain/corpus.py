"""A procedural pretraining corpus: generic textures, shapes and animal silhouettes with captions.

Every picture is a pure function of ``(seed, index)``: the same call always draws the same
image, caption, crop and inpainting mask, on any machine. The corpus deliberately holds no fur
photographs and no strand-like texture, so that a fur LoRA trained later on top of a model
pretrained here has something of its own to learn.

Scenes are drawn with Pillow at a random "original" size and randomly cropped to the training
size, so the SDXL micro-conditioning (original size, crop top-left, target size) sees real,
varied values. About a fifth of the scenes are turned to grey scale (captioned "black and
white"), since furlora's first users restore monochrome photographs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "green": (50, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 200, 40),
    "brown": (120, 80, 40),
    "black": (20, 20, 20),
    "white": (235, 235, 235),
    "grey": (128, 128, 128),
    "cream": (240, 225, 190),
    "orange": (235, 130, 30),
    "purple": (120, 50, 150),
}
SHAPES = ("circle", "square", "triangle", "ellipse", "ring")
ANIMALS = ("dog", "cat", "bird", "rabbit")
BACKGROUNDS = ("plain", "gradient", "stripes", "checker", "dots", "noise", "grass")


@dataclass(frozen=True)
class CorpusSample:
    """One drawn scene.

    ``pixels``: float32 [3, S, S] in [-1, 1]; ``inpaint_mask``: float32 [1, S, S] binary
    (1 = region to repaint); ``caption``: str; ``original_size`` (h, w), ``crop_top_left``
    (top, left) and ``target_size`` (h, w): the SDXL micro-conditioning of the crop.
    """

    pixels: torch.Tensor
    inpaint_mask: torch.Tensor
    caption: str
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    target_size: tuple[int, int]


class ProceduralCorpus:
    """An endless, seeded corpus of ``size`` x ``size`` captioned scenes.

    ``full_mask_fraction``: share of inpainting masks that cover the whole picture (the model
    then learns plain generation through the inpainting inputs, as SDXL inpainting models do).
    """

    def __init__(self, seed: int, size: int = 128, full_mask_fraction: float = 0.15) -> None:
        if size % 8:
            raise ValueError(f"corpus size {size} must be a multiple of 8 (the VAE downsamples 8x)")
        self.seed = seed
        self.size = size
        self.full_mask_fraction = full_mask_fraction

    def __getitem__(self, index: int) -> CorpusSample:
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        original = int(rng.choice([s, s + s // 4, s + s // 2]))
        image, caption = draw_scene(rng, original)
        top = int(rng.integers(0, original - s + 1))
        left = int(rng.integers(0, original - s + 1))
        crop = image[top : top + s, left : left + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        pixels = torch.from_numpy(np.array(crop, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        mask = random_inpaint_mask(rng, s, self.full_mask_fraction)
        return CorpusSample(
            pixels=pixels,
            inpaint_mask=torch.from_numpy(mask)[None],
            caption=caption,
            original_size=(original, original),
            crop_top_left=(top, left),
            target_size=(s, s),
        )

    def batch(self, indices: list[int]) -> dict[str, object]:
        """Stacked samples: ``pixel_values`` [B,3,S,S], ``inpaint_mask`` [B,1,S,S],
        ``masked_pixel_values`` [B,3,S,S] (hole set to 0), ``captions``, ``time_ids`` float32 [B,6]."""
        from furlora.models.conditioning import batch_micro_conditioning

        samples = [self[i] for i in indices]
        pixels = torch.stack([x.pixels for x in samples])
        mask = torch.stack([x.inpaint_mask for x in samples])
        return {
            "pixel_values": pixels,
            "inpaint_mask": mask,
            "masked_pixel_values": pixels * (1.0 - mask),
            "captions": [x.caption for x in samples],
            "time_ids": batch_micro_conditioning(
                [x.original_size for x in samples],
                [x.crop_top_left for x in samples],
                [x.target_size for x in samples],
            ),
        }


# ----------------------------------------------------------------------------- drawing

def draw_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A scene as uint8 [size, size, 3] and its caption."""
    from PIL import Image, ImageDraw

    bg_kind = str(rng.choice(BACKGROUNDS))
    bg_name, bg_colour = _colour(rng)
    canvas = _background(rng, bg_kind, bg_colour, size)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    roll = rng.random()
    if roll < 0.4:
        fg_name, fg_colour = _colour(rng, avoid=bg_name)
        kind = str(rng.choice(ANIMALS))
        _draw_animal(draw, rng, kind, fg_colour, size)
        subject = f"a {fg_name} {kind} silhouette"
    elif roll < 0.85:
        count = int(rng.integers(1, 4))
        names = []
        for _ in range(count):
            fg_name, fg_colour = _colour(rng, avoid=bg_name)
            shape = str(rng.choice(SHAPES))
            _draw_shape(draw, rng, shape, fg_colour, size)
            names.append(f"{fg_name} {shape}")
        subject = "a " + " and a ".join(names)
    else:
        subject = "a texture"
    bg_text = {
        "plain": f"a {bg_name} background",
        "gradient": f"a {bg_name} gradient",
        "stripes": f"{bg_name} stripes",
        "checker": f"a {bg_name} checker pattern",
        "dots": f"{bg_name} dots",
        "noise": f"{bg_name} noise",
        "grass": "grass",
    }[bg_kind]
    caption = bg_text if subject == "a texture" else f"{subject} on {bg_text}"
    pixels = np.asarray(image, dtype=np.uint8)
    if rng.random() < 0.2:
        grey = (pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
        pixels = np.repeat(grey[..., None], 3, axis=2)
        caption = f"black and white photo, {caption}"
    return pixels, caption


def _colour(rng: np.random.Generator, avoid: str | None = None) -> tuple[str, tuple[int, int, int]]:
    names = [n for n in COLOURS if n != avoid]
    name = str(rng.choice(names))
    jitter = rng.integers(-20, 21, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[name], jitter))
    return name, rgb  # type: ignore[return-value]


def _background(rng: np.random.Generator, kind: str, colour: tuple[int, int, int], size: int) -> np.ndarray:
    """uint8 [size, size, 3] background of one kind in (mostly) one colour."""
    base = np.array(colour, np.float32)
    other = np.array(_colour(rng)[1], np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "plain":
        t = np.zeros((size, size), np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.08, 0.3)
        t = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        cells = int(rng.integers(3, 10))
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    elif kind == "dots":
        cells = rng.uniform(5, 12)
        fx, fy = (xx * cells) % 1 - 0.5, (yy * cells) % 1 - 0.5
        t = ((fx**2 + fy**2) < rng.uniform(0.03, 0.12)).astype(np.float32)
    elif kind == "noise":
        t = _smooth_noise(rng, size, cells=int(rng.integers(4, 16)))
    else:  # grass: green blades of smooth noise, no fur-like strands
        base, other = np.array((40, 110, 40), np.float32), np.array((110, 170, 60), np.float32)
        t = _smooth_noise(rng, size, cells=int(rng.integers(8, 24)))
    image = base[None, None] * (1 - t[..., None]) + other[None, None] * t[..., None]
    image += rng.normal(0, 3.0, size=image.shape).astype(np.float32)  # faint sensor-like grain
    return np.clip(image, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1], float32 [size, size]: a coarse random grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, endpoint=False, dtype=np.float32)
    i = pos.astype(np.int64)
    f = pos - i
    f = f * f * (3 - 2 * f)  # smoothstep, so cell edges do not show
    top = grid[i][:, i] * (1 - f[None]) + grid[i][:, i + 1] * f[None]
    bottom = grid[i + 1][:, i] * (1 - f[None]) + grid[i + 1][:, i + 1] * f[None]
    return top * (1 - f[:, None]) + bottom * f[:, None]


def _draw_shape(draw: object, rng: np.random.Generator, shape: str, colour: tuple[int, int, int], size: int) -> None:
    r = rng.uniform(0.1, 0.3) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=colour)  # type: ignore[attr-defined]
    elif shape == "square":
        draw.rectangle(box, fill=colour)  # type: ignore[attr-defined]
    elif shape == "ellipse":
        ry = r * rng.uniform(0.4, 0.8)
        draw.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=colour)  # type: ignore[attr-defined]
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r * 0.3)))  # type: ignore[attr-defined]
    else:
        a = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3)) for k in range(3)]
        draw.polygon(pts, fill=colour)  # type: ignore[attr-defined]


def _draw_animal(draw: object, rng: np.random.Generator, kind: str, colour: tuple[int, int, int], size: int) -> None:
    """A flat side-view silhouette built from ellipses and polygons (no fur)."""
    scale = rng.uniform(0.55, 0.85) * size
    cx = rng.uniform(0.4, 0.6) * size
    cy = rng.uniform(0.5, 0.65) * size
    facing = 1 if rng.random() < 0.5 else -1

    def ell(x: float, y: float, rx: float, ry: float) -> None:
        draw.ellipse([cx + facing * x * scale - rx * scale, cy + y * scale - ry * scale,  # type: ignore[attr-defined]
                      cx + facing * x * scale + rx * scale, cy + y * scale + ry * scale], fill=colour)

    def poly(points: list[tuple[float, float]]) -> None:
        draw.polygon([(cx + facing * x * scale, cy + y * scale) for x, y in points], fill=colour)  # type: ignore[attr-defined]

    def leg(x: float, top: float, length: float, width: float) -> None:
        poly([(x - width, top), (x + width, top), (x + width, top + length), (x - width, top + length)])

    if kind == "bird":
        ell(0.0, 0.0, 0.22, 0.13)
        ell(0.22, -0.12, 0.09, 0.08)
        poly([(0.3, -0.14), (0.4, -0.11), (0.3, -0.09)])
        poly([(-0.2, -0.02), (-0.42, -0.1), (-0.4, 0.05)])
        leg(0.02, 0.1, 0.14, 0.012)
        leg(-0.05, 0.1, 0.14, 0.012)
    elif kind == "rabbit":
        ell(-0.05, 0.05, 0.22, 0.16)
        ell(0.18, -0.1, 0.1, 0.09)
        ell(0.15, -0.3, 0.03, 0.13)
        ell(0.22, -0.3, 0.03, 0.13)
        ell(-0.27, 0.02, 0.05, 0.05)
        ell(0.08, 0.2, 0.08, 0.03)
    else:  # dog or cat: body, head, ears, four legs, tail
        ell(0.0, 0.0, 0.28, 0.12)
        head_r = 0.1 if kind == "dog" else 0.085
        ell(0.3, -0.16, head_r, head_r * 0.9)
        if kind == "dog":
            ell(0.4, -0.13, 0.07, 0.04)  # muzzle
            ell(0.25, -0.24, 0.035, 0.07)  # floppy ear
        else:
            poly([(0.24, -0.22), (0.27, -0.33), (0.31, -0.22)])
            poly([(0.32, -0.22), (0.36, -0.32), (0.38, -0.2)])
        for x in (-0.2, -0.12, 0.12, 0.2):
            leg(x, 0.05, 0.25, 0.03)
        if kind == "dog":
            poly([(-0.26, -0.05), (-0.4, -0.22), (-0.36, -0.24), (-0.22, -0.08)])
        else:
            poly([(-0.26, 0.0), (-0.44, 0.05), (-0.46, -0.25), (-0.42, -0.25), (-0.4, 0.0)])


# ----------------------------------------------------------------------------- masks

def random_inpaint_mask(rng: np.random.Generator, size: int, full_fraction: float) -> np.ndarray:
    """Binary float32 [size, size] mask, 1 = repaint: full, rectangles, ellipses or brush strokes."""
    from PIL import Image, ImageDraw

    if rng.random() < full_fraction:
        return np.ones((size, size), np.float32)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.random()
        w, h = rng.uniform(0.15, 0.6, size=2) * size
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        if kind < 0.35:
            draw.rectangle([x, y, x + w, y + h], fill=255)
        elif kind < 0.7:
            draw.ellipse([x, y, x + w, y + h], fill=255)
        else:
            points = [tuple(rng.uniform(0, size, size=2))]
            for _ in range(int(rng.integers(3, 7))):
                step = rng.uniform(-0.3, 0.3, size=2) * size
                points.append(tuple(np.clip(np.array(points[-1]) + step, 0, size)))
            draw.line(points, fill=255, width=int(rng.uniform(0.06, 0.15) * size), joint="curve")
    return (np.asarray(image) > 127).astype(np.float32)
