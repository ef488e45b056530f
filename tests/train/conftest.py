"""Fixtures of the trainer tests: the tiny models, loaded once per session (read-only: no LoRA on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def inpaint_components(tiny_sdxl_inpaint: Path) -> Any:
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl_inpaint)


@pytest.fixture(scope="session")
def base_components(tiny_sdxl: Path) -> Any:
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl)
