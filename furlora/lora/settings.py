"""Settings of the ``lora:`` section: which modules of which component get LoRA, and how.

One sub-section per trainable SDXL component (``unet``, ``text_encoder``, ``text_encoder_2``),
each with its own target selection, rank, alpha, dropout, DoRA switch and learning rate::

    lora:
      unet: {preset: attn-ff, rank: 16, alpha: 8}
      text_encoder: {enabled: true, preset: attn, rank: 4, alpha: 2, learning_rate: 5.0e-5}
      text_encoder_2: {enabled: true, blocks: [encoder.layers.30, encoder.layers.31]}

Selection (furlora.lora.targets): the preset(s) pick module kinds, ``blocks`` restricts to
named sub-trees, ``include`` adds modules by glob pattern, ``exclude`` removes them. A preset,
block or pattern that matches nothing is an error, never a silent no-op.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from furlora.models.settings import Precision
from furlora.settings_base import Settings

#: Presets per component kind; the module lists live in furlora.lora.targets.
UNET_PRESETS: tuple[str, ...] = ("attn", "attn-ff", "all-linear", "conv")
TEXT_ENCODER_PRESETS: tuple[str, ...] = ("attn", "attn-mlp")

COMPONENTS: tuple[str, ...] = ("unet", "text_encoder", "text_encoder_2")

SaveFormat = Literal["diffusers", "kohya"]


class ComponentLoraSettings(Settings):
    """LoRA settings of one component (shared fields; the subclasses set the defaults and the valid presets)."""

    valid_presets: ClassVar[tuple[str, ...]]
    enabled: bool = Field(True, description="Put LoRA on this component at all.")
    preset: str | list[str] | None = Field(
        "attn",
        description=(
            "Module kinds to hook: one preset or a list of presets (their union); null for none "
            "(then 'include' patterns alone choose). UNet: attn, attn-ff, all-linear, conv. "
            "Text encoders: attn, attn-mlp."
        ),
    )
    blocks: list[str] = Field(
        default_factory=list,
        description=(
            "Block selectors restricting the selection to these sub-trees, e.g. "
            "['mid_block', 'up_blocks.0'] or ['up_blocks.0.attentions.1'], "
            "['encoder.layers.11'] for a text encoder. Empty: the whole component."
        ),
    )
    include: list[str] = Field(
        default_factory=list,
        description=(
            "Glob patterns over module names adding Linear / Conv2d modules to the preset's, "
            "e.g. '*.time_emb_proj' (still limited to 'blocks')."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns over module names removing modules from the selection, e.g. '*attn2.to_k'.",
    )
    rank: int = Field(4, ge=1, le=1024, description="LoRA rank r (the low-rank width).")
    alpha: float = Field(
        4.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank (stored in every saved file)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training (0 = off).")
    use_dora: bool = Field(
        False,
        description=(
            "Weight-decomposed LoRA (DoRA). Saved in the diffusers format; the kohya export and "
            "diffusers' own loader do not support it."
        ),
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of this component's LoRA weights; null = the optimizer's base rate."
    )

    @property
    def presets(self) -> list[str]:
        """The preset(s) as a list ([] when ``preset`` is null)."""
        if self.preset is None:
            return []
        return [self.preset] if isinstance(self.preset, str) else list(self.preset)

    @field_validator("preset")
    @classmethod
    def _valid_preset(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [] if value is None else ([value] if isinstance(value, str) else value)
        bad = [n for n in names if n not in cls.valid_presets]
        if bad:
            raise ValueError(f"unknown preset {', '.join(repr(b) for b in bad)}; valid presets: {', '.join(cls.valid_presets)}")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"preset list {value} names a preset twice")
        return value

    @model_validator(mode="after")
    def _something_selected(self) -> ComponentLoraSettings:
        if self.enabled and not self.presets and not self.include:
            raise ValueError("enabled, but preset is null and include is empty: nothing would be hooked")
        return self


class UnetLoraSettings(ComponentLoraSettings):
    """LoRA on the UNet (on by default, attention projections)."""

    valid_presets = UNET_PRESETS


class TextEncoderLoraSettings(ComponentLoraSettings):
    """LoRA on a CLIP text encoder (off by default)."""

    valid_presets = TEXT_ENCODER_PRESETS
    enabled: bool = Field(False, description="Put LoRA on this text encoder.")


class LoraSettings(Settings):
    """Which modules get LoRA, with which rank, alpha and learning rate; how files are written."""

    unet: UnetLoraSettings = Field(default_factory=UnetLoraSettings, description="LoRA on the UNet.")
    text_encoder: TextEncoderLoraSettings = Field(
        default_factory=TextEncoderLoraSettings, description="LoRA on text encoder 1 (CLIP ViT-L, 768 wide)."
    )
    text_encoder_2: TextEncoderLoraSettings = Field(
        default_factory=TextEncoderLoraSettings,
        description="LoRA on text encoder 2 (OpenCLIP bigG, 1280 wide, with the pooled projection).",
    )
    save_formats: list[SaveFormat] = Field(
        default_factory=lambda: ["diffusers", "kohya"],
        min_length=1,
        description="File formats written at each save: diffusers (load_lora_weights) and/or kohya (ComfyUI, A1111).",
    )
    save_dtype: Precision = Field("fp32", description="dtype of the saved LoRA tensors (fp16 halves the file size).")

    def component(self, name: str) -> ComponentLoraSettings:
        """The settings section of component ``name`` (unet, text_encoder, text_encoder_2)."""
        if name not in COMPONENTS:
            raise KeyError(f"unknown component {name!r}; components: {', '.join(COMPONENTS)}")
        return getattr(self, name)

    def enabled_components(self) -> list[str]:
        """Names of the components with ``enabled: true``, in the order unet, text_encoder, text_encoder_2."""
        return [name for name in COMPONENTS if self.component(name).enabled]

    @model_validator(mode="after")
    def _at_least_one(self) -> LoraSettings:
        if not self.enabled_components():
            raise ValueError("every component is disabled; set lora.unet.enabled (or a text encoder's) to true")
        if len(set(self.save_formats)) != len(self.save_formats):
            raise ValueError(f"save_formats {self.save_formats} names a format twice")
        return self
