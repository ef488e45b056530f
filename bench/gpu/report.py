"""The check's outputs: one JSON file with every measurement and one Markdown table."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

SCHEMA = 1
TOP_FIELDS: tuple[str, ...] = (
    "schema", "created_utc", "commit", "command", "size", "environment", "levers", "budget",
    "presets", "compare", "lora_check", "notes",
)
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "pydantic",
            "albumentations", "bitsandbytes", "opencv-python-headless")
GiB = 1 << 30


def commit_of(repo: Path) -> str:
    """The checked-out commit (``FURLORA_COMMIT`` where the copy has no .git, e.g. the GPU machine)."""
    import os

    if os.environ.get("FURLORA_COMMIT"):
        return os.environ["FURLORA_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    env: dict[str, Any] = {
        "python": platform.python_version(), "device": str(device), "gpu": None, "capability": None,
        "gpu_memory_bytes": None, "cuda": torch.version.cuda, "cpu_count": __import__("os").cpu_count(),
        "packages": packages,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_bytes=int(props.total_memory))
    return env


def _gib(value: Any) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _num(value: Any, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    gpu = env["gpu"] or f"CPU ({env['cpu_count']} cores)"
    lines = [
        f"GPU check: {gpu}, {report['size']} SDXL, commit {report['commit']}, {report['created_utc']}",
        "",
        "| GPU | preset | px | steps | s/step | peak alloc GiB | peak reserved GiB | planned GiB | ratio | "
        "caching s | ckpt blocked s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["presets"]:
        steps = "-" if r["steps_run"] is None else f"{r['steps_run']}/{r['steps_requested']}"
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        lines.append(
            f"| {gpu} | {r['preset']} | {r['resolution'] or '-'} | {steps} | {_num(r['seconds_per_step'])} | "
            f"{_gib(r['peak_allocated_bytes'])} | {_gib(r['peak_reserved_bytes'])} | {_gib(r['planned_bytes'])} | "
            f"{_num(r['ratio_reserved_to_planned'], '.2f')} | {_num(r['caching_seconds'], '.1f')} | "
            f"{_num(r['checkpoint_blocked_seconds'], '.2f')} | {status} |"
        )
    c = report["compare"]
    lines += ["", f"compare ({c['preset'] or '-'}): {c['status']}"
              + (f", {c['images']} images x {len(c['variants'] or [])} variants x {c['passes']} passes "
                 f"({c['steps_per_pass']} steps at strength 1), {_num(c['seconds_per_image'], '.2f')} s/image"
                 if c["status"] == "ok" else "") + (f" ({c['reason']})" if c["reason"] else "")]
    k = report["lora_check"]
    detail = ""
    if k["amplified"]:
        detail = (f", mismatch {k['amplified']['mismatch_rel']:.2e} of the LoRA effect (amplified), "
                  f"{k['trained']['mismatch_rel']:.2e} (trained), tolerance {k['tolerance']:g}")
    lines.append(f"diffusers LoRA round trip: {k['status']}{detail}" + (f" ({k['reason']})" if k["reason"] else ""))
    lines.append(f"budget: {_num(report['budget']['used_seconds'], '.0f')} s of "
                 f"{_num(report['budget']['total_seconds'], '.0f')} s; skipped: {'; '.join(report['budget']['skipped']) or 'nothing'}")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "gpu_check.json"
    md_path = out_dir / "gpu_check.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path
