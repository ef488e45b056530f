"""Fixtures of the LoRA tests: fresh tiny SDXL components and the real SDXL tree on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture()
def tiny(tiny_sdxl: Path):
    """Freshly loaded tiny SDXL components (each test may hook them)."""
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl)


@pytest.fixture(scope="session")
def real_sdxl() -> dict[str, torch.nn.Module]:
    """The real SDXL UNet and text encoders on the meta device, shared: select only, never hook these."""
    from furlora.models.architecture import build_real_sdxl

    return {name: build_real_sdxl(name) for name in ("unet", "text_encoder", "text_encoder_2")}
