"""Orchestration of the GPU check: presets in order within the time budget, then the outputs."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from gpu.budget import Budget
from gpu.compare import empty_compare, run_compare
from gpu.levers import SDPA_CHOICES, Levers, apply_global
from gpu.lora_check import empty_check, lora_round_trip
from gpu.presets import (
    PRESETS,
    RunOptions,
    add_plan,
    describe,
    empty_result,
    free_device,
    plan_run,
    prepare,
    run_preset,
)
from gpu.report import SCHEMA, commit_of, environment, markdown, write

REPO = Path(__file__).resolve().parents[2]
logger = logging.getLogger("gpu_check")

#: Seconds one run may take on a GPU: the device machine gives one command 10 minutes, and the
#: wheel install, interpreter start and result copy need the rest.
DEFAULT_BUDGET_GPU = 450.0
#: Held back for the comparison and the LoRA check until they ran.
COMPARE_RESERVE_GPU = 60.0
#: A preset whose fair share is below this is skipped rather than started.
MIN_PRESET_GPU = 25.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/gpu_check.py",
        description="Real-size SDXL presets on an accelerator: s/step, peak memory vs the planner, caching and "
                    "checkpoint time, the comparison and a diffusers LoRA round trip, in one budgeted run.",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json, gpu_check.md and the log")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    p.add_argument("--size", choices=("real", "tiny"), default="real", help="real-size SDXL or the tiny models")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma list, run in this order (default {','.join(PRESETS)})")
    p.add_argument("--steps", type=int, default=15, help="optimizer steps per preset")
    p.add_argument("--warmup-steps", type=int, default=3, help="steps left out of s/step")
    p.add_argument("--checkpoint-every", type=int, default=1, help="checkpoint every N steps (measures blocking)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help=f"time budget of the whole check (default {DEFAULT_BUDGET_GPU:.0f} on a GPU, none on the CPU)")
    p.add_argument("--compare-preset", default="sdxl-inpainting", help="preset whose LoRA the comparison uses")
    p.add_argument("--compare-images", type=int, default=2)
    p.add_argument("--compare-steps", type=int, default=10, help="scheduler steps of each pass at strength 1")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison and the LoRA round trip")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls/convs (fp32 VAE)")
    p.add_argument("--sdpa", choices=SDPA_CHOICES, default="auto", help="restrict SDPA to one backend")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (compile time reported apart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every preset after the check's own (repeatable)")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder for runs and checkpoints (default: temporary)")
    args = p.parse_args(argv)
    args.presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    unknown = [x for x in args.presets if not (REPO / "configs" / f"{x}.yaml").is_file()]
    if unknown:
        p.error(f"--presets: no configs/<name>.yaml for {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if args.steps < 1 or args.warmup_steps < 0 or args.checkpoint_every < 0 or args.compare_images < 1:
        p.error("--steps and --compare-images must be >= 1, --warmup-steps and --checkpoint-every >= 0")
    return args


def pick_device(name: str) -> torch.device:
    """furlora's own device choice (auto = the GPU when present); a missing GPU is a usage error."""
    from furlora.errors import ConfigError
    from furlora.models.device import pick_device as furlora_pick_device

    try:
        return furlora_pick_device(name, key="--device")
    except ConfigError as exc:
        raise SystemExit(f"bench/gpu_check.py: {exc}") from None


