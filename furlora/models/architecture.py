"""SDXL module trees built from configs: the one place that turns a config dict into a module.

``build_component`` builds one UNet / VAE / CLIP text encoder from its config; on the meta device
(the default) no memory is allocated, only the module tree and parameter shapes exist. Used where
the module tree matters but no weights are needed: LoRA target lists and coverage reports
(``furlora targets``), parameter and activation counts for the memory planner, checks of LoRA
and embedding files before a model loads.

A *model name* here is one of:

- ``sdxl-meta`` / ``sdxl-inpaint-meta``: the real SDXL base / inpainting architecture, from copies
  of the public ``stabilityai/stable-diffusion-xl-base-1.0`` and
  ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` configs (``sdxl_configs/``);
- an embedded tiny model name (its spec, no files written);
- a diffusers-format SDXL folder (:func:`furlora.models.sdxl.resolve_model_path` turns a cached
  hub id or a pretrained tiny model name into one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from furlora.errors import ModelLoadError
from furlora.models.public_configs import real_sdxl_config
from furlora.models.tiny import CONFIG_METADATA_KEYS, TINY_MODELS, tiny_spec

RealComponent = Literal["unet", "unet_inpainting", "text_encoder", "text_encoder_2", "vae"]

#: Model names of the real SDXL architecture -> the config file of its UNet.
META_SDXL: dict[str, str] = {"sdxl-meta": "unet", "sdxl-inpaint-meta": "unet_inpainting"}
#: The four weight-carrying components of an SDXL model.
COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2")


def component_config(model: str, component: str) -> dict[str, Any]:
    """The config dict of ``component`` (unet, vae, text_encoder, text_encoder_2) of ``model``
    (a model name, see the module docstring). Reads no weights; a folder's config file that is
    missing or unreadable raises :class:`~furlora.errors.ModelLoadError` naming the file."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown SDXL component {component!r}; use one of {', '.join(COMPONENTS)}")
    if model in META_SDXL:
        return dict(real_sdxl_config(META_SDXL[model] if component == "unet" else component))
    if model in TINY_MODELS:
        return dict(tiny_spec(model)[component])
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{model!r} is neither one of {', '.join([*META_SDXL, *TINY_MODELS])} nor a "
                             "diffusers-format SDXL folder (resolve other names with models.sdxl.resolve_model_path)")
    file = folder / component / "config.json"
    if not file.is_file():
        raise ModelLoadError(f"{folder} has no {component}/config.json; is it a diffusers-format SDXL folder?")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {file}: {exc}") from None


def build_component(component: str, config: dict[str, Any], device: str | torch.device = "meta") -> torch.nn.Module:
    """Build one SDXL component (unet, vae, text_encoder, text_encoder_2) from its config dict.

    ``device="meta"`` allocates nothing; ``device="cpu"`` allocates random weights (a real
    2.6 B parameter UNet needs about 10 GB in fp32; benchmarks only).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = dict(config)
    with torch.device(device):
        if component == "unet":
            return UNet2DConditionModel.from_config(config)
        if component == "vae":
            return AutoencoderKL.from_config(config)
        if component in ("text_encoder", "text_encoder_2"):
            # The config file names its class; SDXL's second encoder is the projecting one.
            default = "CLIPTextModelWithProjection" if component == "text_encoder_2" else "CLIPTextModel"
            arch = (config.get("architectures") or [default])[0]
            for key in CONFIG_METADATA_KEYS:  # CLIPTextConfig(**config) must not see the file's metadata
                config.pop(key, None)
            cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
            return cls(CLIPTextConfig(**config))
    raise ValueError(f"unknown SDXL component {component!r}; use one of {', '.join(COMPONENTS)}")


def build_meta_sdxl(model: str, components: tuple[str, ...] | list[str] = COMPONENTS) -> dict[str, torch.nn.Module]:
    """Meta-device modules of ``components`` of ``model`` (a model name, see the module docstring)."""
    return {c: build_component(c, component_config(model, c)) for c in components}


def build_real_sdxl(component: RealComponent, device: str | torch.device = "meta") -> torch.nn.Module:
    """One real-size SDXL component (``unet_inpainting``: the 9-channel inpainting UNet)."""
    if component not in ("unet", "unet_inpainting", "text_encoder", "text_encoder_2", "vae"):
        raise ValueError(f"unknown SDXL component {component!r}; use unet, unet_inpainting, text_encoder, "
                         "text_encoder_2 or vae")
    kind = "unet" if component == "unet_inpainting" else component
    return build_component(kind, real_sdxl_config(component), device)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter elements (works on the meta device); shared tensors count once."""
    return sum(p.numel() for p in module.parameters())  # parameters() yields a shared tensor once
