"""Settings of the ``model:`` section: which SDXL model to load and in what precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from furlora.settings_base import Settings

Precision = Literal["fp32", "fp16", "bf16"]


class ModelSettings(Settings):
    """Which SDXL model to load, and how."""

    source: str = Field(
        "tiny-sdxl-inpaint",
        description=(
            "An embedded tiny model name (tiny-sdxl, tiny-sdxl-inpaint), a diffusers-format SDXL "
            "folder, or a hub id already in the local cache (e.g. "
            "stabilityai/stable-diffusion-xl-base-1.0)."
        ),
    )
    dtype: Precision = Field("fp32", description="Weight dtype of the frozen UNet and text encoders.")
    vae_dtype: Precision = Field(
        "fp32", description="Weight dtype of the VAE. fp32 by default: the SDXL VAE overflows in fp16."
    )
    variant: str | None = Field(
        None, description="Weight file variant to read (e.g. 'fp16' for *.fp16.safetensors). None: auto."
    )
    revision: str | None = Field(None, description="Hub revision, for hub ids only.")
