"""furlora: train SDXL inpainting LoRAs for fur and fine texture.

The public API (imported lazily, so ``import furlora`` stays fast)::

    from furlora import load_config, Trainer
    config = load_config("configs/tiny-cpu.yaml", ["train.max_steps=50"])
    summary = Trainer(config).fit()          # resumes from the newest complete checkpoint

    from furlora import MaskedDataset, LoraAdapters, MultiPassInpainter, run_comparison

Errors are :class:`FurloraError` subclasses (``furlora.errors``); settings live in
``furlora.config.RunConfig`` and its sections.
"""

from furlora.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # configuration and errors
    "RunConfig": "furlora.config",
    "load_config": "furlora.config",
    "FurloraError": "furlora.errors",
    # models
    "load_sdxl": "furlora.models.sdxl",
    "SDXLComponents": "furlora.models.sdxl",
    "ensure_tiny_model": "furlora.models.tiny",
    "encode_prompt": "furlora.models.conditioning",
    # data
    "MaskedDataset": "furlora.data.dataset",
    "collate_samples": "furlora.data.dataset",
    "BucketBatchSampler": "furlora.data.buckets",
    "validate_dataset": "furlora.data.validate",
    # LoRA and tokens
    "LoraAdapters": "furlora.lora.adapters",
    "LoraHookManager": "furlora.lora.adapters",  # deprecated alias of LoraAdapters (warns); not in __all__
    "load_lora_file": "furlora.lora.formats",
    "prepare_tokens": "furlora.tokens.embeddings",
    # training
    "Trainer": "furlora.train.trainer",
    # evaluation
    "MultiPassInpainter": "furlora.eval.inpaint",
    "run_comparison": "furlora.eval.compare",
}

__all__ = sorted(n for n in _EXPORTS if n != "LoraHookManager")
__getattr__ = lazy_exports("furlora", _EXPORTS)
