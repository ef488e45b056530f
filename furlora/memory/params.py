"""Countable memory: weights, LoRA weights, gradients and optimizer state, from real module trees.

Every count comes from a module tree built on the meta device (shapes, no storage): the real
SDXL configs, the embedded tiny models' specs, or the config files of a local diffusers folder.
LoRA layers are injected with peft on the meta copy exactly as training does, so the trainable
parameter count is whatever peft creates (DoRA magnitudes included), never a formula typed in.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from furlora.errors import ConfigError
from furlora.memory.inputs import LoraPlan

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2")

#: bitsandbytes 8-bit optimizers keep tensors smaller than this in 32-bit state (their default).
BNB_MIN_8BIT_SIZE = 4096
#: bitsandbytes blockwise quantisation: one fp32 absmax per block of this many elements.
BNB_BLOCKSIZE = 256
#: bitsandbytes' two shared 256-entry fp32 quantisation maps (dynamic, unsigned dynamic).
BNB_QMAP_BYTES = 2 * 256 * 4

_TEXT_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def dtype_size(name: str) -> int:
    """Bytes per element of ``fp32`` / ``fp16`` / ``bf16``."""
    return torch.empty((), dtype=DTYPES[name]).element_size()


# ----------------------------------------------------------------------------- architectures

def component_configs(architecture: str) -> dict[str, dict[str, Any]]:
    """Config dicts of the four SDXL components of ``architecture`` (see PlanInput.architecture)."""
    from furlora.models.architecture import real_sdxl_config
    from furlora.models.tiny import TINY_MODELS, tiny_spec

    if architecture in ("sdxl", "sdxl-inpainting"):
        unet = "unet_inpainting" if architecture == "sdxl-inpainting" else "unet"
        return {
            "unet": dict(real_sdxl_config(unet)),
            "vae": dict(real_sdxl_config("vae")),
            "text_encoder": dict(real_sdxl_config("text_encoder")),
            "text_encoder_2": dict(real_sdxl_config("text_encoder_2")),
        }
    if architecture in TINY_MODELS:
        spec = tiny_spec(architecture)
        return {name: dict(spec[name]) for name in COMPONENTS}
    folder = Path(architecture)
    if not folder.is_dir():
        raise ConfigError(
            f"architecture {architecture!r} is neither one of sdxl, sdxl-inpainting, tiny-sdxl, "
            "tiny-sdxl-inpaint nor an existing diffusers-format SDXL folder"
        )
    configs: dict[str, dict[str, Any]] = {}
    for name in COMPONENTS:
        file = folder / name / "config.json"
        try:
            configs[name] = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file}: cannot read the {name} config to plan memory ({exc})") from None
    return configs


@lru_cache(maxsize=8)
def _meta_component(architecture: str, component: str) -> nn.Module:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = dict(component_configs(architecture)[component])
    with torch.device("meta"):
        if component == "unet":
            module: nn.Module = UNet2DConditionModel.from_config(config)
        elif component == "vae":
            module = AutoencoderKL.from_config(config)
        else:
            for key in ("architectures", "torch_dtype", "dtype", "transformers_version", "model_type", "_name_or_path"):
                config.pop(key, None)
            cls = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
            module = cls(CLIPTextConfig(**config))
    module.requires_grad_(False)
    return module


def meta_component(architecture: str, component: str, dtype: str | None = None) -> nn.Module:
    """A fresh meta-device copy of one component (cheap: the built tree is cached and deep-copied).

    ``dtype``: cast floating parameters and buffers (as ``Module.to(dtype)`` does).
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; use one of {', '.join(COMPONENTS)}")
    module = copy.deepcopy(_meta_component(architecture, component))
    if dtype is not None:
        # nn.Module.to, not diffusers' override, which warns about keep-in-fp32 modules on every cast
        nn.Module.to(module, DTYPES[dtype])
    return module


