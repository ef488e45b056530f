"""Settings of the ``tokens:`` section: learned placeholder tokens (textual inversion / pivotal tuning)."""

from __future__ import annotations

from pydantic import Field

from furlora.settings_base import Settings


class TokenSettings(Settings):
    """New tokens trained in both SDXL text encoders (empty = no textual inversion)."""

    enabled: bool = Field(False, description="Train placeholder token embeddings.")
