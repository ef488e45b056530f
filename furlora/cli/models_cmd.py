"""``furlora models``: the embedded tiny models and what a real SDXL folder must contain."""

from __future__ import annotations

import argparse

from furlora.models.cache_folder import default_cache_dir
from furlora.models.sdxl import REQUIRED_COMPONENTS
from furlora.models.tiny import TINY_MODELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list embedded models and the SDXL folder layout")
    parser.add_argument("--check", metavar="MODEL", help="check a model folder / hub id / name without loading weights")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.check:
        from furlora.models.sdxl import inspect_model_folder, resolve_model_path

        path = resolve_model_path(args.check)
        info = inspect_model_folder(path)
        kind = "SDXL inpainting (9-channel UNet)" if info["is_inpainting"] else "SDXL base (4-channel UNet)"
        print(f"{path}: {kind}, weights variant {info['variant'] or 'default'}: OK")
        return 0
    print("Embedded tiny SDXL-architecture models (random weights from a fixed seed, built on first use):")
    for name, channels in TINY_MODELS.items():
        print(f"  {name:<20} {channels}-channel UNet")
    print(f"  cache: {default_cache_dir() / 'models'} (set FURLORA_CACHE to move it)")
    print()
    print("A real SDXL model is a diffusers-format folder (or a hub id in the local cache) with:")
    for name, (config, stem) in REQUIRED_COMPONENTS.items():
        weights = f", {stem}.safetensors (or .fp16 variant / shards)" if stem else ""
        print(f"  {name}/{config}{weights}")
    print("  model_index.json")
    print("e.g. stabilityai/stable-diffusion-xl-base-1.0 or diffusers/stable-diffusion-xl-1.0-inpainting-0.1")
    return 0