def weight_bytes(module: nn.Module, dtype: str) -> int:
    """Bytes of a module's parameters and buffers after ``module.to(dtype)``.

    Floating tensors take ``dtype``; integer buffers (CLIP position ids) keep their own size, as
    ``Module.to`` leaves them. Shared tensors count once.
    """
    size = dtype_size(dtype)
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * (size if t.is_floating_point() else t.element_size())
    return total


@lru_cache(maxsize=64)
def component_weight_bytes(architecture: str, component: str, dtype: str) -> int:
    """Weight bytes of one frozen component at ``dtype``."""
    return weight_bytes(_meta_component(architecture, component), dtype)


# ----------------------------------------------------------------------------- LoRA

def lora_targets(component: str, root: nn.Module, settings: Any | None = None) -> tuple[str, ...]:
    """Qualified names of the modules that get LoRA on ``root``.

    ``settings``: a LoRA settings section (furlora.lora.settings.ComponentLoraSettings) resolved
    with furlora.lora.targets (presets, blocks, include / exclude patterns); ``None``: the
    attention projections.
    """
    if settings is not None:
        from furlora.lora.targets import select_targets

        return tuple(select_targets(component, root, settings).live_names)
    suffixes = _UNET_ATTENTION if component == "unet" else _TEXT_ATTENTION
    names = [n for n, m in root.named_modules() if isinstance(m, nn.Linear)
             and any(n == s or n.endswith("." + s) for s in suffixes)]
    if not names:
        raise ConfigError(f"{component}: no attention projection found to put LoRA on")
    return tuple(names)


def inject_lora(module: nn.Module, component: str, plan: LoraPlan, lora_dtype: str) -> nn.Module:
    """Add peft LoRA layers to ``module`` in place (as training does); LoRA weights in ``lora_dtype``."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = plan.targets if plan.targets is not None else lora_targets(component, module)
    config = LoraConfig(
        r=plan.rank,
        lora_alpha=plan.rank,
        target_modules=list(targets),
        lora_dropout=plan.dropout,
        use_dora=plan.use_dora,
    )
    module = inject_adapter_in_model(config, module)
    for name, p in module.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(DTYPES[lora_dtype])
            p.requires_grad_(True)
    return module


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (each once)."""
    seen: set[int] = set()
    out = []
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


@lru_cache(maxsize=64)
def lora_shapes(architecture: str, component: str, plan: LoraPlan) -> tuple[tuple[int, ...], ...]:
    """Shapes of every trainable LoRA tensor of ``component`` (meta device, peft-injected)."""
    module = inject_lora(meta_component(architecture, component), component, plan, "fp32")
    return tuple(tuple(p.shape) for p in trainable_parameters(module))


def lora_numels(architecture: str, lora: dict[str, LoraPlan]) -> list[int]:
    """Element counts of every trainable tensor of a run (all LoRA components)."""
    return [math.prod(shape) for c, plan in lora.items() for shape in lora_shapes(architecture, c, plan)]


# ----------------------------------------------------------------------------- optimizer

def optimizer_state_bytes(numels: list[int], optimizer: str, param_dtype: str) -> int:
    """Bytes of optimizer state for parameters of these sizes, as the optimizers allocate it.

    ``adamw`` (torch): exp_avg and exp_avg_sq in the parameter dtype, plus a 4-byte float32 step
    counter per tensor. ``adamw8bit`` (bitsandbytes): for tensors of at least 4096 elements two
    uint8 states and one fp32 absmax per 256-element block each, plus the two shared quantisation
    maps; smaller tensors keep two fp32 states (bitsandbytes' ``min_8bit_size``).
    """
    if optimizer == "adamw":
        return sum(2 * n * dtype_size(param_dtype) + 4 for n in numels)
    if optimizer == "adamw8bit":
        total = 0
        quantised = False
        for n in numels:
            if n < BNB_MIN_8BIT_SIZE:
                total += 2 * n * 4
            else:
                quantised = True
                total += 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCKSIZE)
        return total + (BNB_QMAP_BYTES if quantised else 0)
    raise ValueError(f"unknown optimizer {optimizer!r} (use adamw or adamw8bit)")
