"""Settings of the ``data:`` section: where samples come from and how they are made.

YAML keys equal the field names below. Sub-sections group the knobs of one module each:
``masks`` (furlora.data.masks), ``inpaint_mask`` (furlora.data.random_masks), ``augment``
(furlora.data.transforms), ``buckets`` (furlora.data.buckets), ``captions`` (the layouts).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from furlora.settings_base import Settings

#: Region names are used in file names (``<stem>.<region>.png``) and log keys.
REGION_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class MaskSettings(Settings):
    """How region masks are read, cleaned up and merged into the training mask."""

    mode: Literal["binary", "grey"] = Field(
        "binary",
        description=(
            "binary: a pixel belongs to a region when its mask value >= threshold. "
            "grey: the mask value (0..1) is kept as a per-pixel weight."
        ),
    )
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="Binarisation threshold (mask values are 0..1).")
    merge: Literal["union", "max", "weighted_sum"] = Field(
        "max",
        description=(
            "How region masks become one training mask (the loss weight map). union: max of the "
            "unweighted masks (needs every region weight at 1); max: max over regions of weight * mask "
            "(an overlapping pixel takes the highest weighted value); weighted_sum: sum of weight * mask, "
            "capped at max(1, largest region weight)."
        ),
    )
    dilate_px: int = Field(0, ge=0, le=256, description="Grow every region by this many training-image pixels.")
    erode_px: int = Field(0, ge=0, le=256, description="Shrink every region by this many training-image pixels (applied before dilate).")
    feather_px: int = Field(
        0, ge=0, le=256, description="Soften region edges with a blur of this radius in training-image pixels (after erode/dilate)."
    )
    allow_full: bool = Field(
        False,
        description=(
            "Accept masks that cover the whole image. Off by default: an all-white mask is "
            "usually an inverted mask (white = 1 = the region to learn)."
        ),
    )
    non_binary_tolerance: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="In binary mode, warn when more than this fraction of a mask's pixels are grey (anti-aliased edges are fine).",
    )


class InpaintMaskSettings(Settings):
    """The hole of the 9-channel inpainting objective: relative weights of each kind of mask.

    The kind is drawn per sample from a generator seeded by (seed, epoch, index). Weights are
    relative (they need not sum to 1); a kind with weight 0 is never drawn.
    """

    region: float = Field(0.6, ge=0.0, description="The merged region mask itself (binarised).")
    region_grown: float = Field(0.1, ge=0.0, description="The region mask dilated by a random amount in grow_px.")
    region_shrunk: float = Field(0.0, ge=0.0, description="The region mask eroded by a random amount in shrink_px.")
    strokes: float = Field(0.1, ge=0.0, description="Random thick brush strokes.")
    boxes: float = Field(0.1, ge=0.0, description="Random rectangles.")
    ellipses: float = Field(0.1, ge=0.0, description="Random ellipses.")
    full: float = Field(0.0, ge=0.0, description="The whole image (plain text-to-image steps keep the prior).")
    grow_px: tuple[int, int] = Field((4, 32), description="Range (min, max) of region_grown dilation in pixels.")
    shrink_px: tuple[int, int] = Field((2, 8), description="Range (min, max) of region_shrunk erosion in pixels.")

    @model_validator(mode="after")
    def _check(self) -> "InpaintMaskSettings":
        total = self.region + self.region_grown + self.region_shrunk + self.strokes + self.boxes + self.ellipses + self.full
        if total <= 0:
            raise ValueError("all inpaint mask weights are 0: give at least one kind a positive weight (e.g. region: 1)")
        for name in ("grow_px", "shrink_px"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        return self


class AugmentSettings(Settings):
    """Augmentation: geometric transforms hit the image and every mask identically; colour only the image."""

    enabled: bool = Field(True, description="Master switch; off = centre crop, no flips, no jitter.")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0.0, le=1.0, description="Probability of a vertical flip.")
    rotate_deg: float = Field(0.0, ge=0.0, le=45.0, description="Maximum absolute rotation in degrees (uniform in [-r, r]).")
    crop: Literal["center", "random", "around_mask"] = Field(
        "around_mask",
        description=(
            "Where the bucket-sized window is cut from the resized image. around_mask keeps the "
            "merged mask's bounding box inside the window whenever it fits."
        ),
    )
    zoom: tuple[float, float] = Field(
        (1.0, 1.0), description="Range of extra zoom (>= 1) before cropping; >1 shows a smaller part of the image at higher detail."
    )
    brightness: float = Field(0.0, ge=0.0, le=1.0, description="Colour jitter: brightness factor drawn from [1-b, 1+b].")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="Colour jitter: contrast factor drawn from [1-c, 1+c].")
    saturation: float = Field(0.0, ge=0.0, le=1.0, description="Colour jitter: saturation factor drawn from [1-s, 1+s].")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="Colour jitter: hue shift drawn from [-h, h].")

    @field_validator("zoom")
    @classmethod
    def _zoom(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if lo < 1.0 or hi < lo or hi > 4.0:
            raise ValueError(f"zoom must be (min, max) with 1 <= min <= max <= 4, got {value}")
        return value


class BucketSettings(Settings):
    """Aspect-ratio buckets: SDXL's 1024-px resolutions scaled to data.resolution."""

    enabled: bool = Field(True, description="Off: every sample is cropped to a square of data.resolution.")
    max_aspect: float = Field(2.0, ge=1.0, le=4.0, description="Largest long/short side ratio of a bucket.")
    multiple: int = Field(64, ge=8, description="Bucket sides are multiples of this (64 = SDXL; at least 8 for the VAE).")

    @field_validator("multiple")
    @classmethod
    def _multiple(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"multiple must be a multiple of 8 (the VAE downsamples by 8), got {value}")
        return value


