"""The bundled synthetic Spitz dataset: present, small, exact regions, and reproducible by its script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from furlora.data.dataset import MaskedDataset
from furlora.data.settings import DataSettings

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def _generator():
    spec = importlib.util.spec_from_file_location("make_spitz_fur", DATASETS / "make_spitz_fur.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_spitz_fur", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bundled_dataset_is_small_and_complete():
    total = sum(f.stat().st_size for f in (DATASETS / "spitz-fur").rglob("*") if f.is_file())
    assert total < 5_000_000
    train = MaskedDataset(DataSettings())
    heldout = MaskedDataset(DataSettings(), split="heldout")
    assert (len(train), len(heldout)) == (24, 8)
    assert train.region_names == ["chest", "face", "paws", "tail"]
    assert train.report.ok and heldout.report.ok and not train.report.problems
    assert all(n == 24 for n in train.report.regions_found.values())
    assert len({train.bucket_of(i) for i in range(len(train))}) > 1  # landscape and portrait dogs too
    a = np.asarray(Image.open(train.samples[0].image))
    b = np.asarray(Image.open(heldout.samples[0].image))
    assert not np.array_equal(a, b)


def test_regions_are_disjoint_and_captions_describe_the_dog():
    ds = MaskedDataset(DataSettings())
    for i in range(0, len(ds), 5):
        s = ds.sample(i, 0, augment=False)
        assert s["region_masks"].sum(0).max() <= 1.0
        assert "spitz" in s["caption"]


def test_generator_is_deterministic_and_matches_the_committed_files():
    gen = _generator()
    rgb, masks, caption = gen.render_dog(gen.dog_seed("train", 1), gen.image_size(1))
    folder = DATASETS / "spitz-fur" / "train"
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(folder / "dog_001.png")))
    for region in gen.REGIONS:
        committed = np.asarray(Image.open(folder / f"dog_001.{region}.png").convert("L"))
        np.testing.assert_array_equal(masks[region], committed)
    assert (folder / "dog_001.txt").read_text(encoding="utf-8").strip() == caption


def test_generator_region_masks_cover_the_fur_of_each_part():
    gen = _generator()
    rgb, masks, _ = gen.render_dog(12345, (128, 128))
    assert set(masks) == {"face", "chest", "tail", "paws"}
    for region, m in masks.items():
        assert 20 < (m > 0).sum() < 0.3 * m.size, region
    stack = np.stack([m > 0 for m in masks.values()])
    assert stack.sum(0).max() == 1  # disjoint: each pixel belongs to at most one region
    with pytest.raises(KeyError):
        gen.dog_seed("validation", 0)
