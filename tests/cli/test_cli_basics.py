"""The CLI skeleton: help, version, config validate, models; errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from furlora import __version__
from furlora.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("config", "models"):
        assert command in out


def test_config_validate_reports_problems_without_traceback(tmp_path, capsys):
    file = tmp_path / "c.yaml"
    file.write_text("seed: nope\nmodel:\n  dtyp: fp16\n")
    assert main(["config", "validate", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("furlora: error: invalid config")
    assert "model.dtyp: unknown key; did you mean 'dtype'" in err
    assert "Traceback" not in err


def test_config_validate_ok(tmp_path, capsys):
    file = tmp_path / "c.yaml"
    file.write_text("seed: 3\n")
    assert main(["config", "validate", str(file), "--set", "model.dtype=fp16"]) == 0
    assert "valid" in capsys.readouterr().out


def test_models_lists_tiny_models_and_layout(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-sdxl-inpaint" in out
    assert "text_encoder_2/config.json" in out


def test_models_check(tiny_sdxl_inpaint, tmp_path, capsys):
    assert main(["models", "--check", str(tiny_sdxl_inpaint)]) == 0
    assert "SDXL inpainting" in capsys.readouterr().out
    assert main(["models", "--check", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_debug_shows_traceback(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("seed: nope\n")
    cmd = [sys.executable, "-m", "furlora.cli.main", "--debug", "config", "validate", str(file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "ConfigError" in proc.stderr
