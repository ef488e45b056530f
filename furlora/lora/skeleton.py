"""SDXL module trees without weights, for target listings and coverage reports.

``furlora targets`` must answer "what would this config hook?" in seconds, also for the real
6.9 GB SDXL: every component is built from its config on the meta device, no weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from furlora.errors import ModelLoadError

#: Names that stand for the real SDXL architecture, built from the public configs on the meta device.
META_MODELS = {"sdxl-meta": "unet", "sdxl-inpaint-meta": "unet_inpainting"}


def build_skeleton(model: str, components: list[str]) -> dict[str, nn.Module]:
    """Meta-device modules of ``components`` (unet, text_encoder, text_encoder_2) of ``model``.

    ``model``: ``sdxl-meta`` / ``sdxl-inpaint-meta`` (the real SDXL base / inpainting
    architecture), an embedded tiny model name, a diffusers-format folder, or a cached hub id.
    """
    from furlora.models.architecture import build_real_sdxl

    if model in META_MODELS:
        names = {"unet": META_MODELS[model], "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
        return {c: build_real_sdxl(names[c], device="meta") for c in components}  # type: ignore[arg-type]

    from furlora.models.sdxl import resolve_model_path

    folder = resolve_model_path(model)
    return {c: _component_from_config(folder, c) for c in components}


def _component_from_config(folder: Path, component: str) -> nn.Module:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_file = folder / component / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{folder} has no {component}/config.json; is it a diffusers-format SDXL folder?")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {exc}") from None
    with torch.device("meta"):
        if component == "unet":
            return UNet2DConditionModel.from_config(config)
        arch = (config.get("architectures") or ["CLIPTextModel"])[0]
        cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
        return cls(CLIPTextConfig.from_pretrained(folder / component))
