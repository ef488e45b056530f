"""Settings of the ``eval:`` section: inpainting passes, LoRA comparison variants, metrics, report.

What is rendered during training (held-out folder, how often, how many images) is set in
``train.validation``; the passes those images use come from here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, model_validator

from furlora.settings_base import Settings

Component = Literal["unet", "text_encoder", "text_encoder_2"]


class PassSettings(Settings):
    """One denoising pass of a multi-pass inpainting run (YAML: an item of ``eval.passes``)."""

    strength: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "How much of the region is re-noised: 1.0 starts from pure noise, 0.3 keeps most of the "
            "current content and refines it. Only int(steps * strength) steps run."
        ),
    )
    steps: int = Field(30, ge=1, description="Scheduler steps at strength 1.0 (the pass runs int(steps * strength)).")
    guidance_scale: float = Field(
        5.0, ge=0.0, description="Classifier-free guidance scale (<= 1 disables guidance: one UNet call per step)."
    )
    prompt: str | None = Field(
        None, description="Prompt of this pass. None: the run's prompt (eval.prompt or the sample's caption)."
    )
    negative_prompt: str | None = Field(None, description="Negative prompt of this pass. None: eval.negative_prompt.")
    grow: int = Field(
        0,
        ge=-256,
        le=256,
        description="Grow (positive) or shrink (negative) the binary mask by this many pixels before feathering.",
    )
    feather: int = Field(
        8,
        ge=0,
        le=256,
        description=(
            "Width in pixels of the blend band outside the grown mask. The blend weight is 1 inside the "
            "grown mask, falls as a smoothstep of the distance to it, and is exactly 0 from this distance "
            "on: pixels there are bit-identical to the input."
        ),
    )
    crop_to_mask: bool = Field(
        False,
        description=(
            "Repaint a crop around the mask at working_resolution and paste it back, instead of the "
            "whole image (small regions get the model's full resolution)."
        ),
    )
    crop_padding: int = Field(
        32, ge=0, description="Context in pixels kept around the mask's blend band when cropping."
    )
    working_resolution: int | None = Field(
        None,
        ge=64,
        description="Long side (pixels, multiple of 8) of the crop or tile the model sees. None: the model's resolution.",
    )
    tile: bool = Field(
        False,
        description=(
            "Process a large image in overlapping tiles of working_resolution (only tiles touching the "
            "mask run); each tile sees the results of the tiles before it."
        ),
    )
    tile_overlap: int = Field(64, ge=0, description="Overlap of neighbouring tiles in pixels (the tile blend width).")
    refiner: bool = Field(
        False, description="Run this pass on the refiner model (eval.refiner) instead of the base model."
    )
    seed: int | None = Field(
        None, ge=0, description="Seed of this pass. None: derived from the run seed and the pass index."
    )

    @model_validator(mode="after")
    def _check(self) -> PassSettings:
        problems = []
        if int(self.steps * self.strength) < 1:
            problems.append(
                f"steps * strength = {self.steps} * {self.strength} leaves 0 denoising steps; "
                "raise steps or strength"
            )
        if self.working_resolution is not None and self.working_resolution % 8:
            problems.append(f"working_resolution {self.working_resolution} is not a multiple of 8")
        if self.crop_to_mask and self.tile:
            problems.append("crop_to_mask and tile are exclusive: crop a small region, tile a large one")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def denoising_steps(self) -> int:
        """Steps the pass actually runs (diffusers: int(steps * strength); strength <= 1)."""
        return int(self.steps * self.strength)


def default_passes() -> list[PassSettings]:
    """Three passes of decreasing strength: repaint, refine, polish (wider feather each time)."""
    return [
        PassSettings(strength=1.0, steps=30, feather=8),
        PassSettings(strength=0.5, steps=30, feather=12),
        PassSettings(strength=0.25, steps=30, feather=16),
    ]


class MetricSettings(Settings):
    """Options of the fur-aware metrics (all distances in pixels of the full image)."""

    seam_width: int = Field(
        2, ge=1, le=32, description="Half-width of the seam line around the mask border where seam error is measured."
    )
    ring_width: int = Field(
        16, ge=1, le=512, description="Width of the ring just outside the blend band used as the surrounding context."
    )
    detail_sigma: float = Field(
        1.5,
        gt=0.0,
        le=16.0,
        description="Gaussian sigma separating high-frequency detail (fur strands) from smooth shading.",
    )
    ssim_sigma: float = Field(1.5, gt=0.0, le=8.0, description="Gaussian window sigma of SSIM.")


class ReportSettings(Settings):
    """How the comparison report looks."""

    thumbnail_size: int = Field(
        256, ge=32, le=2048, description="Long side in pixels of each image cell of the grid (images are scaled to it)."
    )
    zoom_crops: int = Field(2, ge=0, le=6, description="Zoomed crops of the mask border per image (0 = none).")
    zoom_size: int = Field(48, ge=8, le=512, description="Side in pixels of a zoomed crop, in the full image.")
    save_images: bool = Field(True, description="Also save every variant's full-resolution output PNG.")


class EvalSettings(Settings):
    """Multi-pass inpainting evaluation and LoRA comparisons."""

    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description=(
            "Where compare / inpaint / the demo's comparison run: auto (the CUDA GPU when present, like "
            "the trainer), cpu, cuda, cuda:N or mps. Weights in model.dtype, the VAE in model.vae_dtype."
        ),
    )
    passes: list[PassSettings] = Field(
        default_factory=default_passes,
        min_length=1,
        description="The inpainting passes, in order; each starts from the previous pass's result.",
    )
    prompt: str = Field(
        "a photo of a spitz dog, detailed fluffy fur", description="Prompt of every pass that sets none."
    )
    negative_prompt: str = Field(
        "blurry, smooth, painting, artifacts", description="Negative prompt of every pass that sets none."
    )
    use_captions: bool = Field(
        True, description="For dataset samples, use each sample's caption as the prompt (else eval.prompt)."
    )
    seeds: list[NonNegativeInt] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Run seeds; every image and variant is repainted once per seed (same seeds for every variant).",
    )
    lora_scales: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="Scales at which each LoRA file is compared (0 = the same as off).",
    )
    include_off: bool = Field(True, description="Compare against the base model with every LoRA switched off.")
    combine_loras: bool = Field(
        False, description="With several LoRA files, also run all of them together at each scale."
    )
    component_scales: dict[Component, float] = Field(
        default_factory=dict,
        description=(
            "Per-component multipliers of a variant's scale, e.g. {text_encoder: 0, text_encoder_2: 0} "
            "to compare the UNet part alone. Missing components use 1."
        ),
    )
    chaining: Literal["latent", "pixel"] = Field(
        "latent",
        description=(
            "How consecutive passes on the same crop/geometry hand over: 'latent' keeps the latents "
            "(one VAE decode per geometry, fast); 'pixel' decodes, blends and re-encodes after every pass."
        ),
    )
    mask_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Mask values >= this are repainted (masks are binarised, 1 = repaint)."
    )
    resize_mask: bool = Field(
        False, description="Resize a mask whose size differs from its image (nearest neighbour) instead of failing."
    )
    max_side_factor: float = Field(
        1.5,
        ge=1.0,
        description=(
            "Images whose long side exceeds the model resolution times this need crop_to_mask or tile in "
            "every pass (else an error)."
        ),
    )
    refiner: str | None = Field(
        None, description="Folder of an SDXL refiner (text_encoder_2 only) for passes with refiner: true."
    )
    max_images: int | None = Field(None, ge=1, description="Evaluate at most this many dataset images.")
    repaint_regions: list[str] | None = Field(
        None,
        description=(
            "For dataset samples: which region masks are repainted (merged). None: every region of the "
            "sample. Metrics are reported for the whole repaint and for each region."
        ),
    )
    keep_pass_images: bool = Field(
        False, description="Decode and keep every pass's intermediate image (slower; shown in the report)."
    )
    progress: bool = Field(True, description="Show a progress bar over images, variants and passes.")
    metrics: MetricSettings = Field(default_factory=MetricSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @model_validator(mode="after")
    def _check(self) -> EvalSettings:
        if any(p.refiner for p in self.passes) and not self.refiner:
            raise ValueError("a pass has refiner: true but eval.refiner (the refiner model folder) is not set")
        return self
