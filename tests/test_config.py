"""Typed run config: validation errors name key paths, suggest names, and come all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from furlora.config import RunConfig, apply_override, load_config, validate_config
from furlora.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_valid():
    config = load_config(None)
    assert isinstance(config, RunConfig)
    assert config.model.source == "tiny-sdxl-inpaint"


def test_unknown_key_suggests_the_closest_name(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("model:\n  sorce: tiny-sdxl\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    msg = str(info.value)
    assert str(file) in msg
    assert "model.sorce: unknown key" in msg
    assert "did you mean 'source'" in msg


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match=r"trian: unknown key; did you mean 'train'"):
        validate_config({"trian": {}})


def test_wrong_type_says_what_was_expected():
    with pytest.raises(ConfigError) as info:
        validate_config({"seed": "forty-two"})
    assert "seed: Input should be a valid integer" in str(info.value)
    assert "'forty-two'" in str(info.value)


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as info:
        validate_config({"seed": "x", "model": {"dtype": "fp8", "colour": 1}, "bogus": 1})
    msg = str(info.value)
    assert "4 problems" in msg
    for fragment in ("seed:", "model.dtype:", "model.colour: unknown key", "bogus: unknown key"):
        assert fragment in msg


def test_set_overrides_parse_yaml_values(tmp_path):
    config = load_config(None, ["seed=7", "model.dtype=bf16", "name=my run"])
    assert config.seed == 7
    assert config.model.dtype == "bf16"
    assert config.name == "my run"


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "seed")


def test_override_into_scalar_is_an_error():
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        apply_override({"seed": 1}, "seed.x=2")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_fingerprint_changes_with_settings():
    a = load_config(None)
    b = load_config(None, ["seed=1"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint(("model",)) == b.fingerprint(("model",))


def test_every_shipped_config_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files, "configs/ must ship at least one YAML config"
    for file in files:
        load_config(file)
