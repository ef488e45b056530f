"""``furlora plan CONFIG --gpu-memory 16GB [--suggest] [--json]``: will this run fit, and if not, what to change.

Exit status: 0 when the run fits (or no memory size is given), 1 when it does not fit (with
``--suggest``: when even the suggested changes do not fit), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from furlora.cli.options import add_overrides
from furlora.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="estimate peak GPU memory of a run config and suggest changes that fit",
        description=(
            "Estimate the peak GPU memory of a training run before it starts: weights per component, "
            "LoRA, gradients, optimizer state, activations (simulated on the meta device), VAE and "
            "text-encoder peaks, framework overhead."
        ),
    )
    parser.add_argument("config", help="run config YAML")
    parser.add_argument("--gpu-memory", metavar="SIZE",
                        help="memory of the GPU, e.g. 12GB, 16GB, 24GiB (binary units, as GPU makers count)")
    parser.add_argument("--suggest", action="store_true",
                        help="list the cheapest changes (least quality lost first) that make the run fit")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_overrides(parser, "override a config value (repeatable)")
    parser.add_argument("--architecture", metavar="ARCH",
                        help="sdxl-meta, sdxl-inpaint-meta, tiny-sdxl, tiny-sdxl-inpaint or a diffusers folder "
                             "(default: from model.source; needed when the model is not available locally)")
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        help="plan for a CUDA GPU or for CPU memory (default: cpu if train.cpu, else cuda)")
    parser.add_argument("--chart", metavar="PNG", help="also draw the breakdown as a stacked bar chart")
    parser.add_argument("--write-config", metavar="YAML", help="with --suggest: write the suggested config here")
    parser.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    from furlora.config import load_config
    from furlora.memory import estimate, parse_memory_size, plan_input_from_config, suggest

    capacity = parse_memory_size(args.gpu_memory) if args.gpu_memory is not None else None
    if (args.suggest or args.write_config) and capacity is None:
        raise ConfigError("--suggest needs --gpu-memory SIZE (e.g. --gpu-memory 16GB)")
    if args.write_config and not args.suggest:
        raise ConfigError("--write-config needs --suggest")
    if args.architecture:
        from furlora.memory.params import component_configs

        component_configs(args.architecture)  # a bad name fails here, before any simulation
    config = load_config(args.config, args.overrides)
    plan_input = plan_input_from_config(config, architecture=args.architecture, device=args.device)
    if not args.json:
        print(f"planning {args.config} ({plan_input.architecture}, {plan_input.device}) ...", file=sys.stderr)
    plan = estimate(plan_input)
    from furlora.memory.adapter import cache_notes

    plan.notes.extend(cache_notes(config))  # caches the config asks for that cannot apply
    result = None
    if args.suggest:
        def progress(text: str) -> None:
            if not args.json:
                print(f"  trying: {text}", file=sys.stderr)

        result = suggest(config, capacity, architecture=args.architecture, device=args.device, progress=progress)
        if args.write_config:
            Path(args.write_config).write_text(yaml.safe_dump(result.config.to_dict(), sort_keys=False), encoding="utf-8")
    if args.chart:
        from furlora.memory.chart import render_chart

        bars = [("as configured", plan, capacity)]
        if result is not None and result.changes:
            bars.append(("suggested", result.plan, capacity))
        render_chart(bars, args.chart, title=f"Estimated peak memory: {Path(args.config).name}")

    if args.json:
        out = plan.to_dict(capacity)
        if result is not None:
            out["suggestion"] = {
                "fits": result.fits,
                "changes": [{"overrides": c.overrides, "summary": c.summary, "cost": c.cost,
                             "saves_bytes": c.saves_bytes} for c in result.changes],
                "overrides": result.overrides(),
                "plan": result.plan.to_dict(capacity),
                "config": result.config.to_dict(),
            }
        print(json.dumps(out, indent=2))
    else:
        print(plan.table(capacity))
        if result is not None:
            _print_suggestion(result, capacity)
    if capacity is None:
        return 0
    fits = result.fits if result is not None else plan.fits(capacity)
    return 0 if fits else 1


def _print_suggestion(result, capacity: int) -> None:  # noqa: ANN001
    from furlora.memory import format_bytes, verdict

    print()
    if not result.changes:
        print("suggestion: nothing to change" if result.fits else "suggestion: no known change lowers the estimate")
        return
    title = "cheapest changes that fit" if result.fits else "every change tried, and it still does not fit"
    print(f"suggestion ({title}), in order:")
    for i, change in enumerate(result.changes, 1):
        print(f"  {i}. {change.summary}: saves {format_bytes(change.saves_bytes)}; cost: {change.cost}")
        print(f"     {' '.join('--set ' + shlex.quote(s) for s in change.override_strings())}")
    print(f"with these changes: {format_bytes(result.plan.total_bytes)}")
    print(verdict(result.plan, capacity, hint=False))
    print("apply with: " + " ".join("--set " + shlex.quote(s) for s in result.overrides()))
