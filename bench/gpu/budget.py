"""The check's own time budget: each preset gets a fair share of what is left, and a preset whose
steps would overrun its share stops early (its remaining steps are reported as trimmed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    """``total_seconds`` None = unlimited (the CPU smoke run)."""

    total_seconds: float | None
    reserve_seconds: float = 0.0
    """Held back for the comparison and the LoRA check until they have run."""
    started: float = field(default_factory=time.perf_counter)
    skipped: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        if self.total_seconds is None:
            return float("inf")
        return self.total_seconds - self.elapsed() - self.reserve_seconds

    def share(self, items_left: int) -> float:
        """Seconds the next of ``items_left`` presets may take."""
        return self.left() / max(1, items_left)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")


@dataclass
class StepGovernor:
    """Decides after each optimizer step whether the preset must stop to stay within ``allowed``.

    ``tail_seconds``: expected time after the last step (final checkpoint, validation, export).
    Never stops before ``min_steps`` steps, so s/step always has measured steps after warm-up.
    """

    allowed: float
    min_steps: int
    tail_seconds: float
    started: float = field(default_factory=time.perf_counter)

    def should_stop(self, steps_done: int, steps_total: int, last_step_seconds: float) -> bool:
        if steps_done < self.min_steps or steps_done >= steps_total:
            return False
        spent = time.perf_counter() - self.started
        projected = spent + (steps_total - steps_done) * last_step_seconds + self.tail_seconds
        return projected > self.allowed
