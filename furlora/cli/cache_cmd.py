"""``furlora cache CONFIG [--set KEY=VALUE ...]``: build a run's latent cache ahead of training."""

from __future__ import annotations

import argparse

from furlora.cli.options import add_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache",
        help="encode every latent a run will use into its latent cache (data.cache_dir) before training",
        description=(
            "Run the caching pass of a config: every augmentation variant (data.cache.variants) and, for the "
            "9-channel objective, every hole of the fixed sets (data.cache.holes) is VAE-encoded once into "
            "data.cache_dir (default <output_dir>/cache). Resumable: entries already there are skipped. "
            "Training with the same config then runs no VAE encode; the folder may be built on another machine "
            "and copied."
        ),
    )
    cache.add_argument("config", help="YAML run config (see configs/)")
    add_overrides(cache, "override a config value, e.g. --set data.cache_dir=/shared/cache (repeatable)")
    cache.set_defaults(func=_cache)


def _cache(args: argparse.Namespace) -> int:
    from furlora.config import load_config
    from furlora.data.cache import run_cache_dir
    from furlora.run_lock import hold_run_folder
    from furlora.train.cache_pass import build_cache

    config = load_config(args.config, args.overrides)
    # The run folder's rule (furlora.run_lock): not while a run or another pass works in it.
    with hold_run_folder(config.output_dir):
        reports = build_cache(config)
    folder = run_cache_dir(config.data.cache_dir, config.output_dir)
    for report in reports:
        print(f"{report.entries} entries, {report.encoded} encoded now, {report.entries - report.encoded} already cached ({report.seconds:.1f} s)")
    print(f"latent cache: {folder}")
    return 0
