"""``furlora train CONFIG [--set KEY=VALUE ...] [--resume auto|never|PATH]`` and ``furlora demo``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from furlora.cli.options import add_overrides
from furlora.errors import ConfigError
from furlora.train.state import RunSummary


#: The demo's config, shipped in the project's configs/ folder.
DEMO_CONFIG = "tiny-cpu.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a LoRA from a YAML config (resumes from the newest complete checkpoint by default)",
        description=(
            "Train a LoRA. Checkpoints are written atomically every train.checkpoint.every_n_steps; after a "
            "crash or kill, run the same command again to continue exactly where it stopped."
        ),
    )
    train.epilog = (
        "Stopping: the first Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and exits with 130 / "
        "143 (a second one exits at once); train.max_wall_time stops with a checkpoint before a time limit and exits "
        "with 75. Run the same command again to continue. One run per output_dir: a second one stops at once "
        "naming the process that holds the folder."
    )
    train.add_argument("config", help="YAML run config (see configs/)")
    add_overrides(train, "override a config value, e.g. --set train.max_steps=200 (repeatable)")
    train.add_argument("--resume", default="auto", metavar="auto|never|PATH",
                       help="auto: newest complete checkpoint in the run's folder (default); never: start fresh "
                            "(refuses a folder that holds checkpoints); PATH: that checkpoint folder")
    train.set_defaults(func=_train)

    demo = subparsers.add_parser(
        "demo",
        help="train the tiny inpainting model on the bundled Spitz fur dataset (a few minutes on a CPU)",
        description=(
            "The end-to-end demo: trains a LoRA for the embedded tiny SDXL inpainting model on "
            "datasets/spitz-fur/train, exports diffusers + kohya files, and compares the masked validation "
            "loss with and without the LoRA on the held-out split."
        ),
    )
    demo.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    add_overrides(demo, "override a value of configs/tiny-cpu.yaml")
    demo.add_argument("--resume", default="auto", metavar="auto|never|PATH", help="as for furlora train")
    demo.set_defaults(func=_demo)


def _check_resume(value: str) -> str:
    if value in ("auto", "never"):
        return value
    if not Path(value).exists():
        raise ConfigError(f"--resume {value}: not auto, never, or an existing checkpoint folder")
    return value


def _run(config: Any, resume: str, again: str) -> tuple[RunSummary, int]:
    """Train; returns the summary and the exit status (0, or 143 / 130 / 75 for a stop before max_steps).

    ``again``: the command that continues this run, printed when it stops early.
    """
    from furlora.train.trainer import Trainer

    trainer = Trainer(config, resume=resume)
    summary = trainer.fit()
    if trainer.is_main:
        if trainer.ended is not None:
            _print_stopped(summary, again)
        else:
            _print_summary(summary, trainer.output_dir)
        sys.stdout.flush()  # under a launcher, a sibling process ending may get this one killed next
    return summary, trainer.ended.exit_status if trainer.ended is not None else 0


def _print_stopped(summary: RunSummary, again: str) -> None:
    why = {"signal": f"stopped by {summary.stop_signal}", "time_budget": "stopped by train.max_wall_time"}
    print(f"{why.get(summary.ended, summary.ended)}: {summary.name!r} at step "
          f"{summary.global_step}/{summary.max_steps} (not exported: the run is not finished)")
    print(f"  checkpoint: {summary.checkpoint} in {summary.checkpoint_dir}")
    if summary.processes > 1:
        launcher = f"torchrun --nproc_per_node {summary.processes} -m furlora.cli.main {again[len('furlora '):]}"
        print(f"  resume: run the same launcher command again, e.g. {launcher}")
    else:
        print(f"  resume: {again}")


def _again(command: str, target: str, overrides: list[str], *extra: str) -> str:
    """The command line that continues a stopped run (``--resume auto``, the default, picks its checkpoint)."""
    parts = ["furlora", command, *([target] if target else []), *extra]
    for item in overrides:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts)


def _print_summary(summary: RunSummary, output_dir: Path) -> None:
    print(f"trained {summary.name!r}: step {summary.global_step}/{summary.max_steps}"
          f" ({summary.objective} objective, {summary.skipped_steps} skipped steps), completed")
    if summary.resumed_from:
        print(f"  resumed from {summary.resumed_from}")
    if summary.val_loss is not None:
        base, lora = summary.val_loss_base, summary.val_loss
        line = f"  masked validation loss: LoRA {lora:.5f}"
        if base is not None:
            change = 100.0 * (lora - base) / base if base else 0.0
            line += f", base model {base:.5f} ({change:+.2f}%)"
        print(line)
    for fmt, path in summary.lora_files.items():
        print(f"  LoRA ({fmt}): {path}")
    for token, path in summary.embedding_files.items():
        print(f"  token embeddings ({token}): {path}")
    print(f"  checkpoint: {summary.checkpoint} in {summary.checkpoint_dir}")
    print(f"  summary: {output_dir / 'train_summary.json'}")


def _train(args: argparse.Namespace) -> int:
    from furlora.config import load_config

    config = load_config(args.config, args.overrides)
    return _run(config, _check_resume(args.resume), _again("train", args.config, args.overrides))[1]


def demo_config_path() -> Path:
    """configs/tiny-cpu.yaml of the furlora checkout."""
    import furlora

    path = Path(furlora.__file__).resolve().parents[1] / "configs" / DEMO_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"the demo config {path} is missing; furlora demo runs from a source checkout "
            "(git clone ...; pip install -e .) that has configs/ and datasets/"
        )
    return path


def _demo(args: argparse.Namespace) -> int:
    from furlora.config import load_config
    from furlora.run_lock import hold_run_folder

    started = time.perf_counter()
    config = load_config(demo_config_path(), [f"output_dir={args.output}", *args.overrides])
    # Training, the comparison and the demo summary all write into one folder: one demo per folder.
    with hold_run_folder(config.output_dir):
        return _demo_in_folder(args, config, started)


def _demo_in_folder(args: argparse.Namespace, config: Any, started: float) -> int:
    again = _again("demo", "", args.overrides, "--output", args.output)
    run, status = _run(config, _check_resume(args.resume), again)
    if status:
        return status  # stopped early with a checkpoint: the comparison needs the finished LoRA
    from furlora.eval.compare import demo_comparison

    output = Path(config.output_dir)
    report = demo_comparison(config=config, summary=run, output_dir=output / "comparison")  # its index.html, or None
    summary = {**run.to_dict(), "demo_seconds": time.perf_counter() - started}
    if report is not None:
        summary["comparison_report"] = str(report)
        summary["comparison"] = _comparison_summary(report.parent / "metrics.json")
    (output / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    base, lora = summary.get("val_loss_base"), summary.get("val_loss")
    if base is not None and lora is not None:
        verdict = "lower" if lora < base else "NOT lower"
        print(f"demo: the LoRA's masked validation loss is {verdict} than the base model's ({lora:.5f} vs {base:.5f})")
    if report is not None:
        _print_comparison(report.parent)
    print(f"demo finished in {summary['demo_seconds']:.0f} s; results in {output}")
    return 0


def _comparison_summary(metrics_file: Path) -> dict[str, dict[str, float]]:
    """Mean masked PSNR / SSIM / detail ratio / seam error per variant, from the report's metrics.json."""
    try:
        table = json.loads(metrics_file.read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return {}
    keys = ("psnr", "ssim", "colour_error", "delta_e", "detail_ratio", "seam_error")
    return {variant: {k: float(row[k]) for k in keys if k in row} for variant, row in table.items()}


def _print_comparison(report_dir: Path) -> None:
    """Base vs LoRA per region, how many held-out images the LoRA improves, and the grid to open first."""
    from furlora.eval.region_summary import BASE, region_lines, variants_of, wins

    try:
        rows = json.loads((report_dir / "metrics.json").read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return
    images = len({r["sample"] for r in rows})
    print(f"demo: held-out inpainting, base model ({BASE!r}) vs LoRA, mean of {images} images, inside each region:")
    for line in region_lines(rows):
        print(f"  {line}")
    loras = [v for v in variants_of(rows) if v != BASE]
    for variant in loras:
        better, total = wins(rows, variant, "psnr")
        closer, _ = wins(rows, variant, "colour_error")
        print(f"demo: {variant} beats the base model on {better} of {total} held-out images (masked PSNR); "
              f"colour error lower on {closer} of {total}")
    grid = _typical_grid(rows, report_dir, loras[0]) if loras else None
    if grid is not None:
        print(f"demo: open first: {grid} (the dog with the median PSNR gain; columns: input = the truth, "
              f"mask, base model, LoRA; below them zoomed crops)")


def _typical_grid(rows: list[dict[str, Any]], report_dir: Path, variant: str) -> Path | None:
    """The grid of the image whose PSNR gain of ``variant`` over the base is the median one."""
    from furlora.eval.compare import grid_path
    from furlora.eval.region_summary import BASE

    psnr = {(r["sample"], r["seed"], r["variant"]): float(r["psnr"]) for r in rows if r.get("psnr") is not None}
    gains = sorted((psnr[(s, seed, variant)] - value, s, seed) for (s, seed, v), value in psnr.items()
                   if v == BASE and (s, seed, variant) in psnr)
    if not gains:
        return None
    _, sample, seed = gains[len(gains) // 2]
    path = grid_path(report_dir, str(sample), seed)
    return path if path.is_file() else None
