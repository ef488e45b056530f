"""Stacked-bar pictures of memory plans (PNG, drawn with Pillow: no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

from furlora.memory.estimate import MemoryPlan
from furlora.memory.inputs import GiB

#: Segment colours by row key (resident rows, phases, overhead).
COLOURS: dict[str, tuple[int, int, int]] = {
    "unet": (66, 103, 172),
    "text_encoder": (110, 150, 210),
    "text_encoder_2": (150, 185, 230),
    "vae": (190, 210, 240),
    "lora": (230, 120, 40),
    "gradients": (240, 160, 80),
    "optimizer": (250, 200, 120),
    "ema": (200, 170, 90),
    "train_step": (200, 60, 70),
    "vae_encode": (160, 80, 160),
    "text_encode": (190, 130, 190),
    "sampling": (120, 60, 120),
    "cuda_context": (120, 120, 120),
    "allocator": (170, 170, 170),
    "process": (120, 120, 120),
    "heap": (170, 170, 170),
}


def render_chart(bars: list[tuple[str, MemoryPlan, int | None]], path: str | Path,
                 title: str = "Estimated peak memory") -> Path:
    """Draw one stacked bar per ``(label, plan, capacity_bytes or None)`` and save a PNG.

    Each bar stacks the rows that add up to the plan's total (resident rows, the peak phase,
    overhead); a dashed line marks the capacity. Returns the path written.
    """
    from PIL import Image, ImageDraw

    from furlora.data.preview import load_font

    font, small = load_font(14), load_font(12)
    bar_w, gap, left, top, plot_h = 110, 70, 70, 50, 420
    legend_w = 330
    width = left + len(bars) * (bar_w + gap) + legend_w
    height = top + plot_h + 70
    top_gib = max(max(p.total_bytes, cap or 0) for _, p, cap in bars) / GiB * 1.08
    scale = plot_h / top_gib
    base_y = top + plot_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 12), title, fill="black", font=font)

    step = _tick_step(top_gib)
    tick = 0.0
    while tick <= top_gib:
        y = base_y - tick * scale
        draw.line([(left - 5, y), (left + len(bars) * (bar_w + gap), y)], fill=(225, 225, 225))
        draw.text((8, y - 7), f"{tick:g} GiB", fill="black", font=small)
        tick += step

    used: dict[str, str] = {}
    for i, (label, plan, capacity) in enumerate(bars):
        x0 = left + gap // 2 + i * (bar_w + gap)
        y = float(base_y)
        for item in plan.stacked():
            if item.bytes <= 0:
                continue
            h = item.bytes / GiB * scale
            colour = COLOURS.get(item.key, (90, 90, 90))
            draw.rectangle([x0, y - h, x0 + bar_w, y], fill=colour, outline="white")
            used.setdefault(item.key, item.label)
            y -= h
        draw.text((x0, y - 18), f"{plan.total_bytes / GiB:.1f} GiB", fill="black", font=small)
        if capacity is not None:
            cy = base_y - capacity / GiB * scale
            for dx in range(-10, bar_w + 10, 10):
                draw.line([(x0 + dx, cy), (x0 + dx + 5, cy)], fill=(200, 0, 0), width=2)
            verdict = "fits" if plan.fits(capacity) else "too big"
            draw.text((x0 - 10, cy + 3), f"{capacity / GiB:g} GiB: {verdict}", fill=(200, 0, 0), font=small)
        draw.text((x0, base_y + 8), label, fill="black", font=small)

    lx = left + len(bars) * (bar_w + gap) + 30
    ly = top
    for key, label in used.items():
        draw.rectangle([lx, ly, lx + 14, ly + 14], fill=COLOURS.get(key, (90, 90, 90)))
        draw.text((lx + 20, ly), label, fill="black", font=small)
        ly += 20
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def _tick_step(top_gib: float) -> float:
    for step in (0.5, 1, 2, 4, 5, 10, 20):
        if top_gib / step <= 12:
            return float(step)
    return 50.0
