"""The prepared GPU check runs on the CPU with the tiny models, so it cannot rot before a GPU is at hand.

One preset, two steps and the comparison on one held-out image: every field of the JSON the GPU
run will fill must be there, with the values a CPU run can measure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"

TOP_FIELDS = {"schema", "created_utc", "commit", "command", "size", "environment", "levers", "budget",
              "presets", "compare", "lora_check", "notes"}
PRESET_FIELDS = {
    "preset", "status", "reason", "model", "resolution", "steps_requested", "steps_run", "warmup_steps",
    "seconds_per_step", "seconds_per_step_mean", "time_to_first_step_seconds", "compile_seconds",
    "tail_seconds", "build_seconds", "setup_seconds", "total_seconds",
    "peak_allocated_bytes", "peak_reserved_bytes", "planned_bytes", "plan_seconds",
    "ratio_reserved_to_planned", "ratio_allocated_to_planned",
    "caching_seconds", "cache_pass_seconds", "vae_encodes", "cache_hits", "cache_misses",
    "checkpoints", "checkpoint_blocked_seconds", "checkpoint_blocked_share",
    "optimizer", "mixed_precision", "gradient_checkpointing", "final_loss", "overrides", "notes",
}
COMPARE_FIELDS = {"status", "reason", "preset", "images", "passes", "steps_per_pass", "working_resolution",
                  "variants", "seconds_total", "seconds_per_image", "seconds_per_image_variant", "report"}
LORA_FIELDS = {"status", "reason", "file", "components", "modules", "latent_size", "tolerance", "trained", "amplified"}
MATCH_FIELDS = {"effect_rel", "mismatch_rel", "max_abs_diff", "finite"}


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=540, check=False)


def test_gpu_check_tiny_on_cpu_writes_every_field(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "out"
    proc = _run([
        "--device", "cpu", "--size", "tiny", "--out", str(out), "--presets", "paper-table1",
        "--steps", "2", "--warmup-steps", "1", "--compare-images", "1", "--compare-steps", "4",
        # Smoke-run sizes: the cache pass and the sample grids have their own tests.
        "--set", "train.cache_latents=false", "--set", "train.validation.sample_images=false",
    ], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report) == TOP_FIELDS
    assert report["size"] == "tiny" and report["environment"]["device"] == "cpu"
    assert report["budget"]["skipped"] == []

    (preset,) = report["presets"]
    assert set(preset) == PRESET_FIELDS
    assert preset["preset"] == "paper-table1" and preset["status"] == "ok", preset
    assert preset["resolution"] == 64  # 512 px preset, tiny model at 1/8
    assert preset["steps_run"] == preset["steps_requested"] == 2
    assert preset["seconds_per_step"] > 0 and preset["time_to_first_step_seconds"] > 0
    assert preset["planned_bytes"] > 0
    # A checkpoint after each step (--checkpoint-every 1), counted by the wrapped save.
    assert preset["checkpoints"] >= 2 and preset["checkpoint_blocked_seconds"] >= 0
    assert preset["caching_seconds"] > 0  # no cache: every micro-step encodes
    # CUDA-only measurements stay empty on the CPU instead of holding made-up numbers.
    assert preset["peak_allocated_bytes"] is None and preset["ratio_reserved_to_planned"] is None
    assert preset["compile_seconds"] is None
    assert "train.optimizer=adamw" in preset["overrides"]  # the preset's adamw8bit, replaced on the CPU
    assert any("checkpoint every 1" in n for n in preset["notes"])

    check = report["lora_check"]
    assert set(check) == LORA_FIELDS and check["status"] == "ok", check
    assert set(check["trained"]) == MATCH_FIELDS and set(check["amplified"]) == MATCH_FIELDS
    assert check["modules"] > 0 and check["components"] == ["unet"]
    assert check["file"] == "paper-table1.diffusers.safetensors" and check["reason"] is None  # the run's export
    # The amplified LoRA changes the output visibly, and diffusers reproduces furlora's forward.
    assert check["amplified"]["effect_rel"] > 0.01
    assert check["amplified"]["mismatch_rel"] <= check["tolerance"]

    compare = report["compare"]
    assert set(compare) == COMPARE_FIELDS and compare["status"] == "ok", compare
    assert compare["images"] == 1 and compare["passes"] == 3 and compare["working_resolution"] == 64
    assert compare["variants"][0] == "off" and len(compare["variants"]) == 2
    assert compare["seconds_per_image"] > 0

    table = (out / "gpu_check.md").read_text()
    assert "| paper-table1 | 64 | 2/2 |" in table
    assert "diffusers LoRA round trip: ok" in table
    assert table.splitlines()[2] in proc.stdout  # the table header is printed too


def test_gpu_check_names_an_unknown_preset(tmp_path: Path) -> None:
    proc = _run(["--out", str(tmp_path / "out"), "--presets", "sdxl-12gb,sdxl-99gb"], tmp_path)
    assert proc.returncode == 2
    assert "--presets: no configs/<name>.yaml for sdxl-99gb" in proc.stderr


def test_step_governor_stops_only_when_the_projection_overruns() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from gpu.budget import Budget, StepGovernor
    finally:
        sys.path.remove(str(REPO / "bench"))
    governor = StepGovernor(allowed=10.0, min_steps=3, tail_seconds=1.0, started=0.0)
    import time

    governor.started = time.perf_counter() - 4.0  # 4 s spent
    assert not governor.should_stop(2, 15, 1.0)  # fewer than min_steps: never
    assert governor.should_stop(4, 15, 1.0)  # 4 + 11 * 1 + 1 > 10
    assert not governor.should_stop(4, 8, 1.0)  # 4 + 4 * 1 + 1 <= 10
    assert not governor.should_stop(15, 15, 1.0)  # done anyway
    budget = Budget(100.0, reserve_seconds=20.0)
    assert budget.share(4) == pytest.approx(20.0, abs=0.5)
    assert Budget(None).share(3) == float("inf")
