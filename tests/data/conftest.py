"""Fixtures of the data tests (helpers live in data_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
from data_helpers import Maker, settings  # noqa: E402


@pytest.fixture
def maker(tmp_path: Path) -> Maker:
    return Maker(tmp_path / "ds")


@pytest.fixture
def make_settings():
    return settings
