"""Learning-rate schedules (warmup then constant / linear / cosine) and the resolution schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch


def lr_factor(step: int, kind: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warmup rises linearly to 1 over ``warmup_steps`` steps (step 0 gets 1 / warmup_steps, so
    the first update is not wasted); then 'constant' stays 1, 'linear' falls to 0 at
    ``total_steps``, 'cosine' follows half a cosine to 0 at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_scheduler {kind!r} (constant, linear or cosine)")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int) -> Any:
    """A ``LambdaLR`` over :func:`lr_factor`; its ``state_dict`` (step count) goes into checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, kind=kind, warmup_steps=warmup_steps, total_steps=total_steps)
    )


def resolution_at(step: int, schedule: Sequence[Any], default: int) -> tuple[int, int]:
    """(phase index, resolution) in force at optimizer step ``step``; ``(0, default)`` without a schedule.

    ``schedule`` entries have ``.step`` and ``.resolution`` (sorted by step, first at 0).
    """
    phase, resolution = 0, default
    for i, entry in enumerate(schedule):
        if step >= entry.step:
            phase, resolution = i, entry.resolution
    return phase, resolution
