"""Bad input: each problem gets a specific message naming its file; all are reported together."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from data_helpers import scene
from PIL import Image

from furlora.data.dataset import MaskedDataset
from furlora.data.validate import validate_dataset
from furlora.errors import DatasetError


def _problems(maker, settings, kind=None):
    _, _, report = validate_dataset(maker.root, settings, strict=False)
    return [p for p in report.problems if kind is None or p.kind == kind], report


def test_corrupt_image(maker, make_settings):
    maker.furlora_sample("good")
    maker.bytes("broken.png", b"this is not a png at all")
    maker.image("broken.a.png", scene()[1]["a"])
    problems, report = _problems(maker, make_settings(), "unreadable")
    assert len(problems) == 1 and problems[0].path.name == "broken.png"
    assert "broken.png" in str(problems[0]) and "not an image file" in str(problems[0])
    assert report.samples_used == 1


def test_truncated_png(maker, make_settings):
    maker.furlora_sample("good")
    path = maker.furlora_sample("cut", seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as exc:
        MaskedDataset(make_settings(), maker.root)
    assert "cut.png" in str(exc.value) and "truncated or damaged" in str(exc.value)
    assert "Traceback" not in str(exc.value)


def test_mask_of_a_different_size(maker, make_settings):
    maker.furlora_sample("x")
    maker.image("x.b.png", np.zeros((32, 48), np.uint8))
    (p,), _ = _problems(maker, make_settings(), "size_mismatch")
    assert p.path.name == "x.b.png" and "48x32" in p.message and "x.png is 64x64" in p.message


def test_mask_without_image(maker, make_settings):
    maker.furlora_sample("x")
    maker.image("ghost.a.png", scene()[1]["a"])
    (p,), report = _problems(maker, make_settings(), "orphan_mask")
    assert p.path.name == "ghost.a.png" and "no image ghost.*" in p.message
    with pytest.raises(DatasetError, match="ghost.a.png"):
        MaskedDataset(make_settings(), maker.root)


def test_image_without_mask_error_or_full(maker, make_settings):
    maker.furlora_sample("x")
    img, _ = scene(seed=9)
    maker.image("lonely.png", img)
    (p,), _ = _problems(maker, make_settings(), "missing_mask")
    assert p.path.name == "lonely.png" and "no mask" in p.message and "missing_mask: full" in p.message
    ds = MaskedDataset(make_settings(missing_mask="full"), maker.root)
    assert ds.region_names[-1] == "whole_image"
    i = [s.key for s in ds.samples].index("lonely")
    sample = ds.sample(i, 0)
    assert sample["mask"].min() == 1.0
    assert ds.report.counts["images without mask, trained on the whole image"] == 1


def test_all_black_masks(maker, make_settings):
    maker.furlora_sample("x")
    maker.image("x.b.png", np.zeros((64, 64), np.uint8))  # one empty region: warning, sample kept
    (p,), report = _problems(maker, make_settings(), "empty_mask")
    assert p.path.name == "x.b.png" and p.severity == "warning" and "all black" in p.message
    img, _ = scene(seed=2)
    maker.image("y.png", img)
    maker.image("y.a.png", np.zeros((64, 64), np.uint8))  # every mask empty: the sample is bad
    problems, report = _problems(maker, make_settings(), "empty_mask")
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 1 and errors[0].path.name == "y.png" and "train nothing" in errors[0].message
    assert report.samples_used == 1


def test_all_white_mask(maker, make_settings):
    maker.furlora_sample("x")
    maker.image("x.c.png", np.full((64, 64), 255, np.uint8))
    (p,), _ = _problems(maker, make_settings(), "full_mask")
    assert p.path.name == "x.c.png" and "all white" in p.message and "Invert" in p.message and p.severity == "error"
    problems, _ = _problems(maker, make_settings(masks={"allow_full": True}), "full_mask")
    assert problems == []


def test_non_binary_mask(maker, make_settings):
    maker.furlora_sample("x")
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    maker.image("x.a.png", grey)
    (p,), _ = _problems(maker, make_settings(), "non_binary")
    assert p.path.name == "x.a.png" and p.severity == "warning" and "thresholded at 0.5" in p.message
    assert _problems(maker, make_settings(masks={"mode": "grey"}), "non_binary")[0] == []
    ds = MaskedDataset(make_settings(masks={"mode": "grey"}), maker.root)
    a = ds.sample(0, 0)["region_masks"][0].numpy()
    np.testing.assert_allclose(a[0], grey[0] / 255.0, atol=1e-6)  # grey levels kept as weights


def test_unknown_region_name(maker, make_settings):
    maker.furlora_sample("x", regions=("a",))
    maker.image("x.tial.png", scene()[1]["c"])
    (p,), _ = _problems(maker, make_settings(regions=["a", "tail"]), "unknown_region")
    assert p.path.name == "x.tial.png" and "'tial'" in p.message and "did you mean 'tail'" in p.message


def test_duplicate_stems(maker, make_settings):
    path = maker.furlora_sample("dog")
    maker.image("dog.jpg", np.asarray(Image.open(path)))
    problems, report = _problems(maker, make_settings(), "duplicate")
    assert {p.path.name for p in problems} == {"dog.png", "dog.jpg"}
    assert all("dog.png" in p.message and "dog.jpg" in p.message for p in problems)


def test_unicode_and_spaces_in_paths(maker, make_settings):
    maker.furlora_sample("hündchen mit fell", caption="ein Spitz 🐕")
    bad = maker.bytes("ünlesbar bild.png", b"\x89PNG\r\n\x1a\nbroken")
    ds = MaskedDataset(make_settings(bad_samples="skip"), maker.root)
    assert len(ds) == 1 and ds.sample(0, 0)["key"] == "hündchen mit fell"
    assert ds.sample(0, 0)["caption"] == "ein Spitz 🐕"
    assert any(str(bad) in str(p) for p in ds.report.errors)


def test_empty_and_missing_folders(tmp_path, make_settings):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"empty contains no images"):
        MaskedDataset(make_settings(), tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        MaskedDataset(make_settings(), tmp_path / "nowhere")


def test_bad_metadata_caption_and_labelme_files_are_named(maker, make_settings):
    maker.furlora_sample("x")
    maker.bytes("x.txt", b"\xff\xfe\x00bad")
    problems, _ = _problems(maker, make_settings(), "caption")
    assert problems[0].path.name == "x.txt" and "UTF-8" in problems[0].message
    other = maker.root.parent / "meta"
    other.mkdir()
    (other / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{oops\n', encoding="utf-8")
    Image.fromarray(scene()[0]).save(other / "a.png")
    _, _, report = validate_dataset(other, make_settings(missing_mask="full"), strict=False)
    msgs = [str(p) for p in report.problems]
    assert any("metadata.jsonl: line 2 is not valid JSON" in m for m in msgs)
    lm = maker.root.parent / "lm"
    lm.mkdir()
    Image.fromarray(scene()[0]).save(lm / "c.png")
    (lm / "c.json").write_text(json.dumps({"shapes": [{"label": "face", "points": [[1, 1], [5, 5]], "shape_type": "line"}]}))
    _, _, report = validate_dataset(lm, make_settings(layout="labelme"), strict=False)
    assert any(p.path.name == "c.json" and "'line' is not supported" in p.message for p in report.problems)


def test_all_problems_are_listed_together_and_skip_counts(maker, make_settings, caplog):
    maker.furlora_sample("good1")
    maker.furlora_sample("good2", seed=1)
    maker.bytes("bad1.png", b"junk")
    maker.image("bad2.png", scene()[0])
    maker.image("bad2.a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError) as exc:
        MaskedDataset(make_settings(), maker.root)
    text = str(exc.value)
    assert "bad1.png" in text and "bad2.a.png" in text and "bad_samples: skip" in text
    with caplog.at_level(logging.INFO, logger="furlora.data"):
        ds = MaskedDataset(make_settings(bad_samples="skip"), maker.root)
    assert len(ds) == 2 and len(ds.report.skipped) == 2
    log = caplog.text
    assert "4 images, 2 samples used, 2 skipped" in log and "regions used: a (2), b (2), c (2)" in log
    assert "bad1.png" in log


def test_exif_rotation_is_applied_to_image_and_masks_alike(maker, make_settings):
    img, masks = scene(64, 96, seed=7)
    maker.image("rot.png", img, exif_orientation=6)  # stored landscape, shown portrait
    for r in "abc":
        maker.image(f"rot.{r}.png", masks[r])  # drawn on the stored pixels
    ds = MaskedDataset(make_settings(buckets={"enabled": False}, resolution=64), maker.root)
    assert ds.samples[0].size == (96, 64)
    s = ds.sample(0, 0)
    assert s["original_size"] == (96, 64)
    rgb = ((s["pixel_values"].numpy().transpose(1, 2, 0) + 1) * 127.5).round()
    a = s["region_masks"][0].numpy() > 0.5
    assert rgb[a][:, 0].mean() > 200 and rgb[a][:, 1].mean() < 60  # the face mask covers the red disc
    # a mask that carries its own orientation tag wins
    maker.image("rot.a.png", np.rot90(masks["a"], -1).copy(), exif_orientation=1)
    ds2 = MaskedDataset(make_settings(buckets={"enabled": False}, resolution=64, masks={"allow_full": True}), maker.root)
    np.testing.assert_array_equal(ds2.sample(0, 0)["region_masks"][0].numpy(), ds.sample(0, 0)["region_masks"][0].numpy())


@pytest.mark.parametrize("mode", ["I;16", "P", "CMYK", "RGBA", "LA", "L"])
def test_image_modes_are_handled(maker, make_settings, mode):
    img, masks = scene(64, 64, seed=8)
    if mode == "I;16":
        grey = (img.mean(axis=2) * 257).astype(np.uint16)
        Image.fromarray(grey).save(maker.path("m.png"))
        expected = np.round(grey / 65535 * 255)
    else:
        ext = "tif" if mode == "CMYK" else "png"
        converted = Image.fromarray(img).convert(mode)
        converted.save(maker.path(f"m.{ext}"))
        expected = np.asarray(converted.convert("RGB"), dtype=np.float64)
    maker.image("m.a.png", masks["a"])
    ds = MaskedDataset(make_settings(), maker.root)
    rgb = (ds.sample(0, 0)["pixel_values"].numpy().transpose(1, 2, 0) + 1) * 127.5
    if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=2)
    np.testing.assert_allclose(rgb, expected, atol=1.01)
    warned = [p for p in ds.report.problems if p.kind == "alpha_ignored"]
    assert bool(warned) == (mode in ("RGBA", "LA"))


@pytest.mark.parametrize("kind", ["16bit", "palette", "rgba_on_transparent", "onebit", "red_on_black"])
def test_mask_modes_are_handled(maker, make_settings, kind):
    img, masks = scene(64, 64, seed=8)
    maker.image("m.png", img)
    m = masks["a"]
    path = maker.path("m.a.png")
    if kind == "16bit":
        Image.fromarray(m.astype(np.uint16) * 257).save(path)
    elif kind == "palette":
        Image.fromarray(m).convert("P").save(path)
    elif kind == "rgba_on_transparent":
        Image.fromarray(np.dstack([np.full_like(m, 255)] * 3 + [m])).save(path)
    elif kind == "onebit":
        Image.fromarray(m).convert("1").save(path)
    else:
        Image.fromarray(np.dstack([m, np.zeros_like(m), np.zeros_like(m)])).save(path)
    ds = MaskedDataset(make_settings(), maker.root)
    np.testing.assert_array_equal(ds.sample(0, 0)["region_masks"][0].numpy(), m / 255.0)


def test_mask_drawn_on_the_displayed_image_is_used_as_drawn(maker, make_settings, caplog):
    # What GIMP / Photoshop / LabelMe export for a phone photo: the mask has the displayed size.
    img, masks = scene(64, 96, seed=7)
    maker.image("rot.png", img, exif_orientation=6)  # stored 64x96 landscape, shown 96x64 portrait
    shown = {r: np.rot90(m, -1).copy() for r, m in masks.items()}  # as drawn on the shown image
    for r in "abc":
        maker.image(f"rot.{r}.png", shown[r])  # portrait, no EXIF of its own
    with caplog.at_level(logging.INFO, logger="furlora.data"):
        ds = MaskedDataset(make_settings(buckets={"enabled": False}, resolution=64), maker.root)
    assert [p for p in ds.report.problems if p.kind == "size_mismatch"] == []
    assert ds.report.counts["masks drawn on the displayed (EXIF-rotated) image, used as drawn"] == 3
    assert "rot.a.png: mask has the displayed size of rot.png (EXIF orientation 6)" in caplog.text
    rgb, loaded = ds.load_arrays(0)
    np.testing.assert_array_equal(loaded["a"], shown["a"] / 255.0)
    assert rgb[loaded["a"] > 0.5][:, 0].min() == 255  # the face mask lies on the red disc as displayed


def test_square_image_masks_follow_the_stored_pixels(maker, make_settings):
    # Square: both readings fit, so the mask is taken as drawn on the stored pixels (rotated with the image).
    img, masks = scene(64, 64, seed=7)
    maker.image("sq.png", img, exif_orientation=6)
    maker.image("sq.a.png", masks["a"])
    ds = MaskedDataset(make_settings(buckets={"enabled": False}), maker.root)
    _, loaded = ds.load_arrays(0)
    np.testing.assert_array_equal(loaded["a"], np.rot90(masks["a"], -1) / 255.0)
    assert ds.report.counts["masks drawn on the displayed (EXIF-rotated) image, used as drawn"] == 0


def test_mask_with_its_own_rotation_tag_and_displayed_size_gets_a_hint(maker, make_settings):
    img, masks = scene(64, 96, seed=7)
    maker.image("rot.png", img, exif_orientation=6)
    maker.image("rot.a.png", np.rot90(masks["a"], -1).copy(), exif_orientation=6)  # rotated twice
    (p,), _ = _problems(maker, make_settings(), "size_mismatch")
    assert p.path.name == "rot.a.png" and "EXIF orientation 6" in p.message and "displayed" in p.message


@pytest.mark.parametrize(("size", "resolution", "severity", "factor"), [
    ((64, 64), 64, None, None), ((24, 24), 64, "warning", "2.7x"), ((4, 4), 64, "error", "16.0x"),
])
def test_images_far_smaller_than_the_resolution_are_reported(maker, make_settings, size, resolution, severity, factor):
    maker.furlora_sample("small", size=size)
    found, report = _problems(maker, make_settings(resolution=resolution, buckets={"enabled": False}), "too_small")
    if severity is None:
        assert found == []
        return
    (p,) = found
    assert p.severity == severity and p.path.name == "small.png"
    assert f"image is {size[1]}x{size[0]}" in p.message and f"data.resolution {resolution} enlarges it {factor}" in p.message
    assert (report.skipped == [p.path]) == (severity == "error")
