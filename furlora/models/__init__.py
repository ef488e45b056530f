"""SDXL models: loading, the embedded tiny models, and module trees built from configs.

One job per module:

* ``settings``        ModelSettings, the ``model:`` config section
* ``public_configs``  the public SDXL config files shipped in ``sdxl_configs/`` (no torch)
* ``architecture``    config dict -> UNet / VAE / CLIP module (meta device by default): ``build_meta_sdxl``
* ``device``          device and dtype choice; ``vae``: VAE encode / decode without casting the VAE
* ``tokenizer``       the tiny models' CLIP tokenizers; ``conditioning``, ``pooling``: SDXL prompt embeddings
* ``cache_folder``    atomic publishing of built model folders
* ``tiny``            embedded tiny SDXL-architecture models (random weights, built once)
* ``pretrained``      the shipped pretrained tiny models (hash-checked)
* ``realsize``        random-weight real-size SDXL (slow tests, device checks)
* ``sdxl``            resolve a model source to a folder, check it, load it (``load_sdxl``)

The names below are imported lazily (importing the package imports no torch).
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {"ModelSettings": "furlora.models.settings", "SDXLComponents": "furlora.models.sdxl",
            "load_sdxl": "furlora.models.sdxl", "resolve_model_path": "furlora.models.sdxl",
            "inspect_model_folder": "furlora.models.sdxl", "ensure_tiny_model": "furlora.models.tiny",
            "build_meta_sdxl": "furlora.models.architecture", "encode_prompt": "furlora.models.conditioning"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("furlora.models", _EXPORTS)
