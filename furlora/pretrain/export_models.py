"""Write the pretrained tiny models as committed files: fp16 diffusers folders, a sha256
manifest and a model card.

Layout written into ``export_dir`` (the package folder ``furlora/models/pretrained``):

- ``tiny-sdxl-inpaint-pretrained/``: a complete diffusers SDXL inpainting folder.
- ``tiny-sdxl-pretrained/``: only what differs from it: ``model_index.json``,
  ``unet/config.json`` (4 input channels) and ``unet/conv_in.safetensors`` (the 4-channel input
  convolution). :func:`furlora.models.pretrained.pretrained_model_path` assembles the complete
  folder from both (the UNet body, VAE, text encoders, tokenizers and scheduler are shared).
- ``manifest.json``: sha256 and size of every file above.
- ``README.md``: the model card, with the numbers measured by the training stages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from furlora.models.pretrained import sha256_file

INPAINT_NAME = "tiny-sdxl-inpaint-pretrained"
BASE_NAME = "tiny-sdxl-pretrained"
CONV_IN_FILE = "conv_in.safetensors"
MANIFEST_NAME = "manifest.json"


def _save_fp16(tensors: dict[str, torch.Tensor], file: Path) -> None:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    save_file(half, str(file), metadata={"format": "pt"})


def _copy_config(src: Path, dst: Path, **changes: Any) -> None:
    config = json.loads(src.read_text())
    config.pop("_name_or_path", None)  # where the training machine kept it: not ours to publish
    config.update(changes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export_models(out: Path, export_dir: Path) -> dict[str, Any]:
    """Build the committed folders from a pretraining working folder ``out``.

    Reads ``out/init`` (the seeded random models, for configs, text encoders and tokenizers),
    ``out/vae`` (or ``out/vae_decoder`` after a decoder stage), ``out/unet/body.safetensors``
    and the stage metrics. Returns the manifest.
    """
    from safetensors.torch import load_file

    from furlora.models.tiny import TINY_VARIANT, ensure_tiny_model

    base_init = ensure_tiny_model("tiny-sdxl", out / "init")
    inpaint_init = ensure_tiny_model("tiny-sdxl-inpaint", out / "init")
    for name in (INPAINT_NAME, BASE_NAME):
        shutil.rmtree(export_dir / name, ignore_errors=True)
    inpaint, base = export_dir / INPAINT_NAME, export_dir / BASE_NAME

    # The inpainting folder: complete.
    body = load_file(str(out / "unet" / "body.safetensors"))
    unet9 = {k.replace("conv_in.conv9.", "conv_in."): v for k, v in body.items() if not k.startswith("conv_in.conv4.")}
    conv4 = {k.replace("conv_in.conv4.", "conv_in."): v for k, v in body.items() if k.startswith("conv_in.conv4.")}
    _copy_config(inpaint_init / "unet" / "config.json", inpaint / "unet" / "config.json")
    _save_fp16(unet9, inpaint / "unet" / "diffusion_pytorch_model.safetensors")
    vae_dir = out / "vae_decoder" if (out / "decoder_metrics.json").is_file() else out / "vae"
    _copy_config(vae_dir / "config.json", inpaint / "vae" / "config.json")
    _save_fp16(load_file(str(vae_dir / "diffusion_pytorch_model.safetensors")),
               inpaint / "vae" / "diffusion_pytorch_model.safetensors")
    for encoder in ("text_encoder", "text_encoder_2"):
        # Text encoders stay at their seeded random initialisation (frozen during pretraining).
        _copy_config(inpaint_init / encoder / "config.json", inpaint / encoder / "config.json", dtype="float16")
        seeded = inpaint_init / encoder / f"model.{TINY_VARIANT}.safetensors"
        _save_fp16(load_file(str(seeded)), inpaint / encoder / "model.safetensors")
    for folder in ("tokenizer", "tokenizer_2", "scheduler"):
        shutil.copytree(inpaint_init / folder, inpaint / folder)
    shutil.copy2(inpaint_init / "model_index.json", inpaint / "model_index.json")

    # The base folder: only what differs.
    _copy_config(base_init / "unet" / "config.json", base / "unet" / "config.json")
    _save_fp16(conv4, base / "unet" / CONV_IN_FILE)
    shutil.copy2(base_init / "model_index.json", base / "model_index.json")

    files = sorted(p for name in (INPAINT_NAME, BASE_NAME) for p in (export_dir / name).rglob("*") if p.is_file())
    manifest = {
        "format": 1,
        "models": {
            INPAINT_NAME: {"folder": INPAINT_NAME, "shares_from": None},
            BASE_NAME: {"folder": BASE_NAME, "shares_from": INPAINT_NAME},
        },
        "files": {
            p.relative_to(export_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
        },
    }
    (export_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    metrics = {
        "vae": json.loads((out / "vae_metrics.json").read_text()),
        "unet": json.loads((out / "unet_metrics.json").read_text()),
    }
    if (out / "decoder_metrics.json").is_file():
        metrics["decoder"] = json.loads((out / "decoder_metrics.json").read_text())
    for stage in metrics.values():  # record no path of the machine that trained
        stage["command"] = stage["command"].replace(str(out), "WORKDIR")
    (export_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return manifest