class CaptionSettings(Settings):
    """Where captions come from and what happens when one is missing."""

    extension: str = Field(".txt", description="Caption file extension beside each image (<stem><extension>).")
    column: str = Field("text", description="Caption column of metadata.jsonl.")
    missing: Literal["default", "error"] = Field(
        "default", description="A sample without caption: use `default` (counted and logged) or report an error."
    )
    default: str = Field("", description="Caption used when a sample has none.")
    prefix: str = Field("", description="Text put before every caption (e.g. a trigger word and a comma).")
    dropout: float = Field(0.0, ge=0.0, le=1.0, description="Probability of training a sample with the empty caption.")


class LatentCacheSettings(Settings):
    """What the on-disk latent cache holds when ``train.cache_latents`` is on (kohya-style frozen augmentation)."""

    variants: int = Field(
        2,
        ge=1,
        description=(
            "Augmentation variants per image that the cache holds: epoch e draws crop, flip, zoom, rotation and "
            "colour as epoch e % variants does, so every epoch reads cached latents. 1 = kohya's one frozen crop per image."
        ),
    )
    holes: int = Field(
        4,
        ge=1,
        description=(
            "9-channel objective: inpainting holes per image and variant (drawn from data.inpaint_mask with fixed "
            "seeds, plus the plain region hole); each epoch draws one of them, so masked-image latents are cached too."
        ),
    )


