"""Shared test set-up: offline, single-threaded torch, tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Parallel test workers on a 2-core machine collapse if each uses every core.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory shared by the whole session (per xdist worker)."""
    path = tmp_path_factory.getbasetemp().parent / "furlora-cache"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["FURLORA_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_sdxl(model_cache: Path) -> Path:
    """Folder of the embedded 4-channel tiny SDXL model (diffusers format)."""
    from furlora.models.tiny import ensure_tiny_model

    return ensure_tiny_model("tiny-sdxl", model_cache)


@pytest.fixture(scope="session")
def tiny_sdxl_inpaint(model_cache: Path) -> Path:
    """Folder of the embedded 9-channel tiny SDXL inpainting model (diffusers format)."""
    from furlora.models.tiny import ensure_tiny_model

    return ensure_tiny_model("tiny-sdxl-inpaint", model_cache)
