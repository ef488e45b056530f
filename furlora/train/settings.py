"""Settings of the ``train:`` section (the trainer issue extends this)."""

from __future__ import annotations

from pydantic import Field

from furlora.settings_base import Settings


class TrainSettings(Settings):
    """Optimisation and checkpointing."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps to train.")
    learning_rate: float = Field(1e-4, gt=0, description="Base learning rate.")
    batch_size: int = Field(1, ge=1, description="Samples per micro-batch.")
