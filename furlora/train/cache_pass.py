"""The caching pass: encode every latent an epoch can use before training starts.

With ``train.cache_latents`` the dataset draws each image's augmentation from a fixed set of
``data.cache.variants`` variants and, for the 9-channel objective, its hole from a fixed set of
``data.cache.holes`` (+ the region hole) per variant (:class:`~furlora.data.dataset.MaskedDataset`
in cache mode). This pass encodes all of them once, so no training step runs the VAE. Every entry
is written atomically as soon as it is encoded and entries already on disk are skipped, so a
killed pass resumes where it stopped. ``furlora cache CONFIG`` runs it ahead of training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from furlora.data.cache import run_cache_dir
from furlora.errors import ConfigError
from furlora.models.device import pick_device
from furlora.progress import progress_bar
from furlora.train.encode import BatchEncoder
from furlora.train.setup import build_dataset, load_components, resolve_model

logger = logging.getLogger(__name__)


@dataclass
class CacheFillReport:
    """What one caching pass did: entries it covers, how many it had to encode, and its wall time."""

    entries: int
    encoded: int
    seconds: float


def fill_latent_cache(dataset: Any, encoder: BatchEncoder, inpaint: bool, *, full_mask: bool = False, rank: int = 0,
                      world: int = 1, progress: bool = True, desc: str = "latent cache") -> CacheFillReport:
    """Encode (or find) every latent of ``dataset``'s variants; returns a :class:`CacheFillReport`.

    ``inpaint``: also the masked-image latents of every hole of the fixed sets, and (``full_mask``,
    i.e. ``train.full_mask_fraction > 0``) the all-zero masked image of each bucket size.
    With several processes each takes every ``world``-th image.
    """
    if not dataset.cache_latents:
        raise ValueError("the caching pass needs a dataset in cache mode (MaskedDataset(..., cache_latents=True))")
    variants = dataset.settings.cache.variants
    items = [(v, i) for v in range(variants) for i in range(len(dataset)) if i % world == rank]
    started = time.perf_counter()
    entries = encoded = 0
    sizes: set[tuple[int, int]] = set()
    with progress_bar(len(items), desc, "image", disable=not progress) as bar, torch.no_grad():
        for variant, index in items:
            item = dataset.cache_items(index, variant)
            pixels = item["pixel_values"]
            sizes.add(tuple(int(x) for x in pixels.shape[-2:]))
            todo = [(item["latents"], pixels)]
            if inpaint:
                todo += item["holes"]
            for parts, image in todo:
                entries += 1
                if encoder.cached(parts) is None:
                    encoder.store_latent(parts, encoder.encode_one(image))
                    encoded += 1
            bar.update(1)
            bar.set_postfix(encoded=encoded, refresh=False)
        if inpaint and full_mask:
            for h, w in sorted(sizes):
                parts = {"kind": "blank", "size": [h, w]}
                entries += 1
                if encoder.cached(parts) is None:
                    encoder.store_latent(parts, encoder.encode_one(torch.zeros(3, h, w)))
                    encoded += 1
    report = CacheFillReport(entries=entries, encoded=encoded, seconds=time.perf_counter() - started)
    logger.info(
        "%s: %d entries (%d encoded, %d already cached) in %.1f s",
        desc, report.entries, report.encoded, report.entries - report.encoded, report.seconds,
    )
    return report


def build_cache(config: Any, *, device: Any | None = None, progress: bool = True) -> list[CacheFillReport]:
    """Run the caching pass of a run config ahead of training (``furlora cache CONFIG``).

    Fills ``data.cache_dir`` (default ``<output_dir>/cache``) for every resolution the run trains
    at (``train.resolution_schedule``), exactly as the trainer would at the start of each phase;
    a later ``furlora train`` with the same config (or a copy of the folder on another machine)
    then runs no VAE encode. Raises ConfigError when ``train.cache_latents`` is off.
    """
    if not config.train.cache_latents:
        raise ConfigError("train.cache_latents is false in this config: there is no latent cache to build (set it to true)")
    model_path, inpaint = resolve_model(config)
    resolutions = [p.resolution for p in config.train.resolution_schedule] or [config.data.resolution]
    datasets = [build_dataset(config, r) for r in dict.fromkeys(resolutions)]  # every dataset problem before weights load
    if device is None:
        device = pick_device("auto", cpu_only=config.train.cpu, key="train.cpu")  # the trainer's rule
    if config.train.cpu_threads is not None:
        torch.set_num_threads(config.train.cpu_threads)
    components = load_components(config, model_path, device)
    encoder = BatchEncoder(components, device, cache_dir=run_cache_dir(config.data.cache_dir, config.output_dir), cache_text=False)
    return [
        fill_latent_cache(dataset, encoder, inpaint, full_mask=config.train.full_mask_fraction > 0, progress=progress,
                          desc=f"latent cache {dataset.settings.resolution} px")
        for dataset in datasets
    ]
