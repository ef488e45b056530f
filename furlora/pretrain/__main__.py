"""``python -m furlora.pretrain``: pretrain the tiny SDXL-architecture models in one command.

Stages (all by default): ``vae`` trains the 8x VAE; ``unet`` trains the shared UNet body of
the 4-channel and 9-channel models on latents of that VAE; ``export`` writes the fp16
diffusers folders, the hash manifest and the training metrics. ``preview`` (run on its own)
renders a PNG grid of reconstructions, samples and inpaintings of the exported models. Every stage writes its results into
``--out`` and a later stage reads them from there, so a stage can be rerun alone.

This is a developer tool, not part of the ``furlora`` CLI: the committed weights it made are
what users get.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from furlora.pretrain.loop import LoopResult, Stage

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m furlora.pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="working folder for stage results")
    p.add_argument("--stage", choices=["all", "vae", "unet", "decoder", "export", "preview"], default="all")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--size", type=int, default=128, help="picture size in pixels (latents are size/8)")
    p.add_argument("--vae-steps", type=int, default=1200)
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-stop-after", type=int, default=None, help="end the VAE stage after this many steps of its schedule")
    p.add_argument("--unet-steps", type=int, default=5000)
    p.add_argument("--unet-batch", type=int, default=8)
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--unet-continue", action="store_true",
                   help="start the UNet stage from OUT/unet (a previous UNet stage) instead of the random weights")
    p.add_argument("--unet-stop-after", type=int, default=None, help="end the UNet stage after this many steps of its schedule")
    p.add_argument("--decoder-steps", type=int, default=0,
                   help="fine-tune the VAE decoder only (latents unchanged) after the UNet stage; 0 = skip")
    p.add_argument("--decoder-batch", type=int, default=6)
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--decoder-stop-after", type=int, default=None)
    p.add_argument("--validation-count", type=int, default=64, help="validation pictures (another corpus seed)")
    p.add_argument("--time-limit-minutes", type=float, default=None,
                   help="safety limit per training stage; the steps actually run are recorded")
    p.add_argument("--export-dir", type=Path, default=None,
                   help="where the export stage writes the model folders (default: OUT/export)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    words = sys.argv[1:] if argv is None else argv
    # The recorded command names no path of this machine: folders become placeholders.
    command = "python -m furlora.pretrain " + " ".join(words).replace(str(args.out), "WORKDIR")
    if args.stage in ("all", "vae"):
        run_vae_stage(args, command)
    if args.stage in ("all", "unet"):
        run_unet_stage(args, command)
    if args.stage == "decoder" or (args.stage == "all" and args.decoder_steps > 0):
        run_decoder_stage(args, command)
    if args.stage in ("all", "export"):
        from furlora.pretrain.export_models import export_models

        export_models(args.out, args.export_dir or args.out / "export")
    if args.stage == "preview":  # not part of "all": pictures only, for people to judge the result
        from furlora.models.pretrained import pretrained_model_path
        from furlora.pretrain.model_preview import preview_grid

        root = args.export_dir or args.out / "export"
        folders = [pretrained_model_path(n, args.out / "cache", root=root)
                   for n in ("tiny-sdxl-pretrained", "tiny-sdxl-inpaint-pretrained")]
        print(preview_grid(folders[0], folders[1], args.out / "preview.png", size=args.size))
    return 0


def _base_folders(out: Path) -> tuple[Path, Path]:
    from furlora.models.tiny import ensure_tiny_model

    cache = out / "init"
    return ensure_tiny_model("tiny-sdxl", cache), ensure_tiny_model("tiny-sdxl-inpaint", cache)


def _fp32_from_tiny(library: str) -> dict:
    """``from_pretrained`` keywords for a seeded tiny model's component: its weights are fp16
    files with the hub's variant names, pretraining works in fp32. ``library``: diffusers or
    transformers (they name the dtype keyword differently)."""
    import torch

    from furlora.models.tiny import TINY_VARIANT

    return {"variant": TINY_VARIANT, "torch_dtype" if library == "diffusers" else "dtype": torch.float32}


def _stage(args: argparse.Namespace, name: str, seed: int) -> Stage:
    """The budget of stage ``name`` (vae, decoder, unet) from its ``--NAME-*`` options and the time limit."""
    from furlora.pretrain.loop import Stage

    steps = getattr(args, f"{name}_steps")
    return Stage(steps, getattr(args, f"{name}_batch"), getattr(args, f"{name}_lr"), seed,
                 args.time_limit_minutes * 60 if args.time_limit_minutes else None, _printer(name, steps),
                 getattr(args, f"{name}_stop_after"))


def _save_metrics(args: argparse.Namespace, name: str, command: str, seed: int, stage: Stage, result: LoopResult,
                  measured: dict, window: int = 50, **rest: object) -> None:
    """Write (and print) OUT/NAME_metrics.json: the stage's budget and run, ``measured`` values, mean losses."""
    metrics = {
        "command": command, "seed": seed, "size": args.size, "steps_asked": stage.steps, "steps": result.steps,
        "batch": stage.batch_size, "lr": stage.lr, "seconds": round(result.seconds, 1), **measured,
        f"loss_first_{window}": _mean(result.losses[:window]), f"loss_last_{window}": _mean(result.losses[-window:]),
        **rest,
    }
    (args.out / f"{name}_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2), flush=True)


def _printer(name: str, total: int, every: int = 50):
    started = time.monotonic()

    def show(step: int, loss: float) -> None:
        if step % every == 0 or step == total - 1:
            rate = (step + 1) / max(1e-6, time.monotonic() - started)
            import torch

            print(f"{name} step {step + 1}/{total} loss {loss:.4f} ({rate:.2f} steps/s, "
                  f"{torch.get_num_threads()} threads)", flush=True)

    return show


def run_vae_stage(args: argparse.Namespace, command: str) -> None:
    """Train the VAE from its seeded random weights; writes OUT/vae and OUT/vae_metrics.json."""
    from diffusers import AutoencoderKL

    from furlora.pretrain.corpus import ProceduralCorpus
    from furlora.pretrain.loop import latent_scaling_factor, reconstruction_psnr, train_vae

    _, inpaint_init = _base_folders(args.out)
    vae = AutoencoderKL.from_pretrained(inpaint_init, subfolder="vae", **_fp32_from_tiny("diffusers"))
    train, val = ProceduralCorpus(args.seed, args.size), ProceduralCorpus(args.seed + 1, args.size)
    psnr_before = reconstruction_psnr(vae, val, count=args.validation_count)
    stage = _stage(args, "vae", args.seed)
    result = train_vae(vae, train, stage)
    psnr = reconstruction_psnr(vae, val, count=args.validation_count)
    scale = latent_scaling_factor(vae, train)
    vae.register_to_config(scaling_factor=round(scale, 5))
    vae.save_pretrained(args.out / "vae", safe_serialization=True)
    _save_metrics(args, "vae", command, args.seed, stage, result,
                  {"psnr_before_db": round(psnr_before, 2), "psnr_db": round(psnr, 2), "scaling_factor": round(scale, 5)})


def run_decoder_stage(args: argparse.Namespace, command: str) -> None:
    """Fine-tune the VAE decoder on fresh corpus pictures; writes OUT/vae_decoder and metrics.

    The encoder is frozen, so the UNet trained on this VAE's latents stays valid.
    """
    from diffusers import AutoencoderKL

    from furlora.pretrain.corpus import ProceduralCorpus
    from furlora.pretrain.loop import reconstruction_psnr, train_vae

    vae = AutoencoderKL.from_pretrained(args.out / "vae")
    train, val = ProceduralCorpus(args.seed + 3, args.size), ProceduralCorpus(args.seed + 1, args.size)
    psnr_before = reconstruction_psnr(vae, val, count=args.validation_count)
    stage = _stage(args, "decoder", args.seed + 3)
    result = train_vae(vae, train, stage, decoder_only=True)
    psnr = reconstruction_psnr(vae, val, count=args.validation_count)
    vae.save_pretrained(args.out / "vae_decoder", safe_serialization=True)
    _save_metrics(args, "decoder", command, args.seed + 3, stage, result,
                  {"psnr_before_db": round(psnr_before, 2), "psnr_db": round(psnr, 2)})


def load_parts(folder_with_encoders: Path, vae_folder: Path) -> dict:
    """Frozen VAE, text encoders, tokenizers and the DDPM training schedule."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = {
        "vae": AutoencoderKL.from_pretrained(vae_folder),
        "text_encoder": CLIPTextModel.from_pretrained(folder_with_encoders / "text_encoder", **_fp32_from_tiny("transformers")),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
            folder_with_encoders / "text_encoder_2", **_fp32_from_tiny("transformers")
        ),
        "tokenizer": CLIPTokenizer.from_pretrained(folder_with_encoders / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(folder_with_encoders / "tokenizer_2"),
        "noise_scheduler": DDPMScheduler.from_config(
            json.loads((folder_with_encoders / "scheduler" / "scheduler_config.json").read_text())
        ),
    }
    for name in ("vae", "text_encoder", "text_encoder_2"):
        parts[name].requires_grad_(False).eval()
    return parts


def run_unet_stage(args: argparse.Namespace, command: str) -> None:
    """Train the shared UNet body; writes OUT/unet (fp32 safetensors) and OUT/unet_metrics.json."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from furlora.pretrain.corpus import ProceduralCorpus
    from furlora.pretrain.loop import DualConvIn, train_unet, unet_validation_loss

    base_init, inpaint_init = _base_folders(args.out)
    parts = load_parts(inpaint_init, args.out / "vae")
    unet = UNet2DConditionModel.from_pretrained(inpaint_init, subfolder="unet", **_fp32_from_tiny("diffusers"))
    conv4 = UNet2DConditionModel.from_pretrained(base_init, subfolder="unet", **_fp32_from_tiny("diffusers")).conv_in
    unet.conv_in = DualConvIn(unet.conv_in, conv4)
    previous: list[dict] = []
    if args.unet_continue:
        from safetensors.torch import load_file

        unet.load_state_dict(load_file(str(args.out / "unet" / "body.safetensors")))
        old = json.loads((args.out / "unet_metrics.json").read_text())
        previous = old.pop("previous_stages", []) + [old]
    train, val = ProceduralCorpus(args.seed, args.size), ProceduralCorpus(args.seed + 1, args.size)
    val_before = unet_validation_loss(unet, parts, val, count=args.validation_count, seed=args.seed)
    # A continued stage draws other pictures and noise than the stages before it.
    stage = _stage(args, "unet", args.seed + 2 + 100 * len(previous))
    train = ProceduralCorpus(args.seed + 100 * len(previous), args.size) if previous else train
    result = train_unet(unet, parts, train, stage)
    val_after = unet_validation_loss(unet, parts, val, count=args.validation_count, seed=args.seed)
    (args.out / "unet").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(args.out / "unet" / "body.safetensors"))
    _save_metrics(args, "unet", command, args.seed, stage, result,
                  {"validation_loss_before": val_before, "validation_loss": val_after}, 100, previous_stages=previous)


def _mean(values: list[float]) -> float:
    return round(sum(values) / max(1, len(values)), 5)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise SystemExit(main())
