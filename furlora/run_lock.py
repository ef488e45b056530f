"""One writer per run folder: an OS file lock on ``<output_dir>/.furlora-run.lock``.

The lock is ``flock`` on Linux and macOS (``msvcrt.locking`` on Windows): the operating system
drops it when the holding process ends, however it ends (exit, crash, SIGKILL, power loss), so a
lock left by a dead run is free again by construction and nobody has to delete files by hand.
The file itself only carries the holder's PID, host and start time, for the error message of a
second run; it is never deleted (deleting a lock file lets two processes lock two different
files of the same name).

A process holds each folder once: acquiring a folder this process already holds only counts up
(the demo holds its folder around training and the comparison that follows; a second
:class:`~furlora.train.trainer.Trainer` on the same folder in one notebook does not lock itself
out). In multi-process runs only the main process (rank 0) takes the lock; other ranks never
open the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from furlora.errors import ConfigError, RunLockedError

logger = logging.getLogger(__name__)

LOCK_NAME = ".furlora-run.lock"
#: Windows locks byte ranges; the lock byte lies far past the holder text so that stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20

_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


@dataclass
class _Held:
    fd: int
    count: int


def process_rank() -> int:
    """This process's rank from the launcher's environment (torchrun / accelerate: ``RANK``; else 0)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False if another process holds it."""
    if sys.platform == "win32":  # pragma: no cover - Linux is what the tests run
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8", "replace").split("\n", 1)[0] or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        # The program's name only (furlora, main.py, ...): enough to recognise the run, no full path.
        "command": " ".join([Path(sys.argv[0]).name or "python", *sys.argv[1:]]) if sys.argv else "python",
    }
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)


def describe_holder(holder: dict[str, Any]) -> str:
    """``PID 4711 on host gpu-3, started at 2026-12-01T02:50:28+00:00 (furlora train run.yaml)``."""
    if not holder.get("pid"):
        return "another process (it is starting up: its details are not written yet)"
    text = f"PID {holder['pid']} on host {holder.get('host', '?')}, started at {holder.get('started_at', '?')}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def acquire_run_lock(folder: str | Path) -> RunLock:
    """Lock ``folder`` for this process (creating the folder), or raise :class:`RunLockedError`.

    The error names the holder and what to do. Release with :meth:`RunLock.release` (or let the
    process end).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir {folder}: cannot create it ({exc})") from None
    key = folder.resolve()
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return RunLock(key)
        path = key / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"output_dir {folder}: cannot create the run lock {path.name} ({exc})") from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"output_dir {folder} is in use by another furlora run: {describe_holder(holder)}. "
                "Two runs in one folder would overwrite each other's checkpoints and files. Wait for that run "
                "to finish (or stop it; it saves a checkpoint on Ctrl-C / SIGTERM and this command then resumes "
                "it), or give this run another output_dir (--set output_dir=...)."
            )
        previous = _read_holder(fd)
        if previous.get("pid"):
            # The file still names a holder but nobody holds the lock: that run ended without
            # releasing it (killed, crashed). Its lock died with it.
            logger.info("run lock: the previous run (%s) ended without releasing it; taking it over", describe_holder(previous))
        _write_holder(fd)
        _held[key] = _Held(fd=fd, count=1)
    return RunLock(key)


class RunLock:
    """This process's hold on a run folder (see :func:`acquire_run_lock`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._released = False

    def release(self) -> None:
        """Give up this hold (idempotent); the folder is unlocked when the last hold is released."""
        if self._released:
            return
        self._released = True
        with _held_guard:
            held = _held.get(self.folder)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _held[self.folder]
            try:
                os.ftruncate(held.fd, 0)  # an empty file: nobody holds it (a dead holder's text stays)
                _unlock(held.fd)
            finally:
                os.close(held.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def hold_run_folder(folder: str | Path, *, main_process: bool | None = None) -> Iterator[RunLock | None]:
    """Hold the run lock of ``folder`` for the ``with`` block (main process only: other ranks get None).

    ``main_process`` defaults to the launcher's ``RANK`` being 0.
    """
    if main_process is None:
        main_process = process_rank() == 0
    if not main_process:
        yield None
        return
    with acquire_run_lock(folder) as lock:
        yield lock
