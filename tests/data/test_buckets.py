"""Aspect buckets and the batch sampler: one size per batch, seeded order, exact resume."""

from __future__ import annotations

import pytest
import torch

from furlora.data.buckets import SDXL_BUCKETS, BucketBatchSampler, assign_bucket, make_buckets
from furlora.data.dataset import MaskedDataset, collate_samples
from furlora.data.settings import BucketSettings
from furlora.errors import CheckpointError


class FakeDataset:
    def __init__(self, buckets):
        self.b = buckets

    def __len__(self):
        return len(self.b)

    def bucket_of(self, i):
        return self.b[i]


def _mixed(n=23):
    sizes = [(64, 64), (64, 128), (128, 64)]
    return FakeDataset([sizes[(i * 7) % 3] if i % 5 else sizes[0] for i in range(n)])


def test_sdxl_buckets_at_1024_and_scaled():
    at_1024 = make_buckets(1024, BucketSettings(max_aspect=4.0))
    assert set(at_1024) == set(SDXL_BUCKETS)
    assert (1024, 1024) in at_1024 and (832, 1216) in at_1024 and (1216, 832) in at_1024
    assert all(h % 64 == 0 and w % 64 == 0 for h, w in at_1024)
    at_512 = make_buckets(512, BucketSettings())
    assert (512, 512) in at_512
    assert all(h % 64 == 0 and w % 64 == 0 and max(h, w) / min(h, w) <= 2.0 + 1e-9 for h, w in at_512)
    assert all(abs(h * w - 512 * 512) / (512 * 512) < 0.25 for h, w in at_512)
    assert make_buckets(256, BucketSettings(enabled=False)) == [(256, 256)]
    with pytest.raises(ValueError, match="multiple of 8"):
        BucketSettings(multiple=12)


def test_assign_bucket_by_aspect():
    buckets = make_buckets(1024, BucketSettings())
    assert assign_bucket((1000, 1000), buckets) == (1024, 1024)
    h, w = assign_bucket((2000, 3000), buckets)  # landscape 3:2
    assert w > h and abs(w / h - 1.5) < 0.1
    h, w = assign_bucket((3000, 2000), buckets)
    assert h > w and abs(h / w - 1.5) < 0.1


def test_batches_never_mix_sizes_and_cover_every_index_once():
    ds = _mixed()
    sampler = BucketBatchSampler(ds, batch_size=3, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for b in batches:
            assert len({ds.bucket_of(i) for i in b}) == 1
        assert sorted(i for b in batches for i in b) == list(range(len(ds)))


def test_order_is_seeded_per_epoch():
    ds = _mixed()
    a = BucketBatchSampler(ds, 3, seed=1).batches(0)
    assert a == BucketBatchSampler(ds, 3, seed=1).batches(0)
    assert a != BucketBatchSampler(ds, 3, seed=1).batches(1)
    assert a != BucketBatchSampler(ds, 3, seed=2).batches(0)


@pytest.mark.parametrize("stop", [0, 1, 4, 7])
def test_resume_at_the_exact_batch(stop):
    ds = _mixed()
    straight = BucketBatchSampler(ds, 3, seed=9)
    straight.set_epoch(2)
    full = list(straight)
    first = BucketBatchSampler(ds, 3, seed=9)
    first.set_epoch(2)
    it = iter(first)
    consumed = [next(it) for _ in range(stop)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["position"] == stop
    resumed = BucketBatchSampler(ds, 3, seed=9)
    resumed.load_state_dict(state)
    assert consumed + list(resumed) == full
    resumed.set_epoch(3)  # the next epoch starts from its first batch
    assert list(resumed) == resumed.batches(3)


def test_state_position_override_and_mismatch():
    ds = _mixed()
    s = BucketBatchSampler(ds, 3, seed=9)
    it = iter(s)
    next(it), next(it), next(it)
    assert s.state_dict(position=1)["position"] == 1  # a DataLoader prefetched ahead of the loop
    other = BucketBatchSampler(ds, 4, seed=9)
    with pytest.raises(CheckpointError, match="batch_size"):
        other.load_state_dict(s.state_dict())
    with pytest.raises(CheckpointError, match="position"):
        s.load_state_dict({"epoch": 0, "position": 999})


def test_drop_last_and_with_epoch():
    ds = FakeDataset([(64, 64)] * 7 + [(64, 128)] * 2)
    s = BucketBatchSampler(ds, 3, seed=0, drop_last=True)
    batches = list(s)
    assert len(batches) == len(s) == 2 and all(len(b) == 3 for b in batches)
    s2 = BucketBatchSampler(ds, 3, seed=0, with_epoch=True)
    s2.set_epoch(4)
    assert all(e == 4 for b in s2 for _, e in b)


def test_dataloader_with_real_dataset_gives_one_size_per_batch(maker, make_settings):
    for k, size in enumerate([(64, 64), (64, 64), (64, 128), (64, 128), (128, 64)]):
        maker.furlora_sample(f"img{k}", seed=k, size=size)
    ds = MaskedDataset(make_settings(resolution=128), maker.root)
    buckets = {ds.bucket_of(i) for i in range(len(ds))}
    assert len(buckets) == 3 and (128, 128) in buckets
    sampler = BucketBatchSampler(ds, batch_size=2, seed=0, with_epoch=True)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_samples)
    seen = []
    for batch in loader:
        h, w = batch["pixel_values"].shape[-2:]
        assert all(tuple(t) == (h, w) for t in batch["target_size"])
        seen += batch["index"]
    assert sorted(seen) == list(range(len(ds)))
