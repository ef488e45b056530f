"""Crash-safe step checkpoints: write-then-rename, fsync, a completeness marker with checksums.

Layout of one checkpoint folder ``<dir>/step-00000120/``::

    state.safetensors     every tensor: LoRA weights (fp32), EMA copy, optimizer, LR scheduler,
                          grad scaler and RNG states, packed into one buffer per dtype
    trainer.json          global step, data position, counters, config and config hash, and
                          the structure that unpacks the tensors (furlora.train.state_io)
    COMPLETE.json         the marker: every other file's size and sha256, written last

Nothing in a checkpoint is unpickled when it is read.
The folder is written as ``.tmp-step-00000120-<pid>``: every file is fsynced, then the marker,
then the folder itself, and only then renamed to ``step-00000120`` (an atomic rename) and the
parent folder fsynced. A kill at any moment therefore leaves either no new checkpoint or a
complete one. Retention deletes old checkpoints only after the new one is complete, and renames
them to ``.deleting-...`` first so a half-deleted folder is never mistaken for a checkpoint.

Per-step checkpoints cost the training thread almost nothing: :class:`CheckpointWriter.save`
starts a writer thread and returns. That thread first copies the state into reused host buffers
(pinned, with non-blocking copies, when the state is on a CUDA device; one ``torch.cat(out=...)``
per dtype on the CPU) while the training thread runs the next forward and backward passes, which
do not change the state; the training thread waits for the copy only before the next optimizer
step (:meth:`CheckpointWriter.before_update`). Then the writer serialises, checksums, writes and
renames. At most one write is in flight.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from furlora.errors import CheckpointError, TrainingError
from furlora.train.state_io import flatten_state, unflatten_state

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step-(\d{8})$")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass
class CheckpointState:
    """Everything needed to continue training exactly (tensors may be live: :func:`pack` copies)."""

    step: int
    lora: dict[str, torch.Tensor]
    training: dict[str, Any]
    """optimizer / lr_scheduler / scaler / rng state dicts (tensors, numbers, strings, lists, tuples, dicts)."""
    meta: dict[str, Any]
    """JSON-serialisable: data position, counters, config, config_hash."""
    ema: dict[str, torch.Tensor] | None = None
    path: Path | None = field(default=None, compare=False)


@dataclass
class PackedCheckpoint:
    """A private copy of a :class:`CheckpointState`: tensors packed per dtype, ready to write."""

    step: int
    buffers: dict[str, torch.Tensor]
    skeleton: Any
    meta: dict[str, Any]


def pack(state: CheckpointState, staging: StagingBuffers | None = None) -> PackedCheckpoint:
    """Copy every tensor of ``state`` into a few CPU buffers (one per dtype).

    Cheap enough to run in the training thread at every step; afterwards training may change
    the live tensors while the packed copy is written in the background. ``staging``: copy into
    its reused buffers (their content is valid once ``staging.ready()`` returns).
    """
    stage = staging.stage if staging is not None else None
    buffers, skeleton = flatten_state({"lora": state.lora, "ema": state.ema, "training": state.training}, stage)
    return PackedCheckpoint(step=state.step, buffers=buffers, skeleton=skeleton, meta=state.meta)


class StagingBuffers:
    """Host buffers, one per dtype, reused by every checkpoint (no new allocation per step).

    Device tensors are copied with ``non_blocking=True`` into pinned buffers and a CUDA event
    marks the end of the copies: the training thread goes on at once, the writer thread calls
    :meth:`ready` before it reads the buffers. CPU tensors are concatenated into the buffer.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._event: Any = None

    def stage(self, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        numel = sum(t.numel() for t in tensors)
        on_cuda = any(t.is_cuda for t in tensors)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or (on_cuda and not buffer.is_pinned()):  # one dtype per name
            buffer = torch.empty(numel, dtype=tensors[0].dtype, pin_memory=on_cuda)
            self._buffers[name] = buffer
        out = buffer[:numel]
        if not on_cuda:
            torch.cat(tensors, out=out)
            return out
        for chunk, t in zip(out.split([t.numel() for t in tensors]), tensors):
            chunk.copy_(t, non_blocking=t.is_cuda)
        self._event = torch.cuda.Event()
        self._event.record()
        return out

    def ready(self) -> None:
        """Block until the non-blocking copies of the last :meth:`stage` calls have landed."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None


# ----------------------------------------------------------------------------- writing

def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(
    directory: str | Path, state: CheckpointState | PackedCheckpoint, _before_rename: Callable[[], None] | None = None
) -> Path:
    """Write ``state`` as ``<directory>/step-NNNNNNNN`` atomically and return its path.

    Raises :class:`TrainingError` when the disk is full (the temporary folder is removed and
    earlier checkpoints are untouched) and :class:`CheckpointError` on other I/O errors.
    """
    directory = Path(directory)
    final = directory / f"step-{state.step:08d}"
    tmp = directory / f".tmp-{final.name}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        packed = state if isinstance(state, PackedCheckpoint) else pack(state)
        meta = {**packed.meta, "format": FORMAT_VERSION, "step": packed.step, "state": packed.skeleton}
        files = {
            "state.safetensors": save_safetensors(packed.buffers, metadata={"step": str(packed.step)}),
            "trainer.json": json.dumps(meta, sort_keys=True).encode(),  # compact: the C encoder is fast
        }
        for name, data in files.items():
            _write_file(tmp / name, data)
        checksums = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
        marker = {"format": FORMAT_VERSION, "step": state.step, "files": checksums, "config_hash": state.meta.get("config_hash")}
        _write_file(tmp / MARKER, json.dumps(marker, indent=1, sort_keys=True).encode())
        _fsync_dir(tmp)
        if _before_rename is not None:
            _before_rename()
        if final.exists():  # e.g. a damaged checkpoint of the same step that resume skipped
            _remove_tree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_complete_name(directory)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        if exc.errno in _DISK_FULL:
            raise TrainingError(
                f"disk full while writing checkpoint {final}; {kept}. Free disk space (or lower "
                "train.checkpoint.keep_last), then resume with --resume auto."
            ) from None
        raise CheckpointError(f"cannot write checkpoint {final}: {exc}; {kept}.") from None
    return final


def _remove_tree(path: Path) -> None:
    """Rename to ``.deleting-*`` first (atomic), then delete: never a half-deleted checkpoint."""
    trash = path.with_name(f".deleting-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def apply_retention(directory: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns the deleted paths.

    Incomplete or damaged folders are not counted and not touched here.
    """
    doomed = [p for p in list_checkpoints(directory) if (p / MARKER).is_file()][:-keep_last]
    for path in doomed:
        _remove_tree(path)
        logger.debug("retention: deleted %s", path)
    return doomed


def clean_stale(directory: str | Path) -> list[Path]:
    """Remove temporary and half-deleted folders that a killed run left behind."""
    directory = Path(directory)
    stale = (".tmp-step-", ".deleting-step-")
    removed = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(stale)] if directory.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# ----------------------------------------------------------------------------- reading

