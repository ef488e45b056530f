"""The typed state of a training run: what a checkpoint carries, and what a run reports.

- :class:`TrainState`: the trainer's counters (step, resolution phase, training time,
  validation history). :meth:`TrainState.checkpoint_meta` is what a checkpoint stores of them and
  :meth:`TrainState.restore` is what a resume reads back, so the two cannot drift apart.
- :class:`RunSummary`: the result of :meth:`furlora.train.trainer.Trainer.fit`, written as
  ``train_summary.json`` (:meth:`RunSummary.to_dict`). It also reads like that JSON
  (``summary["val_loss"]``, ``summary.get("lora_files")``), so code written against the file
  works on the object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: One entry of the validation history: ``step``, ``val_loss`` and, for the final one, ``val_loss_base``.
Validation = dict[str, float | None]


@dataclass
class TrainState:
    """Where a run stands; checkpointed after whole optimizer steps."""

    global_step: int = 0
    """Optimizer steps done (skipped non-finite steps included)."""
    phase: int | None = None
    """Index of the current ``train.resolution_schedule`` phase (None before the first step)."""
    resolution: int = 0
    """Training resolution of the current phase, in pixels."""
    train_seconds: float = 0.0
    """Wall time of the training loop over every run of this training (resumes included)."""
    validations: list[Validation] = field(default_factory=list)

    def checkpoint_meta(self) -> dict[str, Any]:
        """The counters a checkpoint stores (JSON). The stream position (and its phase) is saved
        by the batch stream; ``train_seconds`` is passed in by the caller when the loop is running."""
        return {"global_step": self.global_step, "validations": self.validations, "train_seconds": self.train_seconds}

    def restore(self, meta: Mapping[str, Any]) -> None:
        """Read back what :meth:`checkpoint_meta` stored (older checkpoints may lack the history)."""
        self.global_step = int(meta["global_step"])
        self.validations = list(meta.get("validations", []))
        self.train_seconds = float(meta.get("train_seconds", 0.0))


@dataclass(frozen=True)
class RunSummary(Mapping[str, Any]):
    """What a training run did; ``train_summary.json`` holds :meth:`to_dict`."""

    name: str
    global_step: int
    max_steps: int
    objective: str
    """``inpaint`` (9-channel) or ``masked`` (base UNet)."""
    prediction_type: str
    resumed_from: str | None
    skipped_steps: int
    final_loss: float | None
    val_loss: float | None
    val_loss_base: float | None
    validations: list[Validation]
    """Every validation of the training (resumes included), in step order."""
    train_seconds: float
    """Wall time of the training loop over every run of this training."""
    seconds_per_step_this_run: float | None
    """Of this process's run only (None when it did no step)."""
    trainable_parameters: int
    processes: int
    checkpoint: str | None
    """Name of the newest complete checkpoint in ``checkpoint_dir``."""
    lora_files: dict[str, str]
    """Format (diffusers, kohya, ...) -> exported LoRA file; empty when the run stopped early."""
    checkpoint_dir: str
    embedding_files: dict[str, str]
    """Learned-token concept -> exported embedding file."""
    tokens: list[str]
    config_hash: str
    ended: str = "completed"
    """How the run ended: ``completed`` (max_steps reached, exported), ``signal`` (SIGTERM /
    Ctrl-C) or ``time_budget`` (train.max_wall_time); the last two checkpoint and do not export."""
    stop_signal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the content of ``train_summary.json``)."""
        return asdict(self)

    # Read access by key, as in train_summary.json.
    def __getitem__(self, key: str) -> Any:
        if key not in _SUMMARY_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_SUMMARY_KEYS)

    def __len__(self) -> int:
        return len(_SUMMARY_KEYS)


_SUMMARY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunSummary))