def _logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(out / "gpu_check.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    console.addFilter(lambda record: record.name == "gpu_check" or record.levelno >= logging.ERROR)
    console.setFormatter(logging.Formatter("[gpu_check %(asctime)s] %(message)s", "%H:%M:%S"))
    root.addHandler(console)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    _logging(args.out)
    levers = Levers(tf32=args.tf32, sdpa=args.sdpa, channels_last=args.channels_last, compile=args.compile)
    env = environment(device)
    env["sdpa"] = apply_global(levers, device)
    total = args.budget_seconds if args.budget_seconds is not None else (DEFAULT_BUDGET_GPU if device.type == "cuda" else None)
    compare_wanted = not args.no_compare
    budget = Budget(total, reserve_seconds=COMPARE_RESERVE_GPU if compare_wanted and total is not None else 0.0)
    min_preset = MIN_PRESET_GPU if total is not None else 0.0
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="furlora-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    options = RunOptions(args.size, device, args.steps, args.warmup_steps, args.checkpoint_every, work, levers,
                         REPO / "configs", tuple(args.overrides))
    # The comparison needs an inpainting-capable LoRA: by default the sdxl-inpainting preset's.
    compare_preset = args.compare_preset if args.compare_preset in args.presets else args.presets[0]
    compare, check = empty_compare(), empty_check()
    notes: list[str] = []
    if args.no_compare:
        compare["reason"] = check["reason"] = "--no-compare"
    else:
        compare["reason"] = check["reason"] = f"preset {compare_preset} did not finish"

    def after_fit(trainer: Any) -> None:
        nonlocal compare, check
        budget.reserve_seconds = 0.0
        logger.info("LoRA round trip through diffusers on %s", device)
        pipe = None
        try:
            check, pipe = lora_round_trip(trainer, work, device)
        except Exception as exc:  # noqa: BLE001 - recorded, the rest of the check goes on
            check = {**empty_check(), "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            logger.error("LoRA round trip failed:\n%s", traceback.format_exc())
        logger.info("LoRA round trip: %s", check["status"])
        # The run's exported diffusers file (the round trip saves one itself when the run wrote none).
        lora_file = trainer.files.get("diffusers") or str(work / "lora-check-trained.safetensors")
        res = int(trainer.run.config.data.resolution)
        logger.info("comparison: %d held-out images, 3 passes", args.compare_images)
        try:
            compare = run_compare(
                pipe if pipe is not None else trainer.components, lora_file, str(REPO / "datasets/spitz-fur/heldout"),
                trainer.run.config.data, work / "compare", images=args.compare_images, steps=args.compare_steps,
                resolution=res, device=device, preset=trainer.run.config.name,
            )
        except Exception as exc:  # noqa: BLE001
            compare = {**empty_compare(), "status": "failed", "preset": compare_preset,
                       "reason": f"{type(exc).__name__}: {exc}"}
            logger.error("comparison failed:\n%s", traceback.format_exc())
        logger.info("comparison: %s", compare["status"])

    prepared, results = {}, []
    for preset in args.presets:
        try:
            prepared[preset] = prepare(preset, options)
        except Exception as exc:  # noqa: BLE001 - e.g. a preset that no longer validates
            failed = empty_result(preset)
            failed.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            results.append(failed)
            logger.error("%s: cannot prepare: %s", preset, exc)
    # The planner predicts each run on spare CPU cores while the device trains.
    planner = ProcessPoolExecutor(max_workers=max(1, min(len(prepared) or 1, (os.cpu_count() or 2) - 1)),
                                  mp_context=multiprocessing.get_context("spawn"))
    plans = {p: planner.submit(plan_run, prepared[p].config, device.type) for p in prepared}
    runnable = list(prepared)
    for index, preset in enumerate(runnable):
        share = budget.share(len(runnable) - index)
        if share < min_preset:
            result = describe(prepared[preset], options)
            result["reason"] = f"time budget: {max(0.0, share):.0f} s left for it"
            budget.skip(preset, result["reason"])
            results.append(result)
            logger.info("%s: skipped (%s)", preset, result["reason"])
            continue
        logger.info("%s: training (%s s budget share)", preset, "unlimited" if total is None else f"{share:.0f}")
        try:
            result = run_preset(prepared[preset], options, share, after_fit if compare_wanted and preset == compare_preset else None)
        except Exception as exc:  # noqa: BLE001 - one preset's failure is a result, not the end of the check
            result = describe(prepared[preset], options)
            result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            logger.error("%s failed:\n%s", preset, traceback.format_exc())
            free_device(device)
        results.append(result)
        logger.info("%s: %s, %s s/step, peak reserved %s", preset, result["status"],
                    _fmt(result["seconds_per_step"]), _fmt(result["peak_reserved_bytes"], 1 << 30, " GiB"))
    logger.info("waiting for the planner")
    for result in results:
        if result["preset"] in plans:
            add_plan(result, plans[result["preset"]].result())
    planner.shutdown()
    if compare_wanted and compare["status"] == "skipped":
        budget.skip("compare and LoRA round trip", compare["reason"])
    report = {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": commit_of(REPO),
        "command": " ".join(["bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "size": args.size,
        "environment": env,
        "levers": levers.describe(),
        "budget": {"total_seconds": total, "used_seconds": budget.elapsed(), "skipped": budget.skipped},
        "presets": results,
        "compare": compare,
        "lora_check": check,
        "notes": notes,
    }
    json_path, md_path = write(report, args.out)
    print(markdown(report), end="")
    print(f"wrote {json_path} and {md_path}")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if r["status"] == "failed"] or [x for x in (compare, check) if x["status"] == "failed"]
    return 1 if failed else 0


def _fmt(value: Any, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value / scale:.3f}{unit}"

