"""Every supported on-disk layout is detected, paired and read into the right masks and captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import scene

from furlora.data.dataset import MaskedDataset
from furlora.data.validate import validate_dataset


def _region(sample, name):
    return sample["region_masks"][sample["region_names"].index(name)].numpy()


def test_furlora_sidecar_layout(maker, make_settings):
    maker.furlora_sample("dog1", seed=1, caption="first dog")
    maker.furlora_sample("dog2", seed=2, regions=("a", "c"), caption=None)
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "furlora" and "dog1.a.png" in ds.report.layout_reason
    assert ds.region_names == ["a", "b", "c"]
    s = ds.sample(0, 0)
    _, masks = scene(64, 64, seed=1)
    for r in "abc":
        np.testing.assert_array_equal(_region(s, r), masks[r] / 255.0)
    assert s["caption"] == "first dog" and s["key"] == "dog1"
    s2 = ds.sample(1, 0)
    assert not _region(s2, "b").any()  # a region this image does not have is all zeros
    assert s2["caption"] == ""
    assert ds.report.counts["captions missing (default caption used)"] == 1


def test_furlora_metadata_with_regions(maker, make_settings):
    img, masks = scene(64, 64, seed=4)
    maker.image("images/x.png", img)
    maker.image("m/x_face.png", masks["a"])
    maker.image("m/x_tail.png", masks["c"])
    maker.text("metadata.jsonl", json.dumps({"file_name": "images/x.png", "text": "a dog", "regions": {"face": "m/x_face.png", "tail": "m/x_tail.png"}}) + "\n")
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "furlora" and "regions" in ds.report.layout_reason
    assert ds.region_names == ["face", "tail"] and len(ds) == 1
    s = ds.sample(0, 0)
    np.testing.assert_array_equal(_region(s, "face"), masks["a"] / 255.0)
    assert s["caption"] == "a dog" and s["key"] == "images/x"
    assert not ds.report.problems  # mask files referenced by metadata are not "unlisted images"


def test_hf_imagefolder_layout(maker, make_settings):
    for k in range(2):
        img, masks = scene(64, 64, seed=k)
        maker.image(f"train/{k}.png", img)
        maker.image(f"train/{k}_mask.png", masks["a"])
        maker.image(f"train/{k}_b.png", masks["b"])
    lines = [json.dumps({"file_name": f"train/{k}.png", "text": f"dog {k}", "mask_file_name": f"train/{k}_mask.png", "b_file_name": f"train/{k}_b.png"}) for k in range(2)]
    maker.text("metadata.jsonl", "\n".join(lines))
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "imagefolder"
    assert ds.region_names == ["b", "mask"]
    s = ds.sample(1, 0)
    _, masks = scene(64, 64, seed=1)
    np.testing.assert_array_equal(_region(s, "mask"), masks["a"] / 255.0)
    assert s["caption"] == "dog 1"


@pytest.mark.parametrize("per_region", [False, True])
def test_kohya_layout(maker, make_settings, per_region):
    for k in range(2):
        img, masks = scene(64, 64, seed=k)
        maker.image(f"10_spitz/dog{k}.png", img)
        maker.text(f"10_spitz/dog{k}.txt", f"spitz {k}")
        if per_region:
            maker.image(f"masks/face/dog{k}.png", masks["a"])
            maker.image(f"masks/tail/dog{k}.png", masks["c"])
        else:
            maker.image(f"masks/dog{k}.png", masks["a"])
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "kohya" and "masks/" in ds.report.layout_reason
    assert ds.region_names == (["face", "tail"] if per_region else ["mask"])
    s = ds.sample(0, 0)
    _, masks = scene(64, 64, seed=0)
    np.testing.assert_array_equal(_region(s, "face" if per_region else "mask"), masks["a"] / 255.0)
    assert s["caption"] == "spitz 0" and s["key"] == "10_spitz/dog0"


def test_png_alpha_layout(maker, make_settings):
    img, masks = scene(64, 64, seed=5)
    rgba = np.dstack([img, masks["b"]])
    maker.image("a.png", rgba)
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "alpha" and ds.region_names == ["mask"]
    s = ds.sample(0, 0)
    np.testing.assert_array_equal(_region(s, "mask"), masks["b"] / 255.0)
    rgb = ((s["pixel_values"].numpy().transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
    np.testing.assert_array_equal(rgb, img)  # the RGB values are used as they are


def test_labelme_layout(maker, make_settings):
    img, _ = scene(64, 64, seed=6)
    maker.image("cat.png", img)
    doc = {
        "version": "5.4.1",
        "imagePath": "cat.png",
        "imageHeight": 64,
        "imageWidth": 64,
        "shapes": [
            {"label": "face", "points": [[10, 10], [30, 10], [30, 30], [10, 30]], "shape_type": "polygon"},
            {"label": "tail", "points": [[40, 40], [50, 60]], "shape_type": "rectangle"},
            {"label": "tail", "points": [[5, 50], [5, 55]], "shape_type": "circle"},
        ],
    }
    maker.text("cat.json", json.dumps(doc))
    ds = MaskedDataset(make_settings(), maker.root)
    assert ds.report.layout == "labelme" and ds.region_names == ["face", "tail"]
    s = ds.sample(0, 0)
    face = _region(s, "face")
    assert face[10:31, 10:31].all() and face.sum() == 21 * 21
    tail = _region(s, "tail")
    assert tail[40:61, 40:51].all() and tail[55, 5] == 1 and tail[0, 0] == 0


def test_explicit_layout_is_reported_as_set(maker, make_settings):
    maker.furlora_sample("x")
    _, regions, report = validate_dataset(maker.root, make_settings(layout="furlora"))
    assert report.layout == "furlora" and report.layout_reason == "set by data.layout"
    assert regions == ["a", "b", "c"]


def test_regions_setting_selects_and_orders(maker, make_settings):
    maker.furlora_sample("x", seed=3)
    ds = MaskedDataset(make_settings(regions=["c", "a", "b"], region_weights={"c": 0.5}), maker.root)
    assert ds.region_names == ["c", "a", "b"]
    s = ds.sample(0, 0)
    assert ds.region_weights == [0.5, 1.0, 1.0]
    merged = s["mask"][0].numpy()
    assert set(np.unique(merged[_region(s, "c") > 0])) == {0.5}
    assert set(np.unique(merged[_region(s, "a") > 0])) == {1.0}


def test_alpha_layout_image_without_alpha_follows_missing_mask(maker, make_settings):
    img, masks = scene(64, 64, seed=5)
    maker.image("with.png", np.dstack([img, masks["a"]]))
    maker.image("without.png", img)
    _, _, report = validate_dataset(maker.root, make_settings(layout="alpha"), strict=False)
    (p,) = report.errors
    assert p.path.name == "without.png" and "no alpha channel" in p.message
    ds = MaskedDataset(make_settings(layout="alpha", missing_mask="full"), maker.root)
    assert len(ds) == 2 and ds.region_names == ["mask", "whole_image"]
