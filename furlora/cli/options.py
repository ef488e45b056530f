"""Command-line options that several ``furlora`` subcommands share."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--set KEY=VALUE`` (repeatable): config overrides, collected into ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
