"""Aspect-ratio buckets and a batch sampler that never mixes sizes, with a resumable seeded order.

Buckets are SDXL's training resolutions (about 1024^2 pixels each, sides multiples of 64),
scaled to ``data.resolution`` and rounded to ``data.buckets.multiple``. An image goes to the
bucket whose aspect ratio is closest on a log scale (so 2:1 and 1:2 are equally far from 1:1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterator, Protocol

import numpy as np

from furlora.data.settings import BucketSettings
from furlora.errors import CheckpointError

#: SDXL's (height, width) training buckets at 1024 px with height <= width; transposes added below.
_SDXL_LANDSCAPE: tuple[tuple[int, int], ...] = (
    (1024, 1024), (960, 1024), (960, 1088), (896, 1088), (896, 1152), (832, 1152), (832, 1216),
    (768, 1280), (768, 1344), (704, 1344), (704, 1408), (704, 1472), (640, 1536), (640, 1600),
    (576, 1664), (576, 1728), (576, 1792), (512, 1856), (512, 1920), (512, 1984), (512, 2048),
)
SDXL_BUCKETS: tuple[tuple[int, int], ...] = tuple(sorted(set(_SDXL_LANDSCAPE) | {(w, h) for h, w in _SDXL_LANDSCAPE}))


def make_buckets(resolution: int, settings: BucketSettings) -> list[tuple[int, int]]:
    """(height, width) buckets for ``resolution``: SDXL's list scaled by resolution/1024, rounded, deduplicated.

    With buckets disabled: the single square ``(resolution, resolution)``.
    """
    if not settings.enabled:
        return [(resolution, resolution)]
    m = settings.multiple
    scale = resolution / 1024.0
    out = set()
    for h, w in SDXL_BUCKETS:
        if max(h, w) / min(h, w) > settings.max_aspect + 1e-9:
            continue
        out.add((max(m, int(round(h * scale / m)) * m), max(m, int(round(w * scale / m)) * m)))
    return sorted(out)


def assign_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket (h, w) whose aspect ratio is closest to ``size`` = (h, w) in log space; ties -> larger area."""
    h, w = size
    target = math.log(w / h)
    return min(buckets, key=lambda b: (round(abs(math.log(b[1] / b[0]) - target), 9), -b[0] * b[1], b))


class HasBuckets(Protocol):
    def __len__(self) -> int: ...

    def bucket_of(self, index: int) -> tuple[int, int]: ...


class BucketBatchSampler:
    """Yields batches (lists of dataset indices) whose samples share one bucket resolution.

    The order of epoch ``e`` is a pure function of ``(seed, e)``: indices are shuffled within each
    bucket, cut into batches, and the batches shuffled. ``state_dict()`` records the epoch and the
    number of batches handed out; ``load_state_dict()`` makes the next iteration start at exactly
    that batch. A DataLoader with workers draws batches ahead of the training loop, so save
    ``state_dict(position=batches_consumed)`` with the count the loop really used.

    ``with_epoch=True`` yields ``[(index, epoch), ...]`` instead of plain indices; MaskedDataset
    accepts such pairs, which keeps per-sample randomness right with persistent workers.
    """

    def __init__(self, dataset: HasBuckets, batch_size: int, seed: int, drop_last: bool = False, *, with_epoch: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.with_epoch = with_epoch
        self.epoch = 0
        self.position = 0
        self._resume: int | None = None
        self._groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in range(len(dataset)):
            self._groups[tuple(dataset.bucket_of(i))].append(i)
        self.num_samples = len(dataset)

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` in order (pure function of seed and epoch)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), 0xB0C4E7]))
        out: list[list[int]] = []
        for bucket in sorted(self._groups):
            idx = rng.permutation(self._groups[bucket]).tolist()
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    out.append(chunk)
        return [out[k] for k in rng.permutation(len(out))]

    def __len__(self) -> int:
        per = [len(g) // self.batch_size if self.drop_last else math.ceil(len(g) / self.batch_size) for g in self._groups.values()]
        return int(sum(per))

    def __iter__(self) -> Iterator[list[Any]]:
        epoch = self.epoch
        batches = self.batches(epoch)
        start = self._resume if self._resume is not None else 0
        self._resume = None
        self.position = start
        for batch in batches[start:]:
            self.position += 1
            yield [(i, epoch) for i in batch] if self.with_epoch else list(batch)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` and start it from its first batch."""
        self.epoch = int(epoch)
        self.position = 0
        self._resume = None

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        """``{"epoch", "position", ...}``; ``position`` overrides the count of batches handed out."""
        return {
            "epoch": self.epoch,
            "position": self.position if position is None else int(position),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next ``iter()`` yields batch ``position`` of epoch ``epoch`` onwards."""
        for name in ("seed", "batch_size", "num_samples"):
            if name in state and int(state[name]) != getattr(self, name):
                raise CheckpointError(
                    f"sampler state has {name}={state[name]} but this run has {getattr(self, name)}: "
                    "the data order cannot be resumed exactly (same dataset, batch size and seed needed)"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise CheckpointError(f"sampler state position {position} is outside 0..{len(self)} batches")
        self.epoch = int(state["epoch"])
        self.position = position
        self._resume = position
