"""The optional SDXL refiner: a second UNet conditioned on text encoder 2 (OpenCLIP bigG) only,
with an aesthetic score in its micro-conditioning. Loaded from a diffusers-format folder
(``unet/``, ``vae/``, ``text_encoder_2/``, ``tokenizer_2/``, ``scheduler/``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from furlora.errors import EvaluationError, format_problems

logger = logging.getLogger(__name__)

REFINER_COMPONENTS = ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler")


def check_refiner_folder(path: str | os.PathLike[str]) -> Path:
    """Check a refiner folder before any weight loads; returns it. Raises naming each problem."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EvaluationError(f"eval.refiner: refiner folder {folder} does not exist")
    problems = [f"missing component folder {folder / name}" for name in REFINER_COMPONENTS if not (folder / name).is_dir()]
    problems += [f"{sub}: no .safetensors weights (pickle files are not loaded)"
                 for sub in (folder / "unet", folder / "vae", folder / "text_encoder_2")
                 if sub.is_dir() and not any(sub.glob("*.safetensors"))]
    if not problems:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        te2 = json.loads((folder / "text_encoder_2" / "config.json").read_text(encoding="utf-8"))
        if unet.get("cross_attention_dim") != te2.get("hidden_size"):
            problems.append(
                f"{folder / 'unet' / 'config.json'}: cross_attention_dim {unet.get('cross_attention_dim')} != "
                f"text_encoder_2 hidden size {te2.get('hidden_size')}: not an SDXL refiner (a refiner reads "
                "text encoder 2 only; a base model folder goes in model.source)"
            )
        if unet.get("in_channels") != 4:
            problems.append(f"{folder / 'unet' / 'config.json'}: in_channels {unet.get('in_channels')}, a refiner has 4")
    if problems:
        raise EvaluationError(format_problems(f"eval.refiner: {folder} is not an SDXL refiner", problems))
    return folder


def load_refiner_pipeline(path: str | os.PathLike[str], dtype: Any = None, device: Any = "cpu",
                          vae_dtype: Any = None) -> Any:
    """A ``StableDiffusionXLInpaintPipeline`` on the refiner's components (no text encoder 1).

    ``dtype``: UNet and text encoder 2; ``vae_dtype``: the VAE (fp32 unless given), as for the base model.
    """
    import torch
    from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    import diffusers

    folder = check_refiner_folder(path)
    dtype = dtype or torch.float32
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, use_safetensors=True,
                                                    variant=_variant(folder / "unet", "diffusion_pytorch_model"))
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype or torch.float32,
                                            use_safetensors=True, variant=_variant(folder / "vae", "diffusion_pytorch_model"))
        te2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", dtype=dtype, use_safetensors=True,
                                                          variant=_variant(folder / "text_encoder_2", "model"))
        tok2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        scheduler = getattr(diffusers, str(config.get("_class_name")), diffusers.EulerDiscreteScheduler).from_config(config)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise EvaluationError(f"eval.refiner: cannot load {folder}: {type(exc).__name__}: {exc}") from None
    for module in (unet, vae, te2):
        module.requires_grad_(False).eval().to(device)
    logger.info("loaded SDXL refiner from %s", folder)
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2, unet=unet,
        scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )


def _variant(component: Path, stem: str) -> str | None:
    """"fp16" when the component holds only the fp16 weight set (``<stem>.fp16.safetensors``), else None."""
    plain = (component / f"{stem}.safetensors").is_file() or (component / f"{stem}.safetensors.index.json").is_file()
    return None if plain or not list(component.glob(f"{stem}*.fp16*.safetensors*")) else "fp16"
