"""``furlora compare`` (LoRA off / on / scales, side by side, with a report) and ``furlora inpaint``
(one image)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from furlora.cli.options import add_overrides
from furlora.errors import EvaluationError


def register(subparsers: argparse._SubParsersAction) -> None:
    compare = subparsers.add_parser(
        "compare",
        help="inpaint images with and without LoRA files and write a visual report (grids, metrics, HTML)",
        description=(
            "Repaint the masked regions of a dataset (or of --image/--mask pairs) with the multi-pass "
            "inpainter, once with every LoRA off and once per LoRA file and scale, using the same seeds. "
            "Writes OUT/index.html, OUT/metrics.csv, OUT/metrics.json and OUT/grids/*.png."
        ),
    )
    _common(compare)
    source = compare.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset folder (masks = the samples' regions, prompts = their captions)")
    source.add_argument("--image", action="append", help="an image to repaint (repeatable; pair each with --mask)")
    compare.add_argument("--mask", action="append", help="the mask of the matching --image (white = repaint)")
    compare.add_argument("--out", required=True, help="report folder")
    compare.add_argument("--scales", default=None, help="LoRA scales to compare, e.g. 0.5,1 (default: eval.lora_scales)")
    compare.add_argument("--seeds", default=None, help="seeds, e.g. 0,1 (default: eval.seeds)")
    compare.add_argument("--max-images", type=int, default=None, help="at most N dataset images")
    compare.add_argument("--embeddings", default=None, metavar="FILE[,FILE]",
                         help="SDXL embedding file(s) of learned tokens (clip_l + clip_g safetensors, as furlora "
                              "train writes to OUT/embeddings/): adds the variants 'token' and '<lora>@<scale>+token' "
                              "with the token in the prompt (placed by the --config's tokens.caption rule, else in front)")
    compare.set_defaults(func=_compare)

    inpaint = subparsers.add_parser(
        "inpaint",
        help="repaint the masked region of one image with the multi-pass inpainter",
        description="Repaint one image's mask (white = repaint). Pixels outside the blend band are kept bit for bit.",
    )
    _common(inpaint)
    inpaint.add_argument("--image", required=True, help="input image (8/16-bit, grey, RGB or RGBA)")
    inpaint.add_argument("--mask", required=True, help="mask image of the same size (white = repaint)")
    inpaint.add_argument("--out", required=True, help="output PNG")
    inpaint.add_argument("--scale", type=float, default=1.0, help="LoRA scale (default 1)")
    inpaint.add_argument("--seed", type=int, default=None, help="seed (default: the first of eval.seeds)")
    inpaint.set_defaults(func=_inpaint)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model: tiny-sdxl, tiny-sdxl-inpaint, a diffusers SDXL folder "
                        "or a cached hub id (default: model.source of the config)")
    parser.add_argument("--lora", default=None, help="LoRA file(s), diffusers or kohya safetensors, comma-separated")
    parser.add_argument("--prompt", default=None, help="prompt (default: eval.prompt; dataset captions win unless "
                        "eval.use_captions is false)")
    parser.add_argument("--config", default=None, help="run config YAML whose model: and eval: sections apply")
    add_overrides(parser, "config override, e.g. --set eval.passes='[{strength: 1.0, steps: 20}]' (repeatable)")
    parser.add_argument("--device", default=None, help="where the model runs: auto (the CUDA GPU when present), cpu, "
                        "cuda, cuda:N or mps (default: eval.device). UNet and text encoders in model.dtype, the VAE "
                        "in model.vae_dtype, as in training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _numbers(text: str, what: str, kind: type) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvaluationError(f"{what} {text!r}: expected comma-separated numbers, e.g. 0.5,1") from None


def _settings(args: argparse.Namespace):  # noqa: ANN202
    from furlora.config import load_config

    config = load_config(args.config, args.overrides)
    settings = config.eval
    updates: dict = {}
    if args.no_progress:
        updates["progress"] = False
    if args.prompt is not None:
        updates["prompt"] = args.prompt
    if getattr(args, "scales", None):
        updates["lora_scales"] = _numbers(args.scales, "--scales", float)
    if getattr(args, "seeds", None):
        updates["seeds"] = _numbers(args.seeds, "--seeds", int)
    if getattr(args, "max_images", None):
        updates["max_images"] = args.max_images
    if updates:
        from pydantic import ValidationError

        from furlora.errors import ConfigError

        try:  # validate the command-line values like config values
            settings = type(settings).model_validate({**settings.model_dump(), **updates})
        except ValidationError as exc:
            raise ConfigError("; ".join(f"eval.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    return config, settings


def _loras(text: str | None) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def _compare(args: argparse.Namespace) -> int:
    from furlora.eval.compare import run_comparison
    from furlora.eval.samples import samples_from_files

    config, settings = _settings(args)
    if args.image:
        samples = samples_from_files(args.image, args.mask or [], prompt=args.prompt)
    else:
        if args.mask:
            raise EvaluationError("--mask goes with --image; a --dataset brings its own masks")
        samples = args.dataset
    result = run_comparison(args.model or config.model.source, _loras(args.lora), samples, args.out, settings,
                            data_settings=config.data, dtype=config.model.dtype, vae_dtype=config.model.vae_dtype,
                            device=args.device, prediction_type=config.train.prediction_type,
                            embeddings=_loras(args.embeddings), token_settings=config.tokens)
    for skipped in result.skipped:
        print(f"skipped {skipped}")
    names = ["psnr", "ssim", "seam_error", "detail_ratio", "colour_shift", "drift_max"]
    width = max(len(v) for v in result.variants) + 2
    print("variant".ljust(width) + "".join(n.rjust(14) for n in names))
    for variant, means in result.summary.items():
        print(variant.ljust(width) + "".join(_cell(means.get(n, math.nan)) for n in names))
    print(f"report: {result.html}")
    return 0


def _cell(value: float) -> str:
    return ("–" if math.isnan(value) else f"{value:.4g}").rjust(14)


def _inpaint(args: argparse.Namespace) -> int:
    from furlora.eval.compare import inpaint_one

    config, settings = _settings(args)
    seed = args.seed if args.seed is not None else settings.seeds[0]
    result = inpaint_one(args.model or config.model.source, args.image, args.mask, args.out, prompt=args.prompt,
                         lora_files=_loras(args.lora), lora_scale=args.scale, seed=seed, settings=settings,
                         dtype=config.model.dtype, vae_dtype=config.model.vae_dtype, device=args.device,
                         prediction_type=config.train.prediction_type)
    if result.skipped:
        print(f"{result.skipped}; wrote the input unchanged to {Path(args.out)}")
    else:
        changed = int(result.band.sum())
        print(f"wrote {args.out} ({len(result.passes)} passes, seed {seed}, {changed} px in the blend band; "
              "every other pixel is unchanged)")
    return 0
