"""Training: the objectives, the loop, and crash-safe exact-resume checkpoints.

One job per module (imports point one way: settings <- loss/noise/rng <- step <- trainer):

- ``settings``: the ``train:`` section (objective, loss options, memory features, schedules ...).
- ``loss``: masked diffusion loss math (weight maps of both objectives, floor, area
  normalisation, min-SNR, detail term, prior preservation), pure tensor functions.
  ``loss_log``: per-region errors and the hole's share of loss weight, summed on the device
  and read at logging steps.
- ``rng`` / ``noise``: random draws seeded by (seed, global step, rank): exact resume by construction.
- ``encode``: VAE / text encoding with in-memory caches. ``step``: one forward pass of the base
  4-channel masked objective or the 9-channel inpainting objective.
- ``checkpoint`` / ``state_io`` / ``resume``: atomic step checkpoints, retention, choosing and
  checking the checkpoint to resume from.
- ``stream``: the resumable batch order. ``schedule``: LR and resolution schedules. ``optim``,
  ``ema``, ``guard`` (NaN/Inf), ``distributed``, ``validation`` (the loss), ``sample_grid`` (images), ``tracking``, ``export``.
- ``setup``: checks before weights load, then ``setup_run`` builds the run's fixed parts (``Run``). ``trainer``: the loop.

- ``state``: TrainState (the checkpointed counters) and RunSummary (what ``fit`` returns).

The names below are imported lazily (this package stays light to import).
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {
    "Trainer": "furlora.train.trainer",
    "TrainState": "furlora.train.state",
    "RunSummary": "furlora.train.state",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("furlora.train", _EXPORTS)