class DataSettings(Settings):
    """Where the training data is and how samples are made."""

    path: str = Field("datasets/spitz-fur/train", description="Dataset folder (relative paths: to the working directory, then to the project).")
    layout: Literal["auto", "furlora", "imagefolder", "kohya", "alpha", "labelme"] = Field(
        "auto",
        description=(
            "furlora: image + <stem>.<region>.png masks + <stem>.txt (or metadata.jsonl with a "
            "`regions` mapping); imagefolder: metadata.jsonl with file_name / text (+ <region>_file_name "
            "mask columns); kohya: images + a mask folder with the same stems; alpha: the PNG alpha "
            "channel is the mask; labelme: LabelMe JSON polygons. auto: detect and log which."
        ),
    )
    resolution: int = Field(256, ge=64, description="Training resolution in pixels (buckets have about resolution^2 pixels).")
    regions: list[str] | None = Field(
        None, description="Region names to train (order = region_masks order). None: every region found. Others are reported as unknown."
    )
    ignored_regions: list[str] = Field(
        default_factory=list,
        description="Region names that exist in the data but are not trained (counted and left out instead of reported as unknown).",
    )
    region_weights: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Weight (>= 0) of each region, by name; regions not named weigh 1. The one place region weights "
            "are set: the merged training mask (data.masks.merge) is built from them in training-image pixels, "
            "and it is the loss weight map (4-channel objective) and, inside the inpainting hole, "
            "max(1, weight) (9-channel objective). 0 leaves a region out of the mask and of the region holes; "
            "above 1 stresses it (e.g. {face: 2.0, chest: 0.5})."
        ),
    )
    default_region: str = Field(
        "mask", description="Region name of single, unnamed masks (kohya mask folder, PNG alpha, a `mask` column)."
    )
    mask_dir: str | None = Field(
        None, description="kohya layout: mask folder (relative to the dataset folder). None: `masks` or `mask` beside the images."
    )
    missing_mask: Literal["error", "full"] = Field(
        "error", description="An image without any mask: report it (error) or train on the whole image (full, counted and logged)."
    )
    bad_samples: Literal["error", "skip"] = Field(
        "error", description="Samples with problems: stop with the full list (error) or leave them out (skip, logged and counted)."
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "Latent cache folder (entries are keyed by content hash + model + resolution + crop, so runs may share "
            "one). None: `cache` inside the run's output_dir."
        ),
    )
    cache: LatentCacheSettings = Field(default_factory=LatentCacheSettings)
    masks: MaskSettings = Field(default_factory=MaskSettings)
    inpaint_mask: InpaintMaskSettings = Field(default_factory=InpaintMaskSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    buckets: BucketSettings = Field(default_factory=BucketSettings)
    captions: CaptionSettings = Field(default_factory=CaptionSettings)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value % 64:
            raise ValueError(f"resolution must be a multiple of 64 (e.g. 256, 512, 1024), got {value}")
        return value

    @field_validator("regions", "ignored_regions")
    @classmethod
    def _region_names(cls, value: list[str] | None) -> list[str] | None:
        bad = [r for r in value or [] if not REGION_NAME.match(r)]
        if bad:
            raise ValueError(f"region names may use letters, digits, '_' and '-' only, got {bad}")
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"region names are repeated: {value}")
        if value == []:
            raise ValueError("regions is empty: list at least one region name, or use null for every region found")
        return value

    @field_validator("default_region")
    @classmethod
    def _default_region(cls, value: str) -> str:
        if not REGION_NAME.match(value):
            raise ValueError(f"region names may use letters, digits, '_' and '-' only, got {value!r}")
        return value

    @model_validator(mode="after")
    def _weights(self) -> "DataSettings":
        both = sorted(set(self.regions or []) & set(self.ignored_regions))
        if both:
            raise ValueError(f"regions {both} are both in regions and in ignored_regions; keep each name in one list")
        for name, weight in self.region_weights.items():
            if not (0.0 <= weight < math.inf):
                raise ValueError(f"region_weights.{name} = {weight}: weights must be finite and >= 0 (1 = normal, 0 = left out)")
            if self.regions is not None and name not in self.regions:
                raise ValueError(f"region_weights names {name!r}, which is not in regions {self.regions}")
        weighted = sorted(name for name, weight in self.region_weights.items() if weight != 1.0)
        if self.masks.merge == "union" and weighted:
            # union ignores weights: refuse rather than let region_weights silently do nothing
            raise ValueError(
                f"masks.merge is 'union', which ignores region_weights, but region_weights sets {weighted}: "
                "use masks.merge: max (or weighted_sum), or drop region_weights"
            )
        return self

    def weight_of(self, region: str) -> float:
        """Weight of ``region`` (1.0 unless set in ``region_weights``): the only reading of that key."""
        return float(self.region_weights.get(region, 1.0))
