"""MaskedDataset: validated samples with merged region masks, joint augmentation and buckets.

``ds[i]`` (or ``ds.sample(i, epoch)``) returns a dict:

=====================  ======================================================================
pixel_values           float32 [3, H, W] in [-1, 1]
mask                   float32 [1, H, W] >= 0: the merged training mask = the loss weight map
                       (data.region_weights applied by data.masks.merge; in [0, 1] unless a
                       weight is above 1). The trainer reads the weights only from here.
region_masks           float32 [R, H, W] in [0, 1] (zeros for a region this image does not have)
region_names           list[str] (the dataset's regions, same order for every sample)
inpaint_mask           float32 [1, H, W] in {0, 1}: the hole of the 9-channel objective
masked_pixel_values    float32 [3, H, W]: ``pixel_values * (1 - inpaint_mask)``
caption                str (after prefix / default / dropout)
original_size          (h, w) of the image file after EXIF rotation
crop_top_left          (top, left) of the crop in the resized image (SDXL micro-conditioning)
target_size            (h, w) = the bucket = (H, W)
index, key             int position, str stable id (path relative to the folder, no extension)
inpaint_kind           str: which kind of hole was drawn (region, strokes, ...)
cache_keys             {"latents" | "masked_latents" | "text": key parts dict, or None when that
                       cache is off because augmentation makes it useless}
=====================  ======================================================================

Every random choice of a sample comes from generators seeded by (seed, epoch, index), so a
sample can be recreated exactly in any process; ``ds[(index, epoch)]`` works too.

``cache_latents=True`` (what the trainer uses with ``train.cache_latents``) freezes the
augmentation the way kohya does, so that every epoch reads cached latents: epoch ``e`` draws
crop, flip, zoom, rotation and colour as epoch ``e % data.cache.variants`` does, and the
inpainting hole is one of a fixed set per image and variant (:meth:`MaskedDataset.hole_count`
seeded draws of ``data.inpaint_mask`` plus the plain region hole). The first cycle of epochs
sees exactly the draws of an uncached run; later epochs repeat them. Without it, a random
augmentation switches off the caches it makes useless (:class:`CachePlan`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from furlora.data.buckets import assign_bucket, make_buckets
from furlora.data.cache import array_digest, file_digest
from furlora.data.images import load_image
from furlora.data.masks import bounding_box, merge_regions, prepare_mask, refine
from furlora.data.random_masks import is_deterministic, make_inpaint_mask, sample_rng
from furlora.data.settings import DataSettings, InpaintMaskSettings
from furlora.data.transforms import ColourParams, GeometryParams, apply_colour, apply_geometry, plan_colour, plan_geometry
from furlora.data.validate import FULL_REGION, SampleInfo, decode_mask, validate_dataset
from furlora.errors import DatasetError

logger = logging.getLogger(__name__)

#: Bumped when the pixel pipeline changes in a way the cache keys do not capture.
PIPELINE_VERSION = 1
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_root(path: str | Path, split: str | None = None) -> Path:
    """The dataset folder for ``path`` (and ``split``).

    Relative paths are tried against the working directory, then against the project checkout
    (so the bundled ``datasets/spitz-fur/train`` is found from anywhere). ``split`` is a
    sub-folder of ``path`` or, failing that, a sibling (``.../train`` + split ``heldout``).
    """
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (_PROJECT_ROOT / p).exists():
        logger.info("dataset path %s found in the project folder", p)
        p = _PROJECT_ROOT / p
    if split is None:
        return p
    for candidate in (p / split, p.parent / split):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"dataset split {split!r} not found: neither {p / split} nor {p.parent / split} is a folder")


@dataclass
class CachePlan:
    """Which caches are worth using with these settings, and why not when they are not."""

    latents: bool
    masked_latents: bool
    text: bool
    reasons: list[str] = field(default_factory=list)


class MaskedDataset(torch.utils.data.Dataset):
    """Image + region-mask samples (see the module docstring for the sample dict).

    Construction validates the whole dataset (:func:`furlora.data.validate.validate_dataset`):
    bad samples stop here with every problem listed, or are skipped (``data.bad_samples``).
    ``root`` overrides ``settings.path``; ``split`` picks a sub-folder or sibling folder.
    """

    def __init__(
        self,
        settings: DataSettings,
        root: str | Path | None = None,
        *,
        split: str | None = None,
        seed: int = 0,
        cache_latents: bool = False,
    ) -> None:
        self.settings = settings
        self.root = resolve_root(settings.path if root is None else root, split)
        self.samples: list[SampleInfo]
        self.samples, self.region_names, self.report = validate_dataset(self.root, settings)
        self.region_weights = [1.0 if r == FULL_REGION else settings.weight_of(r) for r in self.region_names]
        self.buckets = make_buckets(settings.resolution, settings.buckets)
        self._bucket = [assign_bucket(s.size, self.buckets) for s in self.samples]
        self.seed = int(seed)
        self.epoch = 0
        self.cache_latents = bool(cache_latents)
        self.cache_plan = self._cache_plan()
        for reason in self.cache_plan.reasons:
            logger.info("cache: %s", reason)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.samples)

    def bucket_of(self, index: int) -> tuple[int, int]:
        """The (h, w) bucket of sample ``index`` (fixed: it depends on the image's aspect only)."""
        return self._bucket[index]

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``ds[i]`` (in this process; pass ``(i, epoch)`` pairs for worker-safe sampling)."""
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        return self.sample(int(index), int(epoch))

    # ------------------------------------------------------------------ loading
    def load_arrays(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Decoded image uint8 [H, W, 3] and prepared region masks float32 [H, W] (original size)."""
        info = self.samples[index]
        image = load_image(info.image)
        if image.size != info.size:
            raise DatasetError(f"image {info.image} changed since validation ({info.size} -> {image.size}); rebuild the dataset")
        masks: dict[str, np.ndarray] = {}
        for region, source in info.masks.items():
            raw = decode_mask(source, image).values
            if raw.shape != image.size:
                raise DatasetError(f"mask {source.path} is {raw.shape[1]}x{raw.shape[0]} but its image is {image.size[1]}x{image.size[0]} (changed since validation?)")
            masks[region] = prepare_mask(raw, self.settings.masks.mode, self.settings.masks.threshold)
        if info.full_image:
            masks[FULL_REGION] = np.ones(image.size, np.float32)
        return image.rgb, masks

    # ------------------------------------------------------------------ samples
    def sample(self, index: int, epoch: int = 0, *, augment: bool = True) -> dict[str, Any]:
        """Sample ``index`` as seen in ``epoch`` (a pure function of seed, epoch and index).

        ``augment=False`` shows the sample without augmentation (centre crop, as in previews).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range 0..{len(self) - 1}")
        info = self.samples[index]
        s = self.settings
        variant = epoch % s.cache.variants if self.cache_latents else epoch  # the epoch whose draws this one repeats
        image, stack, merged, geometry, colour = self._render(index, variant, augment)
        later_cycle = self.cache_latents and epoch >= s.cache.variants  # cache mode repeats holes of the fixed set
        slot = int(sample_rng(self.seed, epoch, index, 3).integers(self.hole_count())) if later_cycle else 0
        hole, kind = self._hole(index, variant, slot, merged)
        caption = info.caption
        if s.captions.dropout > 0 and sample_rng(self.seed, epoch, index, 2).random() < s.captions.dropout:
            caption = ""
        pixels = _to_pixels(image)
        hole_t = torch.from_numpy(hole)[None]
        return {
            "pixel_values": pixels,
            "mask": torch.from_numpy(merged)[None],
            "region_masks": torch.from_numpy(stack),
            "region_names": list(self.region_names),
            "inpaint_mask": hole_t,
            "masked_pixel_values": pixels * (1.0 - hole_t),
            "caption": caption,
            "original_size": geometry.original_size,
            "crop_top_left": geometry.crop_top_left,
            "target_size": geometry.target_size,
            "index": index,
            "key": info.key,
            "inpaint_kind": kind,
            "cache_keys": self._cache_keys(info, geometry, colour, hole, caption),
        }

    def _render(
        self, index: int, epoch: int, augment: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, GeometryParams, ColourParams]:
        """(augmented uint8 image, region stack [R, H, W], merged mask [H, W], geometry, colour) of ``epoch``'s draw."""
        s = self.settings
        rgb, masks = self.load_arrays(index)
        present = [r for r in self.region_names if r in masks]
        used = [masks[r] for r in present]
        aug = s.augment if augment else s.augment.model_copy(update={"enabled": False})
        rng = sample_rng(self.seed, epoch, index, 0)
        bbox = bounding_box(np.maximum.reduce(used)) if used else None
        geometry = plan_geometry(self.samples[index].size, self._bucket[index], aug, rng, bbox)
        colour = plan_colour(aug, rng)
        image, warped = apply_geometry(rgb, used, geometry)
        image = apply_colour(image, colour)
        h, w = geometry.target_size
        stack = np.zeros((len(self.region_names), h, w), np.float32)
        for region, m in zip(present, warped):
            # "> 0.5": disjoint regions stay disjoint after interpolation (their values sum to <= 1)
            m = (m > 0.5).astype(np.float32) if s.masks.mode == "binary" else np.clip(m, 0.0, 1.0)
            stack[self.region_names.index(region)] = refine(m, s.masks.erode_px, s.masks.dilate_px, s.masks.feather_px)
        merged = merge_regions(stack, self.region_weights, s.masks.merge) if len(stack) else np.zeros((h, w), np.float32)
        return image, stack, merged, geometry, colour

    # ------------------------------------------------------------------ the fixed hole set (cache mode)
    def hole_count(self) -> int:
        """How many holes the fixed set of one image and variant holds (cache mode)."""
        s = self.settings.inpaint_mask
        if is_deterministic(s):
            return 1
        return self.settings.cache.holes + (1 if s.region > 0 else 0)

    def _hole(self, index: int, variant: int, slot: int, merged: np.ndarray) -> tuple[np.ndarray, str]:
        """Hole ``slot`` of the fixed set: seeded draws of data.inpaint_mask (slot 0 = what an uncached
        run draws in epoch ``variant``), then the plain region hole."""
        s = self.settings.inpaint_mask
        if slot < self.settings.cache.holes or is_deterministic(s):
            stream = 1 if slot == 0 else 16 + slot
            return make_inpaint_mask(s, merged, sample_rng(self.seed, variant, index, stream))
        return make_inpaint_mask(_REGION_ONLY, merged, sample_rng(self.seed, variant, index, 15))

    def cache_items(self, index: int, variant: int) -> dict[str, Any]:
        """Everything the latent cache holds for image ``index`` in ``variant`` (cache mode only).

        {"pixel_values": [3, H, W], "latents": key parts, "holes": [(key parts, masked pixels [3, H, W]), ...]}.
        """
        if not self.cache_latents:
            raise ValueError("cache_items needs a dataset built with cache_latents=True")
        info = self.samples[index]
        image, _, merged, geometry, colour = self._render(index, variant)
        pixels = _to_pixels(image)
        holes = []
        for slot in range(self.hole_count()):
            hole, _ = self._hole(index, variant, slot, merged)
            keys = self._cache_keys(info, geometry, colour, hole, info.caption)
            holes.append((keys["masked_latents"], pixels * (1.0 - torch.from_numpy(hole)[None])))
        return {"pixel_values": pixels, "latents": self._cache_keys(info, geometry, colour, merged, info.caption)["latents"], "holes": holes}

    # ------------------------------------------------------------------ caching
    def _cache_keys(self, info: SampleInfo, geometry: GeometryParams, colour: ColourParams, hole: np.ndarray, caption: str) -> dict[str, Any]:
        plan = self.cache_plan
        latents = {
            "kind": "latents", "pipeline": PIPELINE_VERSION, "image": file_digest(info.image),
            "geometry": asdict(geometry), "colour": asdict(colour),
        } if plan.latents else None
        masked = {**latents, "kind": "masked_latents", "inpaint_mask": array_digest(hole)} if (latents and plan.masked_latents) else None
        return {"latents": latents, "masked_latents": masked, "text": {"kind": "text", "caption": caption} if plan.text else None}

    def _cache_plan(self) -> CachePlan:
        """Random augmentations switch off only the caches they make useless (unless the cache freezes them)."""
        a = self.settings.augment
        reasons: list[str] = []
        if self.cache_latents:  # every draw comes from a fixed set: everything is cacheable
            return CachePlan(latents=True, masked_latents=True, text=True, reasons=reasons)
        if a.enabled:
            if a.rotate_deg > 0:
                reasons.append(f"latents not cached: augment.rotate_deg={a.rotate_deg} draws a new rotation every epoch")
            if a.zoom[1] > a.zoom[0]:
                reasons.append(f"latents not cached: augment.zoom={a.zoom} draws a new zoom every epoch")
            if a.brightness or a.contrast or a.saturation or a.hue:
                reasons.append("latents not cached: colour jitter draws new colours every epoch")
            if a.crop != "center" and any(self._slack(i) for i in range(len(self))):
                reasons.append(f"latents not cached: augment.crop={a.crop} moves the crop window every epoch")
        latents = not reasons
        masked = latents and is_deterministic(self.settings.inpaint_mask)
        if latents and not masked:
            reasons.append("masked-image latents not cached: the inpainting hole is random (data.inpaint_mask)")
        return CachePlan(latents=latents, masked_latents=masked, text=True, reasons=reasons)

    def _slack(self, index: int) -> bool:
        h, w = self.samples[index].size
        bh, bw = self._bucket[index]
        scale = max(bh / h, bw / w) * self.settings.augment.zoom[0]
        return int(round(h * scale)) > bh or int(round(w * scale)) > bw


_REGION_ONLY = InpaintMaskSettings(
    region=1.0, region_grown=0.0, region_shrunk=0.0, strokes=0.0, boxes=0.0, ellipses=0.0, full=0.0
)


def _to_pixels(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples into a batch: tensors stacked on a new dim 0, everything else as lists.

    Region masks / names are padded to the batch's largest R (zero masks, name "").
    All samples must share one size (use BucketBatchSampler).
    """
    if not samples:
        raise ValueError("collate_samples got an empty list")
    sizes = {tuple(s["pixel_values"].shape[-2:]) for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"samples of different sizes {sorted(sizes)} in one batch: batch with BucketBatchSampler")
    r_max = max(s["region_masks"].shape[0] for s in samples)
    batch: dict[str, Any] = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        if name == "region_masks":
            values = [torch.cat([v, v.new_zeros((r_max - v.shape[0], *v.shape[1:]))]) for v in values]
        elif name == "region_names":
            values = [list(v) + [""] * (r_max - len(v)) for v in values]
        batch[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
