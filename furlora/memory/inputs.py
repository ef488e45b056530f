"""What the memory planner needs to know about a run: :class:`PlanInput`, and byte-size parsing.

A :class:`PlanInput` is deliberately small and flat: every field is something that changes peak
memory. It is built from a run config by :func:`furlora.memory.adapter.plan_input_from_config`
(the only place that knows the config's field names), or directly in code and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from furlora.errors import ConfigError, format_problems
from furlora.lora.settings import COMPONENTS as LORA_COMPONENTS
from furlora.models.architecture import META_SDXL, TINY_MODELS
from furlora.models.settings import Precision

GiB = 1 << 30
MiB = 1 << 20

MixedPrecision = Literal["no", "fp16", "bf16"]
Attention = Literal["sdpa", "sliced", "math"]
Optimizer = Literal["adamw", "adamw8bit"]
Device = Literal["cuda", "cpu"]

#: Named architectures (anything else must be a diffusers-format SDXL folder).
ARCHITECTURES: tuple[str, ...] = (*META_SDXL, *TINY_MODELS)


@dataclass(frozen=True)
class LoraPlan:
    """LoRA on one component, as the planner needs it.

    ``targets``: exact qualified module names (peft ``target_modules``) on the component's
    module tree; ``None`` means the attention projections (to_q/to_k/to_v/to_out.0 on the UNet,
    q/k/v/out_proj on a text encoder). Use :func:`furlora.memory.params.lora_targets` to turn a
    LoRA settings section into names.
    """

    rank: int = 4
    targets: tuple[str, ...] | None = None
    dropout: float = 0.0
    use_dora: bool = False


@dataclass(frozen=True)
class PlanInput:
    """Everything that moves the peak memory of one training run.

    Byte counts of weights come from the real module tree of ``architecture`` (built on the meta
    device, no weights); activations from a simulated training step at ``resolution``.
    """

    architecture: str = "sdxl-meta"
    """``sdxl-meta``, ``sdxl-inpaint-meta`` (the real SDXL architecture), ``tiny-sdxl``, ``tiny-sdxl-inpaint`` or a diffusers-format SDXL folder."""
    resolution: tuple[int, int] = (1024, 1024)
    """(height, width) in pixels of the largest training batch (largest bucket / schedule phase)."""
    batch_size: int = 1
    """Samples per micro-batch (gradient accumulation does not change the peak)."""
    gradient_accumulation_steps: int = 1
    weight_dtype: Precision = "fp32"
    """dtype of the frozen UNet and text-encoder weights."""
    vae_dtype: Precision = "fp32"
    mixed_precision: MixedPrecision = "no"
    """Autocast precision of the forward passes ("no": everything runs in its weight dtype)."""
    lora_dtype: Precision = "fp32"
    """dtype of the trainable LoRA weights (and so of their gradients and AdamW state)."""
    lora: dict[str, LoraPlan] = field(default_factory=lambda: {"unet": LoraPlan()})
    """Component name (unet, text_encoder, text_encoder_2) -> its LoRA; absent = no LoRA there."""
    gradient_checkpointing: bool = False
    attention: Attention = "sdpa"
    """sdpa: fused kernel (flash / memory-efficient, no N x N matrix); sliced: diffusers attention
    slicing (explicit softmax per head slice; in training every slice is kept for backward);
    math: explicit softmax attention."""
    optimizer: Optimizer = "adamw"
    text_encoders_resident: bool = True
    """Frozen text encoders stay on the device during training (False: their outputs are cached
    and the encoders unloaded; a trained encoder is always resident)."""
    vae_resident: bool = True
    """The VAE stays on the device during training (False: latents cached, VAE unloaded)."""
    encode_latents_per_step: bool = True
    """A VAE encode can run inside a training step (cache misses, the inpainting masked image)."""
    encode_text_per_step: bool = True
    """A frozen text-encoder forward can run inside a training step."""
    ema: bool = False
    """An EMA copy of the LoRA weights on the device."""
    prior_preservation: bool = False
    """An extra no-grad UNet forward with the adapter off per step."""
    sample_during_training: bool = False
    """Validation images are generated during training (UNet with CFG + VAE decode)."""
    device: Device = "cuda"
    """cuda: add the CUDA context and allocator slack; cpu: add the process baseline only."""

    def with_changes(self, **changes: Any) -> PlanInput:
        """A copy with some fields changed (validated)."""
        updated = replace(self, **changes)
        updated.validate()
        return updated

    def validate(self) -> PlanInput:
        """Raise :class:`ConfigError` listing every bad field; return ``self`` when all is well."""
        problems: list[str] = []
        h, w = self.resolution
        if h < 64 or w < 64 or h % 8 or w % 8:
            problems.append(f"resolution {self.resolution}: both sides must be >= 64 and multiples of 8")
        for name in ("batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)}: must be >= 1")
        choices = {"weight_dtype": Precision, "vae_dtype": Precision, "lora_dtype": Precision,
                   "mixed_precision": MixedPrecision, "attention": Attention, "optimizer": Optimizer, "device": Device}
        for name, kind in choices.items():
            if getattr(self, name) not in get_args(kind):
                problems.append(f"{name} {getattr(self, name)!r}: use one of {', '.join(get_args(kind))}")
        for component, plan in self.lora.items():
            if component not in LORA_COMPONENTS:
                problems.append(f"lora component {component!r}: use one of {', '.join(LORA_COMPONENTS)}")
            if plan.rank < 1:
                problems.append(f"lora.{component}.rank {plan.rank}: must be >= 1")
        if not self.lora:
            problems.append("lora: no component trains; nothing to plan")
        if problems:
            raise ConfigError(format_problems("invalid memory plan input", problems))
        return self

    def describe(self) -> dict[str, Any]:
        """Plain dict of the fields (for JSON output)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "lora":
                value = {k: {"rank": v.rank, "targets": "attention" if v.targets is None else len(v.targets),
                             "dropout": v.dropout, "use_dora": v.use_dora} for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


# ----------------------------------------------------------------------------- sizes

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_memory_size(text: str, what: str = "--gpu-memory") -> int:
    """Parse ``16GB``, ``16 GiB``, ``12g``, ``24576MB`` into bytes.

    Units are binary (1 GB = 2**30 bytes), as GPU makers count: a "16 GB" card has 16 GiB. A bare
    number is refused, since "16" might mean bytes or gigabytes.
    """
    match = _SIZE.match(str(text))
    if not match or (not match.group(2) and not match.group(3)):
        raise ConfigError(
            f"{what} {text!r} is not a memory size; give a number with a unit, e.g. 12GB, 16GiB or 24576MB"
        )
    value = float(match.group(1)) * (1024 ** _POWERS[match.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"{what} {text!r} must be larger than zero")
    return int(value)


def format_bytes(n: float) -> str:
    """Human-readable binary size: ``1.23 GiB``, ``45.6 MiB``, ``512 B``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{sign}{n / size:.2f} {unit}"
    return f"{sign}{int(n)} B"
