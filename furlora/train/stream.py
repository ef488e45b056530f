"""The order in which micro-batches are fed, with a position that checkpoints save and restore.

Each epoch's batches come from a seeded sampler (a pure function of (seed, epoch)). With several processes, consecutive batches go to consecutive
ranks, so every rank takes one batch per micro-step and all advance together; an epoch's last
batches that cannot feed every rank are skipped. A sample's own randomness (crop, flip, random
mask) is the dataset's pure function of (seed, epoch, index). Together this makes the stream
resumable at the exact batch: ``state_dict()`` = {"epoch", "position"}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from furlora.errors import DatasetError
from furlora.train.threads import single_threaded_torch


class BatchStream:
    """Micro-batches for one process.

    ``dataset``: has ``sample(index, epoch)``. ``sampler``: has ``batches(epoch)`` giving lists of indices
    (furlora's BucketBatchSampler: a pure function of the epoch).
    ``collate``: list of samples -> batch dict. ``prefetch``: load the next batch in a
    background thread while the current one trains (same batches, same order).
    """

    def __init__(self, dataset: Any, sampler: Any, collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                 world_size: int = 1, rank: int = 0, prefetch: bool = True) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.collate = collate
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self.position = 0
        self._batches: list[list[int]] | None = None
        self._executor = None
        if prefetch:
            # The data thread's torch ops (tensor conversion, collation) must not start a second
            # OpenMP pool next to the training thread's: see furlora.train.threads.
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="furlora-data", initializer=single_threaded_torch
            )
        self._pending: tuple[tuple[int, int], Future[dict[str, Any]]] | None = None

    # -- position -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """{"epoch": e, "position": p}: the next micro-step reads batch p (+ rank) of epoch e."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._batches = None
        self._pending = None

    # -- reading ------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = [list(b) for b in self.sampler.batches(epoch)]
        if len(batches) < self.world_size:
            raise DatasetError(
                f"the dataset gives {len(batches)} batch(es) per epoch, fewer than the {self.world_size} processes; "
                "add images or lower train.batch_size"
            )
        return batches

    def _advance(self) -> tuple[int, list[int]]:
        """The (epoch, indices) of this rank's next batch; moves the position."""
        if self._batches is None:
            self._batches = self._epoch_batches(self.epoch)
        if self.position + self.world_size > len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = self._epoch_batches(self.epoch)
        indices = self._batches[self.position + self.rank]
        self.position += self.world_size
        return self.epoch, indices

    def _peek(self) -> tuple[int, list[int]]:
        """The (epoch, indices) the next call of :meth:`next` will read, without moving."""
        if self._batches is None:
            self._batches = self._epoch_batches(self.epoch)
        if self.position + self.world_size > len(self._batches):
            return self.epoch + 1, self._epoch_batches(self.epoch + 1)[self.rank]
        return self.epoch, self._batches[self.position + self.rank]

    def load(self, epoch: int, indices: Sequence[int]) -> dict[str, Any]:
        """Collate the samples ``indices`` as drawn in ``epoch``."""
        return self.collate([self.dataset.sample(i, epoch) for i in indices])

    def next(self) -> dict[str, Any]:
        """This rank's next micro-batch."""
        epoch, indices = self._advance()
        key = (epoch, tuple(indices))
        if self._pending is not None and self._pending[0] == key:
            batch = self._pending[1].result()
        else:
            batch = self.load(epoch, indices)
        self._pending = None
        if self._executor is not None:
            next_epoch, next_indices = self._peek()
            self._pending = ((next_epoch, tuple(next_indices)), self._executor.submit(self.load, next_epoch, next_indices))
        return batch

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
