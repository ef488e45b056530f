"""The documented public API: every name in ``furlora.__all__`` resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import furlora


def test_every_public_name_resolves():
    assert "Trainer" in furlora.__all__ and "MaskedDataset" in furlora.__all__
    for name in furlora.__all__:
        assert getattr(furlora, name) is not None, name
    assert furlora.Trainer.__name__ == "Trainer"
    assert furlora.LoraHookManager.__module__ == "furlora.lora.hooks"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'furlora' has no attribute 'Trainr'"):
        furlora.Trainr  # noqa: B018


def test_import_and_config_validation_do_not_import_torch():
    code = (
        "import sys, furlora; from furlora.config import load_config; load_config(None); "
        "print(sorted(m for m in ('torch', 'diffusers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
