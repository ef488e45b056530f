"""Countable memory: weights, LoRA weights, gradients and optimizer state, from real module trees.

Every count comes from a module tree built on the meta device (shapes, no storage): the real
SDXL configs, the embedded tiny models' specs, or the config files of a local diffusers folder.
LoRA layers are injected with peft on the meta copy exactly as training does, so the trainable
parameter count is whatever peft creates (DoRA magnitudes included), never a formula typed in.
"""

from __future__ import annotations

import copy
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from furlora.errors import ConfigError, ModelLoadError
from furlora.memory.inputs import ARCHITECTURES, LORA_COMPONENTS, LoraPlan
from furlora.models.architecture import COMPONENTS
from furlora.models.device import DTYPES

logger = logging.getLogger(__name__)

#: bitsandbytes 8-bit optimizers keep tensors smaller than this in 32-bit state (their default).
BNB_MIN_8BIT_SIZE = 4096
#: bitsandbytes blockwise quantisation: one fp32 absmax per block of this many elements.
BNB_BLOCKSIZE = 256
#: bitsandbytes' two shared 256-entry fp32 quantisation maps (dynamic, unsigned dynamic).
BNB_QMAP_BYTES = 2 * 256 * 4


def dtype_size(name: str) -> int:
    """Bytes per element of ``fp32`` / ``fp16`` / ``bf16``."""
    return DTYPES[name].itemsize


# ----------------------------------------------------------------------------- architectures

#: Planner names of the real SDXL architecture before they became the model names.
_OLD_NAMES = {"sdxl": "sdxl-meta", "sdxl-inpainting": "sdxl-inpaint-meta"}


def component_configs(architecture: str) -> dict[str, dict[str, Any]]:
    """Config dicts of the four SDXL components of ``architecture`` (see PlanInput.architecture)."""
    from furlora.models.architecture import component_config

    if architecture in _OLD_NAMES:
        raise ConfigError(f"architecture {architecture!r} is now called {_OLD_NAMES[architecture]!r}; "
                          f"write {_OLD_NAMES[architecture]}")
    if architecture not in ARCHITECTURES and not Path(architecture).is_dir():
        raise ConfigError(
            f"architecture {architecture!r} is neither one of {', '.join(ARCHITECTURES)} "
            "nor an existing diffusers-format SDXL folder"
        )
    try:
        return {name: component_config(architecture, name) for name in COMPONENTS}
    except ModelLoadError as exc:
        raise ConfigError(f"cannot read the configs to plan memory: {exc}") from None


@lru_cache(maxsize=8)
def _meta_component(architecture: str, component: str) -> nn.Module:
    from furlora.models.architecture import build_component

    module = build_component(component, component_configs(architecture)[component])
    module.requires_grad_(False)
    return module


def meta_component(architecture: str, component: str, dtype: str | None = None) -> nn.Module:
    """A fresh meta-device copy of one component (cheap: the built tree is cached and deep-copied).

    ``dtype``: cast floating parameters and buffers (as ``Module.to(dtype)`` does).
    """
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
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()
    return sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in tensors)


@lru_cache(maxsize=64)
def component_weight_bytes(architecture: str, component: str, dtype: str) -> int:
    """Weight bytes of one frozen component at ``dtype``."""
    return weight_bytes(_meta_component(architecture, component), dtype)


# ----------------------------------------------------------------------------- LoRA

def lora_targets(component: str, root: nn.Module, settings: Any | None = None) -> tuple[str, ...]:
    """Live names of the modules that get LoRA on ``root``, resolved with furlora.lora.targets as
    training resolves them. ``settings``: a LoRA settings section
    (furlora.lora.settings.ComponentLoraSettings); ``None``: the default section (attention projections).
    """
    from furlora.lora.targets import select_targets

    section = settings or _lora_settings(component, LoraPlan()).component(component)
    return tuple(select_targets(component, root, section).live_names)


def _lora_settings(component: str, plan: LoraPlan) -> Any:
    """LoraSettings with LoRA on ``component`` only, as ``plan`` describes (alpha = rank)."""
    from furlora.lora.settings import LoraSettings

    section = {"enabled": True, "rank": plan.rank, "alpha": plan.rank, "dropout": plan.dropout, "use_dora": plan.use_dora}
    others = {c: {"enabled": False} for c in LORA_COMPONENTS if c != component}
    return LoraSettings.model_validate({**others, component: section})


def inject_lora(module: nn.Module, component: str, plan: LoraPlan, lora_dtype: str) -> nn.Module:
    """Add LoRA to ``module`` in place with the training's injection path
    (furlora.lora.adapters on the meta device); LoRA weights in ``lora_dtype``."""
    from furlora.lora.adapters import LoraAdapters

    targets = {component: plan.targets} if plan.targets is not None else None
    manager = LoraAdapters({component: module}, _lora_settings(component, plan), targets=targets)
    manager.apply()
    for p in manager.trainable_parameters():
        p.data = p.data.to(DTYPES[lora_dtype])
        p.requires_grad_(True)
    return module


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (each once: ``parameters()`` yields a shared one once)."""
    return [p for p in module.parameters() if p.requires_grad]


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
