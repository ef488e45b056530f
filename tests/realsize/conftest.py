"""The real-size tier: random-weight SDXL at its real size (furlora.models.realsize), slow tests only.

The folders are built once into the persistent cache ($FURLORA_CACHE or ~/.cache/furlora;
about 6.5 GB each, two minutes), not into the session's temporary cache, so later runs reuse
them. Run with ``--run-slow``; see README "Slow tests".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from realsize_helpers import PERSISTENT_CACHE


@pytest.fixture(scope="session")
def realsize_inpaint() -> Path:
    """The 9-channel real-size SDXL inpainting folder (diffusers format, fp16 variant files)."""
    from furlora.models.realsize import ensure_realsize_model

    return ensure_realsize_model("realsize-sdxl-inpaint", PERSISTENT_CACHE)
