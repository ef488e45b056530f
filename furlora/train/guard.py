"""The NaN/Inf guard: skip non-finite updates, count them, stop after K in a row."""

from __future__ import annotations

import math

from furlora.errors import TrainingError


class NonFiniteGuard:
    """Counts optimizer steps skipped because the loss or a gradient was NaN/Inf.

    :meth:`record` returns True when the step may update the weights. After ``patience``
    skipped steps in a row, :meth:`check` raises :class:`TrainingError` (the caller names the
    last good checkpoint).
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.consecutive = 0
        self.total = 0

    def record(self, loss: float, grads_ok: bool) -> bool:
        ok = math.isfinite(loss) and grads_ok
        if ok:
            self.consecutive = 0
        else:
            self.consecutive += 1
            self.total += 1
        return ok

    def check(self, step: int, last_good: str | None) -> None:
        if self.consecutive >= self.patience:
            where = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was written yet"
            raise TrainingError(
                f"training stopped at step {step}: {self.consecutive} steps in a row had a non-finite loss or "
                f"gradient (NaN/Inf), {self.total} skipped in total; {where}. Lower train.learning_rate, set "
                "train.max_grad_norm, use mixed_precision bf16 instead of fp16, or check the data; then resume "
                "with --resume auto."
            )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive = int(state["consecutive"])
        self.total = int(state["total"])
