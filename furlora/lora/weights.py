"""The in-memory form of a LoRA file, independent of the file format.

Keys are "canonical": peft keys prefixed by the component, text-encoder modules always with
their ``text_model.`` level (the form ComfyUI / A1111 expect and the diffusers loader accepts)::

    unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight   [r, in]
    unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight   [out, r]
    text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight         [r, in]
    unet.down_blocks.0.resnets.0.conv1.lora_A.weight                                [r, in, 3, 3]
    unet.down_blocks.0.resnets.0.conv1.lora_B.weight                                [out, r, 1, 1]
    unet.<module>.lora_magnitude_vector                                             DoRA only

A *module key* is ``component.module`` (``unet.down_blocks...to_q``); ``alphas`` maps module
keys to their LoRA alpha (the update is ``B @ A * alpha / rank``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from furlora.lora.settings import COMPONENTS

SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector")


def split_key(key: str) -> tuple[str, str, str] | None:
    """``unet.a.b.lora_A.weight`` -> ("unet", "a.b", ".lora_A.weight"); None if not a canonical key."""
    component = key.split(".", 1)[0]
    if component not in COMPONENTS:
        return None
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            module = key[len(component) + 1: -len(suffix)]
            return (component, module, suffix) if module else None
    return None


@dataclass
class LoraWeights:
    """LoRA tensors with their alphas and file metadata.

    Unpacks as ``(format, tensors, alphas)`` (the cross-helper contract of ``load_lora_file``).
    """

    tensors: dict[str, torch.Tensor]
    alphas: dict[str, float]
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "memory"
    """Where the weights came from: memory, diffusers or kohya."""
    alpha_recorded: bool = True
    """False when the file stored no alpha and alpha = rank was assumed (diffusers' rule)."""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.format, self.tensors, self.alphas))

    def module_keys(self, component: str | None = None) -> list[str]:
        """Module keys (``component.module``) that have a ``lora_A`` tensor, sorted."""
        keys = []
        for key in self.tensors:
            parts = split_key(key)
            if parts and parts[2] == ".lora_A.weight" and (component is None or parts[0] == component):
                keys.append(f"{parts[0]}.{parts[1]}")
        return sorted(keys)

    def components(self) -> list[str]:
        present = {k.split(".", 1)[0] for k in self.module_keys()}
        return [c for c in COMPONENTS if c in present]

    def rank(self, module_key: str) -> int:
        """Rank of one module: the first dimension of its ``lora_A`` weight."""
        return int(self.tensors[f"{module_key}.lora_A.weight"].shape[0])

    def alpha(self, module_key: str) -> float:
        """Alpha of one module; alpha = rank when none is recorded."""
        return float(self.alphas.get(module_key, self.rank(module_key)))

    def uses_dora(self, component: str | None = None) -> bool:
        return any(
            k.endswith(".lora_magnitude_vector") and (component is None or k.startswith(component + "."))
            for k in self.tensors
        )

    def nonfinite_keys(self) -> list[str]:
        """Keys whose tensor holds NaN or inf values."""
        return sorted(k for k, v in self.tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))

    def to(self, dtype: torch.dtype) -> LoraWeights:
        """A copy with every floating tensor cast to ``dtype`` (on the CPU, contiguous)."""
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.tensors.items()}
        return LoraWeights(tensors, dict(self.alphas), dict(self.metadata), self.format, self.alpha_recorded)

    def summary(self) -> dict[str, Any]:
        """Per component: module count, ranks, alphas, parameters, DoRA; plus total bytes."""
        out: dict[str, Any] = {"format": self.format, "alpha_recorded": self.alpha_recorded, "components": {}}
        for component in self.components():
            keys = self.module_keys(component)
            ranks = sorted({self.rank(k) for k in keys})
            alphas = sorted({self.alphas.get(k, float(self.rank(k))) for k in keys})
            params = sum(v.numel() for k, v in self.tensors.items() if k.startswith(component + "."))
            out["components"][component] = {
                "modules": len(keys), "ranks": ranks, "alphas": alphas, "parameters": params,
                "dora": self.uses_dora(component),
            }
        out["tensor_bytes"] = sum(v.numel() * v.element_size() for v in self.tensors.values())
        out["dtypes"] = sorted({str(v.dtype).replace("torch.", "") for v in self.tensors.values()})
        return out