def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint folders (named step-NNNNNNNN), oldest first. Complete or not."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name))  # 8 digits: name order = step order


def latest_complete_name(directory: str | Path) -> str | None:
    complete = [p for p in list_checkpoints(directory) if (p / MARKER).is_file()]
    return complete[-1].name if complete else None


def verify_checkpoint(path: str | Path) -> list[str]:
    """Problems with a checkpoint folder (empty list = complete and every checksum matches)."""
    path = Path(path)
    marker_path = path / MARKER
    if not path.is_dir():
        return [f"{path}: no such checkpoint folder"]
    if not marker_path.is_file():
        return [f"{path.name}: no {MARKER} (the write did not finish)"]
    try:
        marker = json.loads(marker_path.read_text())
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{path.name}: unreadable {MARKER} ({exc})"]
    problems = []
    for name, info in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{path.name}/{name}: missing")
            continue
        data = file.read_bytes()
        if len(data) != info.get("bytes"):
            problems.append(f"{path.name}/{name}: {len(data)} bytes, expected {info.get('bytes')}")
        elif hashlib.sha256(data).hexdigest() != info.get("sha256"):
            problems.append(f"{path.name}/{name}: checksum mismatch")
    return problems


def read_checkpoint(path: str | Path) -> CheckpointState:
    """Verify and load one checkpoint. Raises :class:`CheckpointError` if it is incomplete or damaged."""
    path = Path(path)
    problems = verify_checkpoint(path)
    if problems:
        raise CheckpointError("; ".join(problems))
    try:
        meta = json.loads((path / "trainer.json").read_text())
        buffers = load_safetensors((path / "state.safetensors").read_bytes())
        content = unflatten_state(meta.pop("state"), buffers)
    except Exception as exc:  # checksums matched, so this is a format problem (other furlora version)
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')} is not {FORMAT_VERSION}")
    return CheckpointState(
        step=int(meta["step"]), lora=content["lora"], training=content["training"], meta=meta, ema=content["ema"], path=path
    )


