"""Caches keyed by content and settings: never stale, and only disabled where augmentation requires."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import scene

from furlora.data.cache import LatentCache, file_digest, make_key
from furlora.data.dataset import MaskedDataset


class Encoder:
    """Counts calls; returns a tensor derived from the sample so stale values would show."""

    def __init__(self):
        self.calls = 0

    def __call__(self, pixels: torch.Tensor):
        def run():
            self.calls += 1
            return {"latents": pixels[:, ::8, ::8].clone() * 2}

        return run


def _parts(ds, i=0, kind="latents", epoch=0):
    parts = ds.sample(i, epoch)["cache_keys"][kind]
    assert parts is not None
    return {**parts, "vae": "tiny-vae-fingerprint"}


def test_get_or_compute_hits_after_the_first_call(tmp_path):
    cache = LatentCache(tmp_path, "latents")
    enc = Encoder()
    parts = {"image": "abc", "resolution": 64}
    x = torch.arange(64.0).reshape(1, 8, 8)
    first = cache.get_or_compute(parts, enc(x))
    second = cache.get_or_compute(parts, enc(x))
    assert enc.calls == 1 and cache.hits == 1 and cache.misses == 1
    torch.testing.assert_close(first["latents"], second["latents"])
    single = cache.get_or_compute({"single": 1}, lambda: torch.ones(3))
    torch.testing.assert_close(cache.get_or_compute({"single": 1}, lambda: torch.zeros(3)), single)
    assert len(cache) == 2
    assert not list(cache.root.rglob(".*"))  # atomic writes leave no temporary (hidden) files


def test_damaged_or_mismatching_entries_are_recomputed(tmp_path):
    cache = LatentCache(tmp_path)
    parts = {"a": 1}
    cache.put(parts, {"x": torch.ones(2)})
    cache.path_for(make_key(parts)).write_bytes(b"garbage")
    out = cache.get_or_compute(parts, lambda: {"x": torch.zeros(2)})
    assert out["x"].sum() == 0 and cache.misses == 1


def test_key_changes_when_an_image_is_edited(maker, make_settings, tmp_path):
    maker.furlora_sample("dog", seed=0)
    settings = make_settings()
    ds = MaskedDataset(settings, maker.root)
    cache = LatentCache(tmp_path / "cache")
    enc = Encoder()
    cache.get_or_compute(_parts(ds), enc(ds[0]["pixel_values"]))
    cache.get_or_compute(_parts(MaskedDataset(settings, maker.root)), enc(ds[0]["pixel_values"]))
    assert enc.calls == 1  # unchanged files and settings: served from the cache
    img, _ = scene(64, 64, seed=0)
    img[0, 0] = (255, 255, 255)  # one pixel edited
    maker.image("dog.png", img)
    ds2 = MaskedDataset(settings, maker.root)
    value = cache.get_or_compute(_parts(ds2), enc(ds2[0]["pixel_values"]))
    assert enc.calls == 2
    torch.testing.assert_close(value["latents"], ds2[0]["pixel_values"][:, ::8, ::8] * 2)


def test_mask_edit_and_mask_settings_invalidate_only_masked_latents(maker, make_settings, tmp_path):
    maker.furlora_sample("dog", seed=0)
    cache = LatentCache(tmp_path / "cache")
    base = MaskedDataset(make_settings(), maker.root)
    keys = {k: make_key(_parts(base, kind=k)) for k in ("latents", "masked_latents", "text")}
    dilated = MaskedDataset(make_settings(masks={"dilate_px": 3}), maker.root)
    assert make_key(_parts(dilated, kind="latents")) == keys["latents"]
    assert make_key(_parts(dilated, kind="masked_latents")) != keys["masked_latents"]
    assert make_key(_parts(dilated, kind="text")) == keys["text"]
    _, masks = scene(64, 64, seed=0)
    masks["a"][:5, :5] = 255  # the face mask is edited
    maker.image("dog.a.png", masks["a"])
    edited = MaskedDataset(make_settings(), maker.root)
    assert make_key(_parts(edited, kind="masked_latents")) != keys["masked_latents"]
    assert make_key(_parts(edited, kind="latents")) == keys["latents"]
    del cache


def test_setting_changes_invalidate(maker, make_settings):
    maker.furlora_sample("dog", seed=0, size=(128, 192))
    base = make_key(_parts(MaskedDataset(make_settings(resolution=128), maker.root)))
    same = make_key(_parts(MaskedDataset(make_settings(resolution=128, masks={"feather_px": 2}), maker.root)))
    assert same == base  # a mask setting does not touch the image latents
    for change in ({"resolution": 256}, {"buckets": {"enabled": False}}, {"augment": {"enabled": True, "hflip": 1.0, "crop": "center"}}):
        assert make_key(_parts(MaskedDataset(make_settings(**{"resolution": 128, **change}), maker.root))) != base, change
    caption = make_key(_parts(MaskedDataset(make_settings(), maker.root), kind="text"))
    assert make_key(_parts(MaskedDataset(make_settings(captions={"prefix": "spitz, "}), maker.root), kind="text")) != caption


def test_random_augmentation_disables_only_what_it_invalidates(maker, make_settings):
    maker.furlora_sample("dog", seed=0)
    plan = MaskedDataset(make_settings(), maker.root).cache_plan
    assert plan.latents and plan.masked_latents and plan.text
    flip = MaskedDataset(make_settings(augment={"enabled": True, "hflip": 0.5, "crop": "center"}), maker.root).cache_plan
    assert flip.latents  # two variants, both keyed by the flip flag
    rot = MaskedDataset(make_settings(augment={"enabled": True, "rotate_deg": 5.0}), maker.root)
    assert not rot.cache_plan.latents and not rot.cache_plan.masked_latents and rot.cache_plan.text
    assert any("rotate_deg" in r for r in rot.cache_plan.reasons)
    sample = rot.sample(0, 0)
    assert sample["cache_keys"]["latents"] is None and sample["cache_keys"]["text"] is not None
    random_holes = MaskedDataset(make_settings(inpaint_mask={"strokes": 1.0}), maker.root).cache_plan
    assert random_holes.latents and not random_holes.masked_latents


def test_file_digest_tracks_content(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"one")
    d1 = file_digest(p)
    p.write_bytes(b"two")
    assert file_digest(p) != d1
    assert np.frombuffer(bytes.fromhex(d1), np.uint8).size == 32


@pytest.mark.parametrize("kind", ["latents", "masked_latents"])
def test_cached_value_matches_fresh_computation(maker, make_settings, tmp_path, kind):
    maker.furlora_sample("dog", seed=2)
    ds = MaskedDataset(make_settings(), maker.root)
    cache = LatentCache(tmp_path / "c", kind)
    field = "pixel_values" if kind == "latents" else "masked_pixel_values"
    sample = ds.sample(0, 0)
    cache.get_or_compute(_parts(ds, kind=kind), lambda: sample[field].clone())
    later = ds.sample(0, 5)  # another epoch: deterministic settings, so the same key
    got = cache.get_or_compute(_parts(ds, kind=kind, epoch=5), lambda: pytest.fail("recomputed"))
    torch.testing.assert_close(got, later[field])


def test_cache_mode_freezes_augmentation_per_variant_and_keeps_every_key(maker, make_settings):
    """around_mask crops with slack and random holes used to switch caching off; cache mode keeps it on."""
    maker.furlora_sample("dog", seed=0, size=(96, 160))
    settings = make_settings(
        resolution=64, augment={"enabled": True, "hflip": 0.5, "crop": "around_mask", "rotate_deg": 5.0},
        inpaint_mask={"region": 0.0, "strokes": 1.0}, cache={"variants": 2, "holes": 3},
    )
    plain = MaskedDataset(settings, maker.root)
    cached = MaskedDataset(settings, maker.root, cache_latents=True)
    assert not plain.cache_plan.latents
    assert cached.cache_plan.latents and cached.cache_plan.masked_latents and not cached.cache_plan.reasons
    # The first cycle of epochs is exactly what an uncached run draws.
    for epoch in (0, 1):
        a, b = plain.sample(0, epoch), cached.sample(0, epoch)
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["inpaint_mask"], b["inpaint_mask"])
    # Later epochs repeat the variants' crops, and draw holes only from the fixed set.
    items = [cached.cache_items(0, v) for v in (0, 1)]
    hole_keys = [{make_key(parts) for parts, _ in item["holes"]} for item in items]
    assert len(items[0]["holes"]) == cached.hole_count() == 3
    for epoch in range(2, 12):
        sample = cached.sample(0, epoch)
        keys = sample["cache_keys"]
        assert keys["latents"] == items[epoch % 2]["latents"]
        assert make_key(keys["masked_latents"]) in hole_keys[epoch % 2]
        assert torch.equal(sample["pixel_values"], cached.sample(0, epoch % 2)["pixel_values"])


def test_region_hole_joins_the_fixed_set(maker, make_settings):
    maker.furlora_sample("dog", seed=1)
    ds = MaskedDataset(make_settings(inpaint_mask={"strokes": 1.0}, cache={"holes": 2}), maker.root, cache_latents=True)
    assert ds.hole_count() == 3
    holes = ds.cache_items(0, 0)["holes"]
    region = (ds.sample(0, 0, augment=False)["mask"][0] > 0).float()
    masked_region = ds.cache_items(0, 0)["pixel_values"] * (1 - region)
    assert torch.equal(holes[-1][1], masked_region)


def test_entry_with_a_damaged_tensor_is_recomputed(tmp_path):
    cache = LatentCache(tmp_path)
    parts = {"a": 1}
    path = cache.put(parts, torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # a flipped bit inside the tensor bytes: the header and key parts still read fine
    path.write_bytes(bytes(data))
    assert cache.get(parts) is None
    assert torch.equal(cache.get_or_compute(parts, lambda: torch.arange(1000.0)), torch.arange(1000.0))
    assert cache.misses == 1 and torch.equal(cache.get(parts), torch.arange(1000.0))
