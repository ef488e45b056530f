"""The public SDXL config files shipped with furlora (``sdxl_configs/``), read without torch.

Copies of ``stabilityai/stable-diffusion-xl-base-1.0`` and
``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``. A leaf module: the tiny, real-size and
meta-device builders all read the real configs from here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

#: Keys of a diffusers config that describe training state, not architecture.
_NON_ARCH_KEYS = ("decay", "inv_gamma", "min_decay", "optimization_step", "power",
                  "update_after_step", "use_ema_warmup", "_name_or_path")


@lru_cache(maxsize=None)
def real_sdxl_config(component: str) -> dict[str, Any]:
    """The public SDXL config dict of ``component`` (unet, unet_inpainting, text_encoder,
    text_encoder_2, vae, scheduler, model_index). Cached: copy it before changing it."""
    name = f"{component}.json"
    text = resources.files("furlora.models").joinpath("sdxl_configs", name).read_text(encoding="utf-8")
    config = json.loads(text)
    for key in _NON_ARCH_KEYS:
        config.pop(key, None)
    return config