def find_resumable(directory: str | Path) -> tuple[CheckpointState | None, list[str]]:
    """The newest checkpoint that verifies, and a description of each newer one that was skipped."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, skipped


# ----------------------------------------------------------------------------- async writer

def _lower_thread_priority() -> None:
    """Let the training thread win the CPU on a busy machine (Linux: per-thread nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # other platforms, or not permitted: harmless
        pass


class CheckpointWriter:
    """Writes checkpoints in a writer thread and applies retention (``asynchronous=False``: ``save`` waits for the write).

    API (the trainer's, and what a signal handler's "save now" uses):

    * :meth:`save` (state): start the background copy and write, return. Until the copy is done
      the state's tensors must not change: call :meth:`before_update` before anything modifies
      them (the optimizer step, the EMA update). At most one write is in flight: if the previous
      one is not done, ``save`` waits for it first (logged).
    * :meth:`before_update`: block until the copy of the last ``save`` is done (normally long
      done: it overlaps the next forward and backward passes).
    * :meth:`wait`: block until the write in flight is on disk; raise its error, if any.
      ``save(state)`` then ``wait()`` = a synchronous checkpoint (e.g. before exiting on SIGTERM).
    * :meth:`poll`: raise the error of a finished background write now, without blocking (the
      trainer calls it every step, so a full disk stops training at once).
    * ``in_flight``, ``last_written`` (path), ``last_blocked_seconds`` (training-thread time of
      the last ``save`` plus its ``before_update`` wait).

    A failed write leaves the previous complete checkpoint untouched (see :func:`write_checkpoint`).
    """

    def __init__(self, directory: str | Path, keep_last: int, asynchronous: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.asynchronous = asynchronous
        self._thread: threading.Thread | None = None
        self._writing_step: int | None = None
        self._error: BaseException | None = None
        self._staging = StagingBuffers()
        self._copied: threading.Event | None = None
        self.last_written: Path | None = None
        self.last_blocked_seconds = 0.0
        self.before_rename: Callable[[], None] | None = None  # test hook: runs inside the write

    @property
    def in_flight(self) -> bool:
        """A background write has started and not finished."""
        return self._thread is not None and self._thread.is_alive()

    def save(self, state: CheckpointState) -> None:
        """Start the writer thread: it copies ``state`` (:func:`pack`), then writes it. Not asynchronous: wait for it."""
        started = time.perf_counter()
        if self.in_flight:
            logger.info(
                "checkpoint of step %d waits for the write of step %s to finish (writes are slower than "
                "train.checkpoint.every_n_steps steps)", state.step, self._writing_step,
            )
        self.wait()
        self._writing_step = state.step
        self._copied = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(state, self._copied), name="furlora-checkpoint", daemon=True)
        self._thread.start()
        if not self.asynchronous:
            self.wait()
        self.last_blocked_seconds = time.perf_counter() - started

    def before_update(self) -> None:
        """Block until the last :meth:`save`'s copy of the state is done (call before changing the state)."""
        if self._copied is not None:
            started = time.perf_counter()
            self._copied.wait()
            self._copied = None
            self.last_blocked_seconds += time.perf_counter() - started

    def _write(self, state: CheckpointState, copied: threading.Event) -> None:
        """The writer thread: copy ``state`` (then ``copied`` is set), write it, apply retention."""
        try:
            try:
                packed = pack(state, self._staging)
            finally:
                copied.set()
            _lower_thread_priority()
            self._staging.ready()
            path = write_checkpoint(self.directory, packed, self.before_rename)
            apply_retention(self.directory, self.keep_last)
            self.last_written = path
            logger.debug("checkpoint %s written", path)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread
            self._error = exc

    def poll(self) -> None:
        """Raise the error of a background write that has finished, without waiting for one in flight."""
        if self.in_flight:
            self._raise_pending()
        else:
            self.wait()

    def wait(self) -> None:
        """Block until the pending write finished; raise its error, if any."""
        self._copied = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, (TrainingError, CheckpointError)):
                raise error
            raise CheckpointError(f"writing a checkpoint in {self.directory} failed: {error}") from error
