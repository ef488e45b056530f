"""Done-when of the latent cache: with the 16 GB preset's and the 9-channel preset's settings at
1024 px (around_mask crops, which used to switch the cache off), training epochs run no VAE encode
once the caching pass has run, for both objectives, also from a fresh process reading the disk.

The tiny models stand in for SDXL. Their VAE's ``encode`` is replaced by a counting stand-in (a
pooled copy of the pixels): a real tiny-VAE encode at 1024 px takes seconds on a CPU, and what is
checked here is which encodes happen, not their values (test_cached_latents_match_fresh_encodes
checks values).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from furlora.config import load_config
from furlora.data.buckets import BucketBatchSampler
from furlora.data.dataset import collate_samples
from furlora.train.cache_pass import fill_latent_cache
from furlora.train.encode import BatchEncoder
from furlora.train.noise import draw_step
from furlora.train.setup import build_dataset
from furlora.train.step import prepare_batch
from furlora.train.stream import BatchStream

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "datasets" / "spitz-fur" / "train"


def _subset(folder: Path, stems: list[str]) -> Path:
    """A few dogs of the bundled set (every file of each stem: image, region masks, caption)."""
    folder.mkdir()
    for stem in stems:
        for file in BUNDLED.glob(f"{stem}.*"):
            shutil.copy(file, folder / file.name)
    return folder


def _preset(tmp_path: Path, name: str, model: str) -> Any:
    data = yaml.safe_load((ROOT / "configs" / name).read_text())
    data["model"] = {"source": model}
    data["data"]["path"] = str(_subset(tmp_path / "data", ["dog_000", "dog_001", "dog_017"]))
    data["output_dir"] = str(tmp_path / "run")
    data["train"].pop("resolution_schedule", None)  # the 9-channel preset ends at 1024 px: train there
    data["train"].pop("validation", None)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


class CountingEncode:
    """Stands in for ``vae.encode``: counts calls, returns pooled pixels as a 4-channel "latent"."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, pixels: torch.Tensor) -> Any:
        self.calls += 1
        pooled = F.avg_pool2d(pixels.float(), 8)
        mean = torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))


def _run_epochs(dataset: Any, encoder: BatchEncoder, inpaint: bool, config: Any, epochs: range) -> int:
    """Prepare every micro-batch of ``epochs`` as a training step does; returns the batch count."""
    sampler = BucketBatchSampler(dataset, config.train.batch_size, 7)
    stream = BatchStream(dataset, sampler, collate_samples, prefetch=False)
    stream.load_state_dict({"epoch": epochs.start, "position": 0})
    count = 0
    while stream.epoch < epochs.stop:
        batch = stream.next()
        if stream.epoch >= epochs.stop:
            break
        # A full-mask fraction of 0.5 makes both kinds of 9-channel samples appear.
        draws = draw_step(config.seed, count, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000, 0.0, 0.5 if inpaint else 0.0)
        prepare_batch(batch, draws, encoder, inpaint, False)
        count += 1
    return count


@pytest.mark.parametrize(
    ("preset", "model", "fixture", "inpaint"),
    [("sdxl-16gb.yaml", "tiny-sdxl", "base_components", False), ("sdxl-inpainting.yaml", "tiny-sdxl-inpaint", "inpaint_components", True)],
)
def test_epochs_after_the_caching_pass_run_no_vae_encode(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, preset: str, model: str, fixture: str, inpaint: bool
) -> None:
    components = request.getfixturevalue(fixture)
    encode = CountingEncode()
    monkeypatch.setattr(components.vae, "encode", encode)
    config = _preset(tmp_path, preset, model)
    assert config.data.resolution == 1024 and config.data.augment.crop == "around_mask" and config.train.cache_latents
    dataset = build_dataset(config)
    # The crop window moves inside these images: exactly the case that used to switch the cache off.
    assert any(dataset._slack(i) for i in range(len(dataset)))
    assert dataset.cache_plan.latents and dataset.cache_plan.masked_latents
    cache_dir = tmp_path / "cache"

    encoder = BatchEncoder(components, torch.device("cpu"), cache_dir=cache_dir)
    report = fill_latent_cache(dataset, encoder, inpaint, full_mask=inpaint, progress=False)
    variants, holes = config.data.cache.variants, dataset.hole_count()
    per_image = 1 + (holes if inpaint else 0)
    blanks = len({dataset.bucket_of(i) for i in range(len(dataset))}) if inpaint else 0
    assert report.entries == len(dataset) * variants * per_image + blanks
    # Variants that draw the same crop and flip share one entry (same key): encoded once.
    assert len(dataset) <= report.encoded == encode.calls <= report.entries

    filled = encode.calls
    assert _run_epochs(dataset, encoder, inpaint, config, range(0, 2)) >= 2
    assert encode.calls == filled, "a training epoch ran the VAE although the caching pass had run"

    # A new process (empty memory caches) reads everything from disk: epochs 2 and 3 (variants repeat).
    fresh = BatchEncoder(components, torch.device("cpu"), cache_dir=cache_dir)
    assert _run_epochs(dataset, fresh, inpaint, config, range(2, 4)) >= 2
    assert encode.calls == filled and fresh.vae_encodes == 0
    # The pass itself resumes: nothing is left to encode.
    again = fill_latent_cache(dataset, fresh, inpaint, full_mask=inpaint, progress=False)
    assert again.encoded == 0 and again.entries == report.entries
