"""Fresh tiny SDXL text encoders and tokenizers for each test (adding tokens mutates them)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


def load_text_parts(folder: Path) -> SimpleNamespace:
    """Both tiny encoders (frozen, eval mode, fp32 from the fp16 files) and both tokenizers of a
    diffusers SDXL folder."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    fp32 = {"variant": "fp16", "dtype": torch.float32}
    te1 = CLIPTextModel.from_pretrained(folder / "text_encoder", **fp32).requires_grad_(False).eval()
    te2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **fp32).requires_grad_(False).eval()
    return SimpleNamespace(
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
    )


@pytest.fixture
def text_parts(tiny_sdxl: Path) -> SimpleNamespace:
    return load_text_parts(tiny_sdxl)


@pytest.fixture
def make_text_parts(tiny_sdxl: Path):
    """A factory of independent fresh text parts (several 'processes' in one test)."""
    return lambda: load_text_parts(tiny_sdxl)
