"""The base class of every typed settings section.

Each section lives beside the code that uses it (``furlora/data/settings.py`` ...);
``furlora.config`` composes them into one :class:`~furlora.config.RunConfig`.
Unknown keys are rejected (``extra="forbid"``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """A strict, typed settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
