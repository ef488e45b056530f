"""The comparison report folder: grids (PNG), the metrics table (CSV and JSON) and an HTML page.

::

    OUT/index.html            everything on one page (open it in a browser)
    OUT/metrics.csv           one row per image x seed x variant
    OUT/metrics.json          the same rows, the per-variant means, passes and variants
    OUT/grids/<key>_s<seed>.png
    OUT/images/<key>/<variant>_s<seed>.png   full-resolution outputs (report.save_images)
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

from furlora.eval.metrics import finite_mean
from furlora.eval.region_summary import BASE, region_html

#: Metrics shown first (and in the grid captions / HTML summary), in this order.
MAIN_METRICS = ("psnr", "ssim", "colour_error", "delta_e", "seam_error", "seam_error_input", "detail_ratio", "colour_shift", "drift_max", "drift_pixels")
ID_COLUMNS = ("sample", "seed", "variant")


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Metric names of the rows: the main ones first, then whole-mask extras, then per-region ones."""
    names = {k for row in rows for k in row if k not in ID_COLUMNS}
    main = [m for m in MAIN_METRICS if m in names]
    rest = sorted(n for n in names if n not in main and not n.startswith("region/"))
    regions = sorted(n for n in names if n.startswith("region/"))
    return main + rest + regions


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """variant -> mean of each metric over images and seeds (non-finite values left out)."""
    columns = metric_columns(rows)
    return {variant: {name: finite_mean([float(r[name]) for r in rows if r["variant"] == variant and name in r])
                      for name in columns}
            for variant in dict.fromkeys(r["variant"] for r in rows)}


def json_safe(value: Any) -> Any:
    """JSON-safe: nan becomes None, +-inf "inf" / "-inf", inside dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_tables(out_dir: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> tuple[Path, Path]:
    """Write metrics.csv and metrics.json; returns their paths."""
    columns = list(ID_COLUMNS) + metric_columns(rows)
    csv_path = out_dir / "metrics.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    json_path = out_dir / "metrics.json"
    payload = {"rows": rows, "summary": summarize(rows), **extra}
    json_path.write_text(json.dumps(json_safe(payload), indent=2), encoding="utf-8")
    return csv_path, json_path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(header: list[str], body: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; background: #181818; color: #e8e8e8; margin: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #444; padding: 0.25em 0.6em; text-align: right; }
th { background: #2a2a2a; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #333; }
code, .note { color: #aaa; }
"""

_GUIDE = (
    "psnr / ssim: closeness to the input inside the mask (higher = closer). "
    "colour_error: CIE76 deltaE between the mean Lab colours of output and input inside the mask "
    "(a colour cast; about 2.3 is just noticeable); delta_e: mean per-pixel deltaE (colour and texture). "
    "seam_error: gradient on the blend border / gradient beside it (about 1 = invisible seam; "
    "compare with seam_error_input, the same measure on the input). "
    "detail_ratio: fine-detail energy inside the mask relative to the input (&lt; 1 = fur smoothed). "
    "colour_shift: change of the inside-vs-surroundings colour contrast. "
    "drift_*: change outside the blend band (must be 0)."
)


def write_html(out_dir: Path, title: str, rows: list[dict[str, Any]], grids: list[tuple[str, Path]],
               extra: dict[str, Any]) -> Path:
    """Write index.html: settings, the per-variant summary, then each grid with its rows."""
    summary = summarize(rows)
    main = [m for m in MAIN_METRICS if any(m in r for r in rows)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>", f"<p class='note'>{_GUIDE}</p>"]
    parts.append(f"<p>Model: <code>{html.escape(str(extra.get('model', '')))}</code>; LoRA files: "
                 f"<code>{html.escape(', '.join(extra.get('loras', [])) or 'none')}</code>; "
                 + (f"embeddings <code>{html.escape(', '.join(extra['embeddings']))}</code> (tokens "
                    f"<code>{html.escape(' '.join(extra.get('tokens', [])))}</code> in the prompts of the "
                    "<code>token</code> / <code>+token</code> variants); " if extra.get("embeddings") else "")
                 + "seeds "
                 f"<code>{html.escape(str(extra.get('seeds', '')))}</code>. "
                 "Tables: <a href='metrics.csv'>metrics.csv</a>, <a href='metrics.json'>metrics.json</a>.</p>")
    keys = ["strength", "steps", "guidance_scale", "grow", "feather", "crop_to_mask", "tile", "refiner"]
    passes = [[i] + [p[k] for k in keys] for i, p in enumerate(extra["passes"])]  # eval.passes is never empty
    parts.append("<h2>Passes</h2>" + _table(["pass"] + keys, passes))
    parts.append("<h2>Mean per variant</h2>" + _table(["variant"] + main, [[v] + [s.get(m, float("nan")) for m in main]
                                                                             for v, s in summary.items()]))
    if any(r["variant"] != BASE for r in rows) and any(r["variant"] == BASE for r in rows):
        parts.append("<h2>Base vs LoRA, per region</h2>" + region_html(rows))
    for label, grid in grids:
        parts.append(f"<h2>{html.escape(label)}</h2><img src='{html.escape(grid.relative_to(out_dir).as_posix())}' alt='{html.escape(label)}'>")
        sample, _, seed = label.rpartition(" seed ")
        chosen = [r for r in rows if str(r["sample"]) == sample and str(r["seed"]) == seed]
        parts.append(_table(["variant"] + main, [[r["variant"]] + [r.get(m, float("nan")) for m in main] for r in chosen]))
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
