"""LoRA on the SDXL UNet and both text encoders: target selection, peft injection (LoraAdapters),
coverage reports, and LoRA files in the diffusers and kohya formats.

Modules: ``settings`` (the ``lora:`` config section), ``targets`` (presets / blocks / patterns ->
exact module list), ``coverage`` (report), ``adapters`` (LoraAdapters; ``hooks`` is its deprecated old name), ``gradient_flow``,
``weights`` (format-free LoRA tensors), ``formats`` (files), ``kohya_names`` (SDXL original
block naming), ``compat`` (does a file fit the config). Weightless module trees for reports
come from :func:`furlora.models.architecture.build_meta_sdxl`.

The names below are imported lazily: ``furlora.config`` imports ``furlora.lora.settings``, and
validating a config must not wait for torch / peft to import.
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {
    "LoraSettings": "furlora.lora.settings",
    "LoraAdapters": "furlora.lora.adapters",
    "LoraHookManager": "furlora.lora.adapters",  # deprecated alias of LoraAdapters (warns); not in __all__
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

__all__ = sorted(n for n in _EXPORTS if n != "LoraHookManager")
__getattr__ = lazy_exports('furlora.lora', _EXPORTS)
