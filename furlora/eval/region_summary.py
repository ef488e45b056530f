"""Base vs LoRA, region by region: the comparison's metrics regrouped for reading side by side.

The comparison report (:mod:`furlora.eval.compare`) measures every repaint on the whole mask and
on each region mask (``region/<name>/<metric>`` columns). This module turns those rows into the
table a reader wants first: for each region (``all`` = the whole mask, then face, chest, ...)
and each headline metric, the mean of the base model and of each LoRA variant, and on how many
images a variant beat the base.
"""

from __future__ import annotations

import html
import math
from typing import Any

from furlora.eval.lora_variants import OFF
from furlora.eval.metrics import finite_mean

#: Metrics compared per region, their labels, and whether higher is better.
REGION_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("psnr", "PSNR dB", True),
    ("ssim", "SSIM", True),
    ("colour_error", "colour error (deltaE of mean Lab)", False),
    ("delta_e", "mean deltaE", False),
)
#: The whole mask, listed before the named regions.
ALL = "all"
#: The variant name of the base model in the comparison rows.
BASE = OFF.name


def region_names(rows: list[dict[str, Any]]) -> list[str]:
    """``all`` followed by every region that has metrics in ``rows``, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith("region/"):
                names[key.split("/")[1]] = None
    return [ALL, *names]


def variants_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(r["variant"]) for r in rows))


def region_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """region -> metric -> variant -> mean over images and seeds (non-finite values left out)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    variants = variants_of(rows)
    for region in region_names(rows):
        for metric, _, _ in REGION_METRICS:
            key = metric if region == ALL else f"region/{region}/{metric}"
            means = {v: finite_mean([float(r[key]) for r in rows if r["variant"] == v and key in r]) for v in variants}
            if any(math.isfinite(m) for m in means.values()):
                table.setdefault(region, {})[metric] = means
    return table


def wins(rows: list[dict[str, Any]], variant: str, metric: str = "psnr", base: str = BASE) -> tuple[int, int]:
    """(images where ``variant`` beats ``base`` on the whole-mask ``metric``, images compared).

    An image counts once (its seeds averaged); "beats" follows the metric's direction.
    """
    higher = next((h for m, _, h in REGION_METRICS if m == metric), True)
    per_image: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["variant"] in (variant, base) and metric in row:
            per_image.setdefault(str(row["sample"]), {}).setdefault(str(row["variant"]), []).append(float(row[metric]))
    better = total = 0
    for values in per_image.values():
        if variant in values and base in values:
            total += 1
            delta = finite_mean(values[variant]) - finite_mean(values[base])
            better += int(delta > 0 if higher else delta < 0)
    return better, total


def region_lines(rows: list[dict[str, Any]], base: str = BASE) -> list[str]:
    """A plain-text table: one line per region and metric, base first, then each variant with its change."""
    table = region_table(rows)
    others = [v for v in variants_of(rows) if v != base]
    width = max((len(r) for r in table), default=6)
    lines = []
    for region, metrics in table.items():
        for metric, label, _ in REGION_METRICS:
            if metric not in metrics:
                continue
            means = metrics[metric]
            cells = [f"{base} {means.get(base, float('nan')):.4g}"]
            for v in others:
                value = means.get(v, float("nan"))
                cells.append(f"{v} {value:.4g} ({value - means.get(base, float('nan')):+.3g})")
            lines.append(f"{region:<{width}}  {label}: " + ", ".join(cells))
    return lines


def region_html(rows: list[dict[str, Any]], base: str = BASE) -> str:
    """An HTML table (region x metric rows, one column per variant) for the report page."""
    table = region_table(rows)
    variants = variants_of(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["region", "metric", *variants])
    body = []
    for region, metrics in table.items():
        for metric, label, _ in REGION_METRICS:
            if metric in metrics:
                cells = "".join(f"<td>{metrics[metric].get(v, float('nan')):.4g}</td>" for v in variants)
                body.append(f"<tr><td>{html.escape(region)}</td><td>{html.escape(label)}</td>{cells}</tr>")
    counts = [f"{html.escape(v)} better than {html.escape(base)} (PSNR) on {b} of {t} images"
              for v in variants if v != base for b, t in [wins(rows, v, "psnr", base)]]
    note = f"<p>{'; '.join(counts)}.</p>" if counts else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"
