"""Settings of the ``data:`` section (the dataset issue extends this)."""

from __future__ import annotations

from pydantic import Field

from furlora.settings_base import Settings


class DataSettings(Settings):
    """Where the training data is and how samples are made."""

    path: str = Field("datasets/spitz-fur/train", description="Dataset folder.")
    resolution: int = Field(256, ge=64, description="Training resolution in pixels (multiple of 64).")
