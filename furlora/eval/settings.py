"""Settings of the ``eval:`` section (the evaluation issue extends this)."""

from __future__ import annotations

from pydantic import Field

from furlora.settings_base import Settings


class EvalSettings(Settings):
    """Validation and comparison."""

    every_n_steps: int = Field(0, ge=0, description="Validate every N steps (0 = only at the end).")
