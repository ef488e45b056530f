"""``furlora dataset check PATH`` (the validation report) and ``furlora dataset preview PATH --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from furlora.cli.options import add_overrides
from furlora.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="check a dataset folder or draw its masks")
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="open every image and mask and list every problem with its file")
    _common(check)
    check.set_defaults(func=_check)

    preview = sub.add_parser("preview", help="write PNG overlays of the merged mask and each region, and a contact sheet")
    _common(preview)
    preview.add_argument("--out", required=True, help="folder for the PNG files")
    preview.add_argument("--limit", type=int, default=None, help="only the first N samples")
    preview.add_argument("--augment", action="store_true", help="show samples as training sees them (augmentation on)")
    preview.add_argument("--epoch", type=int, default=0, help="epoch whose augmentation is shown (with --augment)")
    preview.set_defaults(func=_preview)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="dataset folder")
    parser.add_argument("--config", default=None, help="run config YAML whose data: section applies")
    add_overrides(parser, "config override, e.g. data.layout=kohya")


def _check(args: argparse.Namespace) -> int:
    from furlora.data.dataset import resolve_root
    from furlora.data.validate import validate_dataset

    config = load_config(args.config, args.overrides)
    _, _, report = validate_dataset(resolve_root(args.path), config.data, strict=False)
    print(report.summary())
    if report.ok:
        print("OK: the dataset is ready for training")
        return 0
    action = "they would be skipped" if config.data.bad_samples == "skip" else "training would stop (set data.bad_samples: skip to leave them out)"
    print(f"{len(report.errors)} sample problem(s): {action}")
    return 1


def _preview(args: argparse.Namespace) -> int:
    from furlora.data.dataset import MaskedDataset
    from furlora.data.preview import write_preview

    config = load_config(args.config, args.overrides)
    dataset = MaskedDataset(config.data, root=args.path, seed=config.seed)
    files = write_preview(dataset, Path(args.out), limit=args.limit, epoch=args.epoch, augment=args.augment)
    print(f"wrote {len(files) - 1} sample pictures and {files[-1]}")
    return 0
