"""The procedural pretraining corpus: deterministic, in range, captioned, never fur."""

from __future__ import annotations

import pytest
import torch

from furlora.pretrain.corpus import ProceduralCorpus


def test_a_sample_is_a_pure_function_of_seed_and_index() -> None:
    a, b = ProceduralCorpus(7, 64)[3], ProceduralCorpus(7, 64)[3]
    assert torch.equal(a.pixels, b.pixels)
    assert torch.equal(a.inpaint_mask, b.inpaint_mask)
    assert (a.caption, a.original_size, a.crop_top_left) == (b.caption, b.original_size, b.crop_top_left)
    other_index, other_seed = ProceduralCorpus(7, 64)[4], ProceduralCorpus(8, 64)[3]
    assert not torch.equal(a.pixels, other_index.pixels)
    assert not torch.equal(a.pixels, other_seed.pixels)


def test_batch_shapes_ranges_and_micro_conditioning() -> None:
    corpus = ProceduralCorpus(1, 64, full_mask_fraction=0.15)
    batch = corpus.batch(list(range(40)))
    pixels, mask = batch["pixel_values"], batch["inpaint_mask"]
    assert pixels.shape == (40, 3, 64, 64) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert mask.shape == (40, 1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # the hole of the masked picture is exactly 0, the rest is the picture
    assert torch.equal(batch["masked_pixel_values"], pixels * (1 - mask))
    full = int((mask.flatten(1).mean(1) == 1).sum())
    assert 1 <= full <= 15  # about 15% full masks, the others partial
    assert (mask.flatten(1).mean(1) > 0).all()  # never an empty mask
    ids = batch["time_ids"]
    assert ids.shape == (40, 6)
    # (orig h, orig w, top, left, target h, target w): the crop lies inside the original
    assert (ids[:, 4:] == 64).all()
    assert (ids[:, 2] + 64 <= ids[:, 0]).all() and (ids[:, 3] + 64 <= ids[:, 1]).all()
    assert len(set(ids[:, 0].tolist())) > 1  # original sizes vary


def test_captions_describe_scenes_and_never_fur() -> None:
    corpus = ProceduralCorpus(2, 32)
    captions = [corpus[i].caption for i in range(300)]
    assert len(set(captions)) > 100
    assert any("silhouette" in c for c in captions)
    assert any(c.startswith("black and white") for c in captions)
    for word in ("fur", "spitz", "hair", "strand"):
        assert not any(word in c.split() for c in captions), word
    grey = [i for i, c in enumerate(captions) if c.startswith("black and white")][0]
    px = corpus[grey].pixels
    assert torch.equal(px[0], px[1]) and torch.equal(px[1], px[2])  # really monochrome


def test_size_must_fit_the_vae() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        ProceduralCorpus(0, 100)
