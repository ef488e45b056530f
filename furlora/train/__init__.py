"""Training: the objectives, the loop, and crash-safe exact-resume checkpoints.

One job per module (imports point one way: settings <- loss/noise/rng <- step <- trainer):

- ``settings``: the ``train:`` section (objective, loss options, memory features, schedules ...).
- ``loss``: masked diffusion loss math (region weights, floor, area normalisation, min-SNR,
  detail term, prior preservation), pure tensor functions.
- ``rng`` / ``noise``: random draws seeded by (seed, global step, rank): exact resume by construction.
- ``encode``: VAE / text encoding with in-memory caches. ``step``: one forward pass of the base
  4-channel masked objective or the 9-channel inpainting objective.
- ``checkpoint`` / ``state_io`` / ``resume``: atomic step checkpoints, retention, choosing and
  checking the checkpoint to resume from.
- ``stream``: the resumable batch order. ``schedule``: LR and resolution schedules. ``optim``,
  ``ema``, ``guard`` (NaN/Inf), ``distributed``, ``validation``, ``samples``, ``tracking``, ``export``.
- ``setup``: checks before weights load, model / LoRA / accelerator set-up. ``trainer``: the loop.

``from furlora.train import Trainer`` is imported lazily (this package stays light to import).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Trainer"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from furlora.train.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'furlora.train' has no attribute {name!r}")
