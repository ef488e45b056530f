"""Stopping a run early and cleanly: on SIGTERM / Ctrl-C, or before its time budget runs out.

The first SIGTERM or SIGINT only raises a flag: the current optimizer step finishes, the trainer
writes a checkpoint through the normal atomic path and returns, and the command exits with
143 / 130 (128 + the signal), the status schedulers and shells expect. A second signal after the
first exits at once (the atomic checkpoint write leaves either the previous checkpoint or a
complete new one, never a half-written one). A repeat arriving within
:data:`REPEAT_WINDOW_S` of the first is taken as the same request: launchers such as torchrun
forward to their workers the signal the whole process group already received.

``train.max_wall_time``: the main process keeps the clock and stops when the time left could not
hold two more loop iterations (the longest seen so far), the checkpoint write (the longest
measured, :data:`UNMEASURED_CHECKPOINT_S` before the first) and a small margin.

With several processes every rank must stop after the same step: the local votes ride along in
the all-reduce that already averages the step's loss (:meth:`StopControl.exchange_loss`), so
stopping costs no extra collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

#: Exit status of a run stopped by its time budget: EX_TEMPFAIL ("try again later"), so a job
#: script can tell "resubmit me" from success (0) and from errors (1, 2).
TIME_BUDGET_EXIT = 75
#: A repeated signal this soon after the first one is a launcher forwarding the same request.
REPEAT_WINDOW_S = 1.5
#: Assumed checkpoint write time until one has been measured.
UNMEASURED_CHECKPOINT_S = 30.0


def format_duration(seconds: float) -> str:
    """``13800`` -> ``3h50m00s``; ``95.2`` -> ``1m35s``; ``4.25`` -> ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class StopDecision:
    """Why a run stops before ``train.max_steps``: ``reason`` is "signal" or "time_budget"."""

    reason: str
    signal_name: str | None = None

    @property
    def exit_status(self) -> int:
        if self.reason == "time_budget":
            return TIME_BUDGET_EXIT
        return 128 + int(getattr(signal, self.signal_name or "SIGTERM"))


class StopControl:
    """Signal handlers and the time budget of one training loop.

    ``started``: ``time.monotonic()`` at the start of the run (the budget counts from there).
    ``keeps_clock``: whether this process votes on the time budget (the main process).
    """

    def __init__(self, max_wall_time: float | None, started: float, *, world: int = 1, device: Any = None,
                 keeps_clock: bool = True) -> None:
        self.max_wall_time = max_wall_time
        self.started = started
        self.world = world
        self.device = device
        self.keeps_clock = keeps_clock
        self.signal_name: str | None = None
        self._signal_at = 0.0
        self._stopping = False
        self._saved = False
        self._previous: dict[int, Any] = {}
        self._agreed: StopDecision | None = None
        self.longest_iteration = 0.0
        self.longest_checkpoint: float | None = None

    # ------------------------------------------------------------------ signals
    def install(self) -> None:
        """Catch SIGTERM and SIGINT until :meth:`uninstall` (main thread only; elsewhere: no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._on_signal)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _on_signal(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        now = time.monotonic()
        # os.write, not print/logging: a handler may run in the middle of another write to stderr.
        if self._saved:
            return  # the checkpoint is complete and the run is returning: nothing left to interrupt
        if self.signal_name is None:
            self.signal_name, self._signal_at = name, now
            doing = ("already stopping, the checkpoint is being written" if self._stopping
                     else "finishing the current step, then writing a checkpoint")
            _say(f"furlora: {name} received: {doing} (send {name} again to exit at once without it)\n")
            return
        if now - self._signal_at < REPEAT_WINDOW_S:
            return  # the same request, forwarded by a launcher
        _say(f"furlora: second {name}: exiting now without a new checkpoint "
             "(the last complete checkpoint is intact; a half-written one is removed on resume)\n")
        os._exit(128 + number)

    def saving(self) -> None:
        """The stop is decided and the checkpoint is being written."""
        self._stopping = True

    def saved(self) -> None:
        """The stop checkpoint is complete: later signals are ignored until :meth:`uninstall`."""
        self._saved = True

    # ------------------------------------------------------------------ time budget
    def record_iteration(self, seconds: float) -> None:
        self.longest_iteration = max(self.longest_iteration, seconds)

    def record_checkpoint(self, seconds: float) -> None:
        self.longest_checkpoint = max(self.longest_checkpoint or 0.0, seconds)

    @property
    def needs_checkpoint_timing(self) -> bool:
        """True until a checkpoint write has been timed (only matters with a time budget)."""
        return self.max_wall_time is not None and self.keeps_clock and self.longest_checkpoint is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _out_of_time(self) -> bool:
        if self.max_wall_time is None or not self.keeps_clock:
            return False
        checkpoint = self.longest_checkpoint if self.longest_checkpoint is not None else UNMEASURED_CHECKPOINT_S
        margin = min(60.0, 0.02 * self.max_wall_time)
        return self.elapsed() + 2 * self.longest_iteration + checkpoint + margin > self.max_wall_time

    # ------------------------------------------------------------------ agreement
    def _votes(self) -> list[float]:
        return [
            float(self.signal_name == "SIGTERM"),
            float(self.signal_name is not None and self.signal_name != "SIGTERM"),
            float(self._out_of_time()),
        ]

    @staticmethod
    def _decide(votes: list[float]) -> StopDecision | None:
        term, other, budget = votes
        if term > 0:
            return StopDecision("signal", "SIGTERM")
        if other > 0:
            return StopDecision("signal", "SIGINT")
        if budget > 0:
            return StopDecision("time_budget")
        return None

    def exchange_loss(self, local_loss: float) -> float:
        """The step's loss averaged over the processes; the stop votes travel in the same all-reduce."""
        if self.world == 1:
            return local_loss
        from furlora.train.distributed import sum_over_processes

        reduced = sum_over_processes([local_loss, *self._votes()], self.device)
        self._agreed = self._decide(reduced[1:])
        return reduced[0] / self.world

    def decision(self) -> StopDecision | None:
        """Whether to stop after the step just finished; the same answer on every process."""
        if self.world == 1:
            return self._decide(self._votes())
        return self._agreed


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode())
