"""Observability of a run: the progress bar (lines when not on a terminal), TensorBoard scalars through accelerate, memory."""

from __future__ import annotations

import logging
import math
import resource
import sys
from typing import Any

import torch

logger = logging.getLogger(__name__)


def memory_mib(device: torch.device) -> float:
    """Peak memory in MiB: allocated accelerator memory, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def hparams(config: dict[str, Any]) -> dict[str, Any]:
    """A flat dict of scalars/strings for TensorBoard's hparams (it accepts nothing else)."""
    from furlora.train.resume import flatten

    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flatten(config).items()}


class RunTracker:
    """Logs step metrics to the accelerate trackers and a progress bar; main process only."""

    def __init__(self, accelerator: Any, total_steps: int, initial_step: int, every_n_steps: int, progress_bar: bool,
                 enabled_trackers: bool, run_name: str, config: dict[str, Any]) -> None:
        from furlora.progress import progress_bar

        self.accelerator = accelerator
        self.every = every_n_steps
        self.trackers = enabled_trackers
        self.is_main = accelerator.is_main_process
        if self.trackers:
            accelerator.init_trackers(run_name, config=hparams(config))
        # A live bar on a terminal; whole lines at an interval in a log file or CI (furlora.progress).
        self.bar = progress_bar(total_steps, "train", "step", initial=initial_step, disable=not (progress_bar and self.is_main))
        self._smoothed: float | None = None

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """Record the metrics of optimizer step ``step`` (1-based count of finished steps)."""
        loss = metrics.get("loss")
        if loss is not None and math.isfinite(loss):
            self._smoothed = loss if self._smoothed is None else 0.9 * self._smoothed + 0.1 * loss
        self.bar.update(1)
        if self._smoothed is not None:
            self.bar.set_postfix(loss=f"{self._smoothed:.4f}", lr=f"{metrics.get('lr', 0.0):.2e}", refresh=False)
        if self.trackers and step % self.every == 0:
            self.accelerator.log(metrics, step=step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics outside the step cadence (validation)."""
        if self.trackers:
            self.accelerator.log(metrics, step=step)
        if self.is_main:
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))

    def close(self) -> None:
        self.bar.close()
        if self.trackers:
            self.accelerator.end_training()
