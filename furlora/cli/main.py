"""The ``furlora`` command: one entry point, subcommands registered by small modules.

This package is the only place that prints for humans or exits. Library errors
(:class:`~furlora.errors.FurloraError`) become one readable message and exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from furlora import __version__
from furlora.errors import FurloraError

#: Each module defines ``register(subparsers)``; its parsers set ``func(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = (
    "furlora.cli.config_cmd",
    "furlora.cli.models_cmd",
    "furlora.cli.dataset_cmd",
    "furlora.cli.lora_cmd",
    "furlora.cli.train_cmd",
    "furlora.cli.eval_cmd",
    "furlora.cli.plan_cmd",
    "furlora.cli.cache_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="furlora",
        description="Train SDXL inpainting LoRAs for fur and fine texture.",
    )
    parser.add_argument("--version", action="version", version=f"furlora {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _quiet_third_party() -> None:
    """Keep third-party start-up chatter out of the user's terminal."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    # bitsandbytes warns at import that its optional 4-bit CPU kernels are missing; furlora only
    # uses its 8-bit optimizers, so that warning is noise for our users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except FurloraError as exc:
        if args.debug:
            raise
        print(f"furlora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("furlora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
