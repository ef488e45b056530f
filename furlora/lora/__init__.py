"""LoRA on the SDXL UNet and both text encoders: target selection, the peft hook manager,
coverage reports, and LoRA files in the diffusers and kohya formats.

Modules: ``settings`` (the ``lora:`` config section), ``targets`` (presets / blocks / patterns ->
exact module list), ``coverage`` (report), ``hooks`` (LoraHookManager), ``gradient_flow``,
``weights`` (format-free LoRA tensors), ``formats`` (files), ``kohya_names`` (SDXL original
block naming), ``compat`` (does a file fit the config), ``skeleton`` (weightless module trees).

The names below are imported lazily: ``furlora.config`` imports ``furlora.lora.settings``, and
validating a config must not wait for torch / peft to import.
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {
    "LoraSettings": "furlora.lora.settings",
    "LoraHookManager": "furlora.lora.hooks",
    "CoverageReport": "furlora.lora.coverage",
    "GradientFlowReport": "furlora.lora.gradient_flow",
    "LoraWeights": "furlora.lora.weights",
    "TargetSelection": "furlora.lora.targets",
    "select_targets": "furlora.lora.targets",
    "load_lora_file": "furlora.lora.formats",
    "save_diffusers_lora": "furlora.lora.formats",
    "save_kohya_lora": "furlora.lora.formats",
    "save_lora_file": "furlora.lora.formats",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports('furlora.lora', _EXPORTS)
