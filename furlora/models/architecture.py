"""The real SDXL architecture, built from its public configs on the meta device (no weights).

Used where the real module tree matters but no weights exist here: LoRA target lists and
coverage reports, parameter counts for the memory planner, key-name checks. The configs are
copies of the public ``stabilityai/stable-diffusion-xl-base-1.0`` and
``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` config files (``sdxl_configs/``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import torch

RealComponent = Literal["unet", "unet_inpainting", "text_encoder", "text_encoder_2", "vae"]

#: Keys of a diffusers config that describe training state, not architecture.
_NON_ARCH_KEYS = ("decay", "inv_gamma", "min_decay", "optimization_step", "power",
                  "update_after_step", "use_ema_warmup", "_name_or_path")


@lru_cache(maxsize=None)
def real_sdxl_config(component: str) -> dict[str, Any]:
    """The public SDXL config dict of ``component`` (unet, unet_inpainting, text_encoder,
    text_encoder_2, vae, scheduler, model_index)."""
    name = f"{component}.json"
    text = resources.files("furlora.models").joinpath("sdxl_configs", name).read_text(encoding="utf-8")
    config = json.loads(text)
    for key in _NON_ARCH_KEYS:
        config.pop(key, None)
    return config


def build_real_sdxl(component: RealComponent, device: str | torch.device = "meta") -> torch.nn.Module:
    """Build one real-size SDXL component with its real architecture.

    On ``device="meta"`` (the default) no memory is allocated: only the module tree and
    parameter shapes exist. ``device="cpu"`` allocates random weights (a 2.6 B parameter UNet
    needs about 10 GB in fp32; benchmarks only).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = dict(real_sdxl_config(component))
    with torch.device(device):
        if component in ("unet", "unet_inpainting"):
            return UNet2DConditionModel.from_config(config)
        if component == "vae":
            return AutoencoderKL.from_config(config)
        if component in ("text_encoder", "text_encoder_2"):
            arch = config.pop("architectures", ["CLIPTextModel"])[0]
            for key in ("torch_dtype", "transformers_version", "model_type"):
                config.pop(key, None)
            cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
            return cls(CLIPTextConfig(**config))
    raise ValueError(f"unknown SDXL component {component!r}; use unet, unet_inpainting, text_encoder, "
                     "text_encoder_2 or vae")


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter elements (works on the meta device); shared tensors count once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
