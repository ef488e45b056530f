"""What a comparison repaints: images with their masks, prompts and region masks.

Samples come from a dataset folder (read with the project's :class:`~furlora.data.dataset.MaskedDataset`
at the images' original size, no crop or augmentation), from (image, mask) file pairs, or are
given directly as :class:`EvalSample` objects.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from furlora.errors import EvaluationError
from furlora.eval.settings import EvalSettings

logger = logging.getLogger(__name__)


@dataclass
class EvalSample:
    """One image to repaint. ``image`` / ``mask``: paths, PIL images or arrays (1 = repaint)."""

    key: str
    image: Any
    mask: Any
    prompt: str | None = None
    """None: ``eval.prompt``."""
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    """Region name -> float32 [H, W] mask in [0, 1], for per-region metrics."""


def samples_from_dataset(path: str | os.PathLike[str], settings: EvalSettings, data_settings: Any = None) -> list[EvalSample]:
    """Samples of a dataset folder: each image at its original size, the union of its regions
    (``eval.repaint_regions`` or all) as the mask, its caption as the prompt (``eval.use_captions``)."""
    from furlora.data.dataset import MaskedDataset
    from furlora.data.settings import DataSettings
    from furlora.data.validate import FULL_REGION

    dataset = MaskedDataset(data_settings or DataSettings(), root=path)
    wanted = settings.repaint_regions
    if wanted:
        unknown = sorted(set(wanted) - set(dataset.region_names))
        if unknown:
            raise EvaluationError(
                f"eval.repaint_regions: {unknown} are not regions of {dataset.root} "
                f"(its regions: {', '.join(dataset.region_names) or 'none'})"
            )
    samples: list[EvalSample] = []
    count = len(dataset) if settings.max_images is None else min(len(dataset), settings.max_images)
    for index in range(count):
        info = dataset.samples[index]
        rgb, masks = dataset.load_arrays(index)
        regions = {name: m for name, m in masks.items() if name != FULL_REGION}
        chosen = [regions[r] for r in (wanted or list(regions)) if r in regions]
        if not chosen:
            logger.warning("%s: none of the regions %s is present; skipped", info.key, wanted or "(any)")
            continue
        mask = np.max(np.stack(chosen), axis=0)
        prompt = info.caption if settings.use_captions and info.caption else None
        samples.append(EvalSample(info.key, rgb, mask, prompt, regions))
    if not samples:
        raise EvaluationError(f"dataset {dataset.root} has no sample with a mask to repaint")
    return samples


def samples_from_files(images: list[str | os.PathLike[str]], masks: list[str | os.PathLike[str]],
                       prompt: str | None = None) -> list[EvalSample]:
    """Samples from image / mask file pairs (same order); keys are the image file stems."""
    if len(images) != len(masks):
        raise EvaluationError(f"{len(images)} images but {len(masks)} masks: give one mask per image")
    samples, seen = [], set()
    for image, mask in zip(images, masks):
        key = Path(image).stem
        while key in seen:
            key += "_"
        seen.add(key)
        for what, file in (("image", image), ("mask", mask)):
            if not Path(file).is_file():
                raise EvaluationError(f"{what} file {file} does not exist")
        samples.append(EvalSample(key, Path(image), Path(mask), prompt))
    return samples


def resolve_samples(source: Any, settings: EvalSettings, data_settings: Any = None) -> list[EvalSample]:
    """A dataset folder, a list of :class:`EvalSample`, or a list of (image, mask[, prompt]) tuples."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            raise EvaluationError(f"{path} is a file; give a dataset folder, or an image with its mask (--image / --mask)")
        return samples_from_dataset(path, settings, data_settings)
    if isinstance(source, EvalSample):
        return [source]
    samples: list[EvalSample] = []
    for i, item in enumerate(source):
        if isinstance(item, EvalSample):
            samples.append(item)
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            key = Path(item[0]).stem if isinstance(item[0], (str, os.PathLike)) else f"image_{i:03d}"
            samples.append(EvalSample(key, item[0], item[1], item[2] if len(item) == 3 else None))
        else:
            raise EvaluationError(
                f"sample {i}: expected an EvalSample or an (image, mask[, prompt]) tuple, got {type(item).__name__}"
            )
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise EvaluationError(f"sample keys must be unique, got duplicates in {keys}")
    if settings.max_images is not None:
        samples = samples[: settings.max_images]
    if not samples:
        raise EvaluationError("no samples to evaluate")
    return samples
