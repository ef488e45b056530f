"""``furlora targets``, ``furlora lora inspect`` and ``furlora lora convert``.

* ``furlora targets --model MODEL [--config CONFIG] [--json]``: the exact modules the ``lora:``
  section hooks, per component and block, without loading weights (MODEL: a tiny model name, a
  diffusers folder, or ``sdxl-meta`` / ``sdxl-inpaint-meta`` for the real SDXL architecture).
* ``furlora lora inspect FILE [--json]``: format, components, modules, ranks, alphas, size.
* ``furlora lora convert IN OUT --to kohya|diffusers [--dtype fp16]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from furlora.cli.options import add_overrides
from furlora.config import load_config
from furlora.lora.formats import ADAPTER_METADATA_KEY, load_lora_file, save_lora_file
from furlora.lora.adapters import LoraAdapters
from furlora.models.architecture import META_SDXL, build_meta_sdxl
from furlora.models.sdxl import resolve_model_path


def register(subparsers: argparse._SubParsersAction) -> None:
    targets = subparsers.add_parser(
        "targets", help="show exactly which modules the lora: config hooks (no weights loaded)",
        description="List the LoRA targets of a config per component and block, with ranks, alphas, "
                    "parameter counts, file sizes and what was skipped. MODEL: "
                    f"{', '.join(META_SDXL)} (real SDXL architecture), a tiny model name, or a folder.",
    )
    targets.add_argument("--model", help="model to inspect (default: the config's model.source)")
    targets.add_argument("--config", help="run config YAML (default: built-in defaults)")
    add_overrides(targets)
    targets.add_argument("--json", action="store_true", help="print the report as JSON")
    targets.add_argument("--names", action="store_true", help="also list every hooked module name")
    targets.set_defaults(func=_targets)

    lora = subparsers.add_parser("lora", help="inspect or convert LoRA files")
    sub = lora.add_subparsers(dest="lora_command", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="format, components, modules, ranks, alphas and size of a LoRA file")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)
    convert = sub.add_parser("convert", help="convert a LoRA file between the diffusers and kohya formats")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--to", required=True, choices=["kohya", "diffusers"])
    convert.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="tensor dtype (default: keep)")
    convert.set_defaults(func=_convert)


def _targets(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    model = args.model or config.model.source
    tree = model if model in META_SDXL else str(resolve_model_path(model))
    components = build_meta_sdxl(tree, config.lora.enabled_components())
    manager = LoraAdapters(components, config.lora, model_name=model)
    report = manager.apply()  # on the meta device: proves peft wraps exactly the selection
    if args.json:
        print(report.to_json())
        return 0
    print(report.format_table())
    if args.names:
        for name, cov in report.components.items():
            print(f"\n{name}: {cov.hooked} hooked modules")
            print("\n".join(f"  {n}" for n in cov.targets))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    weights = load_lora_file(args.file)
    summary = weights.summary()
    size = Path(args.file).stat().st_size
    shown_metadata = {k: v for k, v in weights.metadata.items() if k != ADAPTER_METADATA_KEY}
    if args.json:
        print(json.dumps({"file": args.file, "file_bytes": size, **summary, "metadata": shown_metadata}, indent=2))
        return 0
    print(f"{args.file}: {summary['format']} format, {size / 1024:.1f} KiB, tensors {', '.join(summary['dtypes'])}")
    if not summary["alpha_recorded"]:
        print("  warning: no alpha recorded; loaders assume alpha = rank")
    for name, info in summary["components"].items():
        ranks = "/".join(str(r) for r in info["ranks"])
        alphas = "/".join(f"{a:g}" for a in info["alphas"])
        dora = ", DoRA" if info["dora"] else ""
        print(f"  {name:<15} {info['modules']:>5} modules  rank {ranks:<6} alpha {alphas:<8}"
              f"{info['parameters']:>12,} parameters{dora}")
    for key in sorted(shown_metadata):
        value = shown_metadata[key]
        print(f"  {key}: {value if len(value) <= 100 else value[:97] + '...'}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    weights = load_lora_file(args.input)
    keep = {k: v for k, v in weights.metadata.items()
            if k not in (ADAPTER_METADATA_KEY, "format") and not k.startswith("ss_network_")}
    out = save_lora_file(args.output, weights, args.to, keep, args.dtype or _dtype_of(weights))
    note = "" if weights.alpha_recorded else " (input had no alpha: alpha = rank written, as loaders assume)"
    print(f"wrote {out} ({args.to} format, {len(weights.module_keys())} modules){note}")
    return 0


def _dtype_of(weights) -> str:
    dtypes = weights.summary()["dtypes"]
    return {"float16": "fp16", "bfloat16": "bf16"}.get(dtypes[0], "fp32") if len(dtypes) == 1 else "fp32"
