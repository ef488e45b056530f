"""Helpers of the evaluation tests (small images, masks, settings, random LoRA weights)."""

from __future__ import annotations

import numpy as np
import torch

from furlora.eval.settings import EvalSettings, PassSettings


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: smooth colour gradients plus fine noise (a stand-in for fur)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([0.3 + 0.4 * x, 0.5 - 0.3 * y, 0.4 + 0.2 * np.sin(6 * x)], axis=-1)
    noisy = np.clip(base + 0.12 * rng.standard_normal((height, width, 3)), 0, 1)
    return np.rint(noisy * 255).astype(np.uint8)


def box_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """uint8 [H, W] with 255 inside the box (repaint) and 0 elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = 255
    return mask


def fast_settings(*passes: PassSettings, **kwargs) -> EvalSettings:
    """Settings with the given passes (default: one 2-step pass), no progress bar."""
    chosen = list(passes) or [PassSettings(strength=1.0, steps=2, feather=4)]
    return EvalSettings(passes=chosen, progress=False, **kwargs)


def random_lora_weights(components, seed: int = 0, scale: float = 0.5, text: bool = True):
    """Canonical LoraWeights on the attention of the tiny UNet (and TE1's q_proj), random A and B."""
    from furlora.lora.weights import LoraWeights

    g = torch.Generator().manual_seed(seed)
    tensors, alphas = {}, {}
    targets = [("unet", "", components.unet, ("attn1.to_q", "attn2.to_k", "attn1.to_out.0", "attn2.to_v"))]
    if text:
        targets.append(("text_encoder", "text_model.", components.text_encoder, ("self_attn.q_proj",)))
    for component, prefix, module, suffixes in targets:
        for name, layer in module.named_modules():
            if name.endswith(suffixes) and hasattr(layer, "weight"):
                out_f, in_f = layer.weight.shape
                key = f"{component}.{prefix}{name}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(4, in_f, generator=g) * scale
                tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, 4, generator=g) * scale
                alphas[key] = 8.0
    return LoraWeights(tensors, alphas)
