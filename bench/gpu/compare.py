"""The comparison of the GPU check: ``furlora compare``'s code path (:func:`run_comparison`) on
held-out images with three passes, on the device, with the LoRA the preset just exported."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

COMPARE_FIELDS: tuple[str, ...] = (
    "status", "reason", "preset", "images", "passes", "steps_per_pass", "working_resolution", "variants",
    "seconds_total", "seconds_per_image", "seconds_per_image_variant", "report",
)
#: Three passes, each repainting a crop around the mask at the model's working resolution.
PASSES = ({"strength": 0.8, "feather": 4}, {"strength": 0.5, "feather": 6}, {"strength": 0.3, "feather": 8})


def empty_compare() -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(COMPARE_FIELDS)
    result["status"] = "skipped"
    return result


def run_compare(model: Any, lora_file: str, heldout: str, data_settings: Any, out_dir: Path, *, images: int,
                steps: int, resolution: int, device: torch.device, preset: str) -> dict[str, Any]:
    """Repaint ``images`` held-out images, base vs LoRA, and time it. ``model``: components or a pipeline."""
    from furlora.eval.compare import run_comparison
    from furlora.eval.settings import EvalSettings, PassSettings

    # Every pass must keep at least one denoising step (diffusers runs int(steps * strength)).
    steps = max(steps, math.ceil(1 / min(p["strength"] for p in PASSES)))
    passes = [PassSettings(steps=steps, crop_to_mask=True, working_resolution=resolution, **p) for p in PASSES]
    settings = EvalSettings(passes=passes, max_images=images, seeds=[0], lora_scales=[1.0], progress=False)
    start = time.perf_counter()
    comparison = run_comparison(model, [lora_file], heldout, out_dir, settings, data_settings=data_settings,
                                device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    repainted = len({row["sample"] for row in comparison.rows})
    result = empty_compare()
    result.update(
        status="ok", preset=preset, images=repainted, passes=len(passes), steps_per_pass=steps,
        working_resolution=resolution, variants=list(comparison.variants), seconds_total=seconds,
        seconds_per_image=seconds / max(1, repainted),
        seconds_per_image_variant=seconds / max(1, repainted * len(comparison.variants)),
        report=str(comparison.html),
    )
    if comparison.skipped:
        result["reason"] = "; ".join(comparison.skipped)
    return result
