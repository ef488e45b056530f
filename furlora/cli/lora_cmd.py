"""`furlora` subcommands of the lora area (registered by furlora.cli.main)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (none yet)."""
