"""Optimizers: torch AdamW or bitsandbytes 8-bit AdamW, with per-component learning rates."""

from __future__ import annotations

import logging
from typing import Any

import torch

from furlora.errors import ConfigError
from furlora.train.settings import TrainSettings

logger = logging.getLogger(__name__)


def build_optimizer(groups: list[dict[str, Any]], settings: TrainSettings) -> torch.optim.Optimizer:
    """An optimizer over parameter groups (``{"params": [...], "lr": float | None, ...}``).

    A group's ``lr`` of None means the base ``train.learning_rate``. Extra keys (e.g. ``name``)
    are kept in the group, which helps logging per-component learning rates.
    """
    prepared = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            lr = settings.learning_rate if group.get("lr") is None else float(group["lr"])
            prepared.append({**group, "params": params, "lr": lr})
    if not prepared:
        raise ConfigError("nothing to train: the LoRA settings select no trainable parameters")
    kwargs = {
        "lr": settings.learning_rate,
        "betas": (settings.adam_beta1, settings.adam_beta2),
        "eps": settings.adam_epsilon,
        "weight_decay": settings.weight_decay,
    }
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(prepared, **kwargs)
    try:
        import bitsandbytes as bnb
    except ImportError as exc:  # pragma: no cover - bitsandbytes is a dependency
        raise ConfigError(
            f"train.optimizer 'adamw8bit' needs bitsandbytes ({exc}); pip install bitsandbytes, or use 'adamw'"
        ) from None
    return bnb.optim.AdamW8bit(prepared, **kwargs)
