"""MaskedDataset: the sample contract, determinism from (seed, epoch, index), collation, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from furlora.data.dataset import MaskedDataset, collate_samples, resolve_root
from furlora.errors import DatasetError

AUG = {"enabled": True, "hflip": 0.5, "rotate_deg": 10.0, "crop": "random", "zoom": (1.0, 1.3), "brightness": 0.2}
HOLES = {"region": 1.0, "strokes": 1.0, "boxes": 1.0, "ellipses": 1.0}


@pytest.fixture
def ds(maker, make_settings):
    for k in range(3):
        maker.furlora_sample(f"img{k}", seed=k, size=(64, 80 + 16 * k), caption=f"caption {k}")
    return MaskedDataset(make_settings(augment=AUG, inpaint_mask=HOLES, region_weights={"b": 0.5}), maker.root, seed=3)


def test_sample_contract(ds):
    s = ds.sample(1, 0)
    h, w = s["target_size"]
    assert s["pixel_values"].shape == (3, h, w) and s["pixel_values"].dtype == torch.float32
    assert -1.0 <= s["pixel_values"].min() and s["pixel_values"].max() <= 1.0
    assert s["mask"].shape == (1, h, w) and 0 <= s["mask"].min() and s["mask"].max() <= 1
    assert s["region_masks"].shape == (3, h, w) and s["region_names"] == ["a", "b", "c"]
    assert "region_weights" not in s and ds.region_weights == [1.0, 0.5, 1.0]  # one home: the dataset
    assert set(torch.unique(s["inpaint_mask"]).tolist()) <= {0.0, 1.0} and s["inpaint_mask"].shape == (1, h, w)
    torch.testing.assert_close(s["masked_pixel_values"], s["pixel_values"] * (1 - s["inpaint_mask"]))
    assert s["caption"] == "caption 1" and s["key"] == "img1" and s["index"] == 1
    assert s["original_size"] == (64, 96)
    top, left = s["crop_top_left"]
    assert top >= 0 and left >= 0
    expected = np.max(s["region_masks"].numpy() * np.array([1.0, 0.5, 1.0], np.float32)[:, None, None], axis=0)
    np.testing.assert_allclose(s["mask"][0].numpy(), expected)  # merge "max" with weights


def test_a_sample_is_a_pure_function_of_seed_epoch_index(ds, maker, make_settings):
    other = MaskedDataset(ds.settings, maker.root, seed=3)
    _ = [other.sample(i, 4) for i in (2, 0)]  # unrelated work first
    for i in range(len(ds)):
        a, b = ds.sample(i, 1), other.sample(i, 1)
        for k in ("pixel_values", "mask", "region_masks", "inpaint_mask"):
            torch.testing.assert_close(a[k], b[k])
        assert a["crop_top_left"] == b["crop_top_left"] and a["inpaint_kind"] == b["inpaint_kind"]
    differs = [not torch.equal(ds.sample(0, e)["pixel_values"], ds.sample(0, 0)["pixel_values"]) for e in range(1, 5)]
    assert any(differs)
    ds.set_epoch(2)
    torch.testing.assert_close(ds[1]["pixel_values"], ds.sample(1, 2)["pixel_values"])
    torch.testing.assert_close(ds[(1, 3)]["pixel_values"], ds.sample(1, 3)["pixel_values"])
    third = MaskedDataset(ds.settings, maker.root, seed=4)
    assert any(not torch.equal(third.sample(i, 1)["pixel_values"], ds.sample(i, 1)["pixel_values"]) for i in range(3))


def test_collate_stacks_and_pads_regions(ds):
    a, b = ds.sample(0, 0, augment=False), ds.sample(0, 1, augment=False)
    b = dict(b)
    b["region_masks"] = b["region_masks"][:2]
    b["region_names"] = b["region_names"][:2]
    batch = collate_samples([a, b])
    assert batch["pixel_values"].shape == (2, *a["pixel_values"].shape)
    assert batch["region_masks"].shape[1] == 3 and "region_weights" not in batch
    assert not batch["region_masks"][1, 2].any() and batch["region_names"][1] == ["a", "b", ""]
    assert batch["caption"] == [a["caption"], b["caption"]] and batch["original_size"] == [(64, 80), (64, 80)]
    with pytest.raises(ValueError, match="BucketBatchSampler"):
        collate_samples([ds.sample(0, 0), ds.sample(2, 0)] if ds.bucket_of(0) != ds.bucket_of(2) else [a, {**a, "pixel_values": torch.zeros(3, 8, 8)}])


def test_caption_prefix_default_and_dropout(maker, make_settings):
    maker.furlora_sample("x", caption="fluffy")
    maker.furlora_sample("y", seed=1, caption=None)
    ds = MaskedDataset(make_settings(captions={"prefix": "spitz, ", "default": "a dog", "dropout": 0.5}), maker.root, seed=0)
    caps = [ds.sample(0, e)["caption"] for e in range(30)]
    assert set(caps) == {"spitz, fluffy", ""} and caps == [ds.sample(0, e)["caption"] for e in range(30)]
    assert set(ds.sample(1, e)["caption"] for e in range(30)) == {"spitz, a dog", ""}
    with pytest.raises(DatasetError, match=r"y.png: image has no caption"):
        MaskedDataset(make_settings(captions={"missing": "error"}), maker.root)


def test_mask_refinement_in_training_pixels(maker, make_settings):
    maker.furlora_sample("x")
    plain = MaskedDataset(make_settings(), maker.root).sample(0, 0)
    grown = MaskedDataset(make_settings(masks={"dilate_px": 2}), maker.root).sample(0, 0)
    soft = MaskedDataset(make_settings(masks={"feather_px": 3}), maker.root).sample(0, 0)
    assert grown["mask"].sum() > plain["mask"].sum()
    assert torch.all(grown["mask"][plain["mask"] > 0] == 1)
    values = torch.unique(soft["mask"])
    assert len(values) > 2  # feathered edges are grey
    assert set(torch.unique(soft["inpaint_mask"]).tolist()) <= {0.0, 1.0}


def test_bundled_splits_resolve_from_anywhere(make_settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = make_settings()
    train = resolve_root(settings.path)
    assert train.name == "train" and train.is_dir()
    assert resolve_root(settings.path, "heldout").name == "heldout"
    assert resolve_root(train.parent, "heldout") == train.parent / "heldout"
    with pytest.raises(DatasetError, match="split 'nope' not found"):
        resolve_root(settings.path, "nope")


def test_settings_validation_names_keys():
    from furlora.config import validate_config
    from furlora.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        validate_config({"data": {"resolution": 100, "regions": ["face", "bad name"], "masks": {"merge": "avg"}}})
    text = str(exc.value)
    assert "data.resolution" in text and "data.regions" in text and "data.masks.merge" in text
    with pytest.raises(ConfigError, match="not in regions"):
        validate_config({"data": {"regions": ["face"], "region_weights": {"tail": 0.5}}})
    with pytest.raises(ConfigError, match=r"region_weights.face = -1.0: weights must be finite and >= 0"):
        validate_config({"data": {"region_weights": {"face": -1.0}}})
    assert validate_config({"data": {"region_weights": {"face": 2.0}}}).data.weight_of("face") == 2.0
    with pytest.raises(ConfigError, match=r"'union', which ignores region_weights, but region_weights sets \['face'\]"):
        validate_config({"data": {"region_weights": {"face": 2.0, "tail": 1.0}, "masks": {"merge": "union"}}})


def test_the_removed_loss_region_weights_key_says_what_to_write():
    from furlora.config import validate_config
    from furlora.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        validate_config({"train": {"loss": {"region_weights": {"face": 2.0, "chest": 0.5}}}}, source="old.yaml")
    text = str(exc.value)
    assert "old.yaml" in text and "train.loss.region_weights was removed" in text
    assert "write `data: {region_weights: {face: 2.0, chest: 0.5}}`" in text
    assert "--set 'data.region_weights={face: 2.0, chest: 0.5}'" in text
    assert "a region not named there weighs 1, not 0" in text
    # What it says to write is valid and gives those weights.
    fixed = validate_config({"data": {"region_weights": {"face": 2.0, "chest": 0.5}}})
    assert (fixed.data.weight_of("face"), fixed.data.weight_of("chest"), fixed.data.weight_of("tail")) == (2.0, 0.5, 1.0)


def test_a_weight_above_one_reaches_the_merged_mask(maker, make_settings):
    maker.furlora_sample("x")
    plain = MaskedDataset(make_settings(augment={"enabled": False}), maker.root).sample(0, 0)
    heavy = MaskedDataset(make_settings(augment={"enabled": False}, region_weights={"a": 2.0}), maker.root).sample(0, 0)
    a = plain["region_masks"][plain["region_names"].index("a")] > 0.5
    assert a.any() and torch.all(heavy["mask"][0][a] == 2.0)
    assert torch.equal(heavy["mask"][0][~a], plain["mask"][0][~a])
    torch.testing.assert_close(heavy["inpaint_mask"], plain["inpaint_mask"])  # the hole does not change with the weight
