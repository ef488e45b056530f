"""Settings of the ``lora:`` section (the hook-manager issue extends this)."""

from __future__ import annotations

from pydantic import Field

from furlora.settings_base import Settings


class LoraSettings(Settings):
    """Which modules get LoRA, with which rank and alpha."""

    rank: int = Field(4, ge=1, description="LoRA rank.")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
