"""Does the exported LoRA do in diffusers what it did in furlora?

Two forward passes of the same UNet on the same inputs (one denoising step: the UNet's
prediction at a fixed timestep, with text conditioning from both encoders so text-encoder LoRA
counts too): once with furlora's own LoRA layers, once after those layers are removed and the
exported diffusers-format file is loaded with ``pipeline.load_lora_weights``. The mismatch is
measured against the LoRA's own effect (LoRA output minus base output), so a scale or alpha
error shows however small the trained update is. A LoRA trained for a few steps barely moves
the output, so a second file, with the trained down-projections and seeded random
up-projections, makes the effect large enough that bf16 rounding cannot hide an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("gpu_check")

LORA_CHECK_FIELDS: tuple[str, ...] = (
    "status", "reason", "file", "components", "modules", "latent_size", "tolerance", "trained", "amplified",
)
#: Mismatch allowed, relative to the LoRA's effect: bf16 matmuls under autocast, same kernels both ways.
TOLERANCE = {"cpu": 1e-3, "cuda": 5e-2}
PROMPT = "a photo of a white spitz dog, fluffy fur"
_SEED = 1234


def empty_check() -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(LORA_CHECK_FIELDS)
    result["status"] = "skipped"
    return result


def _inputs(components: Any, resolution: int, device: torch.device) -> dict[str, Any]:
    from furlora.models.conditioning import tokenize

    unet = components.unet
    side = resolution // 8
    generator = torch.Generator().manual_seed(_SEED)
    latents = torch.randn(1, 4, side, side, generator=generator)
    if unet.config.in_channels == 9:
        mask = (torch.rand(1, 1, side, side, generator=generator) > 0.5).float()
        masked = torch.randn(1, 4, side, side, generator=generator)
        latents = torch.cat([latents, mask, masked], dim=1)
    return {
        "sample": latents.to(device, unet.dtype),
        "timestep": torch.tensor([500], device=device),
        "ids_1": tokenize(components.tokenizer, [PROMPT]),
        "ids_2": tokenize(components.tokenizer_2, [PROMPT]),
        "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=unet.dtype, device=device),
    }


@torch.no_grad()
def _denoise(unet: Any, te1: Any, te2: Any, inputs: dict[str, Any], autocast: Any) -> torch.Tensor:
    from furlora.models.conditioning import encode_tokens

    for module in (unet, te1, te2):
        module.eval()
    with autocast():
        embeds, pooled = encode_tokens(te1, te2, inputs["ids_1"], inputs["ids_2"])
        out = unet(
            inputs["sample"], inputs["timestep"], encoder_hidden_states=embeds.to(unet.dtype),
            added_cond_kwargs={"text_embeds": pooled.to(unet.dtype), "time_ids": inputs["time_ids"]},
        ).sample
    return out.float().cpu()


def _amplify(manager: Any) -> None:
    """Seeded random up-projections (std 0.05) in place of the trained ones."""
    generator = torch.Generator().manual_seed(_SEED + 1)
    with torch.no_grad():
        for key, param in manager.named_lora_parameters().items():
            if ".lora_B." in key:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def strip_lora_layers(modules: list[Any]) -> int:
    """Replace every peft LoRA layer by its base layer (the module is the base model again)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    count = 0
    for root in modules:
        found = [(parent, name, child) for parent in root.modules() for name, child in parent.named_children()
                 if isinstance(child, BaseTunerLayer)]
        for parent, name, child in found:
            setattr(parent, name, child.get_base_layer())
            count += 1
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in root.__dict__:
                delattr(root, attr)
    return count


def _pipeline(components: Any) -> Any:
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLInpaintPipeline if components.unet.config.in_channels == 9 else StableDiffusionXLPipeline
    pipe = cls(**components.pipeline_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _compare(furlora_out: torch.Tensor, diffusers_out: torch.Tensor, base: torch.Tensor) -> dict[str, float]:
    effect = float((furlora_out - base).norm())
    diff = float((diffusers_out - furlora_out).norm())
    return {
        "effect_rel": effect / max(float(base.norm()), 1e-12),
        "mismatch_rel": diff / max(effect, 1e-12),
        "max_abs_diff": float((diffusers_out - furlora_out).abs().max()),
        "finite": bool(torch.isfinite(diffusers_out).all() and torch.isfinite(furlora_out).all()),
    }


def lora_round_trip(trainer: Any, work_dir: Path, device: torch.device) -> tuple[dict[str, Any], Any]:
    """Run the check on a trained :class:`~furlora.train.trainer.Trainer`.

    Returns the result and a diffusers pipeline of the (LoRA-free) base model on the device,
    for the comparison that follows. The trainer's LoRA layers are removed from its modules.
    """
    result = empty_check()
    components = trainer.components
    manager = trainer.manager
    exported = getattr(trainer, "files", {}).get("diffusers")
    if exported is None:
        exported = str(manager.save(work_dir / "lora-check-trained.safetensors", format="diffusers"))
        result["reason"] = "the run exported no diffusers file; saved one with the manager"
    resolution = int(trainer.run.config.data.resolution)
    inputs = _inputs(components, resolution, device)
    modules = (components.unet, components.text_encoder, components.text_encoder_2)
    with manager.disabled():
        base = _denoise(*modules, inputs, trainer.run.autocast)
    trained = _denoise(*modules, inputs, trainer.run.autocast)
    _amplify(manager)
    amplified_file = manager.save(work_dir / "lora-check-amplified.safetensors", format="diffusers")
    amplified = _denoise(*modules, inputs, trainer.run.autocast)

    stripped = strip_lora_layers(list(modules))
    pipe = _pipeline(components)
    outputs = {}
    for label, path in (("trained", exported), ("amplified", amplified_file)):
        pipe.load_lora_weights(str(path), adapter_name=f"check_{label}")
        outputs[label] = _denoise(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, inputs, trainer.run.autocast)
        pipe.unload_lora_weights()
    after = _denoise(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, inputs, trainer.run.autocast)

    tolerance = TOLERANCE["cuda" if device.type == "cuda" else "cpu"]
    result.update(
        file=Path(exported).name, components=list(trainer.run.trained), modules=stripped,
        latent_size=resolution // 8, tolerance=tolerance,
        trained=_compare(trained, outputs["trained"], base),
        amplified=_compare(amplified, outputs["amplified"], base),
    )
    base_back = float((after - base).norm()) / max(float(base.norm()), 1e-12)
    problems = []
    if not (result["trained"]["finite"] and result["amplified"]["finite"]):
        problems.append("non-finite output")
    if result["amplified"]["mismatch_rel"] > tolerance:
        problems.append(f"diffusers output differs from furlora's by {result['amplified']['mismatch_rel']:.3g} "
                        f"of the LoRA effect (tolerance {tolerance:g})")
    if base_back > tolerance * 1e-2:
        problems.append(f"after unloading the LoRA the base output changed (relative {base_back:.3g})")
    result["status"] = "failed" if problems else "ok"
    if problems:
        result["reason"] = "; ".join(problems)
    return result, pipe
