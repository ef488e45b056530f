"""Models of the GPU check, built in memory on the device (no hub, no weight files read).

The trainer checks ``model.source`` before it uses the components it is given, so real-size
runs point it at a *config-only* SDXL folder: the public configs, the offline tokenizers and a
one-element placeholder weight file per component. The planner reads the real architecture from
it; the weights themselves come from :func:`furlora.models.realsize.build_realsize_components`
(random, real size, built straight on the device in the preset's dtype). ``--size tiny`` uses the
embedded tiny models through the normal loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Placeholder weights: the trainer's folder check wants a readable safetensors file per component.
PLACEHOLDER_NOTE = "config-only SDXL folder of bench/gpu_check.py: weights are built in memory, never read from here"

_COMPONENT_FILES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
}


@dataclass(frozen=True)
class ModelChoice:
    """Which model a preset trains: ``source`` goes into ``model.source``; ``inpainting`` picks the UNet."""

    size: str
    inpainting: bool
    source: str


def model_for(size: str, inpainting: bool, work_dir: Path) -> ModelChoice:
    """The model of one preset: a config-only real SDXL folder, or the embedded tiny model."""
    if size == "tiny":
        return ModelChoice(size, inpainting, "tiny-sdxl-inpaint" if inpainting else "tiny-sdxl")
    folder = work_dir / ("sdxl-inpaint-configs" if inpainting else "sdxl-configs")
    if not (folder / "model_index.json").is_file():
        write_config_folder(folder, inpainting)
    return ModelChoice(size, inpainting, str(folder))


def write_config_folder(folder: Path, inpainting: bool) -> Path:
    """Write the public SDXL configs, the offline tokenizers and placeholder weights into ``folder``."""
    from safetensors.torch import save_file

    from furlora.models.architecture import real_sdxl_config
    from furlora.models.tokenizer import write_tokenizer

    configs = {
        "unet": real_sdxl_config("unet_inpainting" if inpainting else "unet"),
        "vae": real_sdxl_config("vae"),
        "text_encoder": real_sdxl_config("text_encoder"),
        "text_encoder_2": real_sdxl_config("text_encoder_2"),
    }
    for name, config in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file({"placeholder": torch.zeros(1)}, str(folder / name / f"{_COMPONENT_FILES[name]}.safetensors"),
                  metadata={"note": PLACEHOLDER_NOTE})
    write_tokenizer(folder / "tokenizer", pad_token="<|endoftext|>")
    write_tokenizer(folder / "tokenizer_2", pad_token="!")
    scheduler = {k: v for k, v in real_sdxl_config("scheduler").items() if not k.startswith("_")}
    scheduler["_class_name"] = "EulerDiscreteScheduler"
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2), encoding="utf-8")
    index = dict(real_sdxl_config("model_index"))
    index["_class_name"] = "StableDiffusionXLInpaintPipeline" if inpainting else "StableDiffusionXLPipeline"
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    (folder / "README.txt").write_text(PLACEHOLDER_NOTE + "\n", encoding="utf-8")
    return folder


def build_components(choice: ModelChoice, dtype: str, vae_dtype: str, device: torch.device) -> Any:
    """The frozen SDXL components of ``choice`` on ``device`` (UNet and text encoders in ``dtype``)."""
    from furlora.models.sdxl import DTYPES

    if choice.size == "tiny":
        from furlora.models.sdxl import load_sdxl

        return load_sdxl(choice.source, dtype=dtype, vae_dtype=vae_dtype, device=device)
    from furlora.models.realsize import build_realsize_components

    return build_realsize_components(
        inpainting=choice.inpainting, device=device, dtype=DTYPES[dtype], vae_dtype=DTYPES[vae_dtype]
    )
