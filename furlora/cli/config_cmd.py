"""``furlora config validate FILE`` and ``furlora config show``."""

from __future__ import annotations

import argparse

import yaml

from furlora.cli.options import add_overrides
from furlora.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="validate or show run configs")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = sub.add_parser("validate", help="check a YAML config and report every problem")
    validate.add_argument("file")
    add_overrides(validate)
    validate.set_defaults(func=_validate)
    show = sub.add_parser("show", help="print the full config (defaults filled in)")
    show.add_argument("file", nargs="?")
    add_overrides(show)
    show.set_defaults(func=_show)


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.file, args.overrides)
    print(f"{args.file}: valid (run {config.name!r}, model {config.model.source!r})")
    return 0


def _show(args: argparse.Namespace) -> int:
    config = load_config(args.file, args.overrides)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0
