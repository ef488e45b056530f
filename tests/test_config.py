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


def test_every_shipped_config_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files, "configs/ must ship at least one YAML config"
    for file in files:
        load_config(file)


def test_frozen_half_weights_without_autocast_are_rejected_naming_both_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.dtype=bf16", "train.mixed_precision=no"])
    msg = str(info.value)
    assert "model.dtype: bf16 with train.mixed_precision: no cannot train" in msg
    assert "set train.mixed_precision: bf16" in msg and "or model.dtype: fp32" in msg
    with pytest.raises(ConfigError, match="model.dtype: fp16 with train.mixed_precision: no"):
        validate_config({"model": {"dtype": "fp16"}, "train": {"mixed_precision": "no"}})


def test_unset_mixed_precision_follows_half_model_weights():
    assert load_config(None, ["model.dtype=bf16"]).train.mixed_precision == "bf16"
    assert load_config(None, ["model.dtype=fp16"]).train.mixed_precision == "fp16"
    assert load_config(None, ["model.dtype=fp32"]).train.mixed_precision == "no"
    assert load_config(None, ["model.dtype=bf16", "train.mixed_precision=fp16"]).train.mixed_precision == "fp16"


@pytest.mark.parametrize("word", ["no", "No", "off"])
def test_yaml_boolean_words_stay_words_for_text_fields(word):
    data: dict = {}
    apply_override(data, f"train.mixed_precision={word}")
    assert data == {"train": {"mixed_precision": word}}
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    apply_override(data, "eval.refiner=yes")  # str | None
    assert data["eval"]["refiner"] == "yes"


def test_yaml_boolean_words_stay_booleans_for_boolean_fields():
    data: dict = {}
    for item in ("eval.use_captions=no", "train.cpu=yes", "train.gradient_checkpointing=on", "unknown.key=off"):
        apply_override(data, item)
    assert data["eval"]["use_captions"] is False and data["train"]["cpu"] is True
    assert data["train"]["gradient_checkpointing"] is True and data["unknown"]["key"] is False


@pytest.mark.parametrize(("key", "value", "instead"), [
    ("every_n_steps", 10, "train.validation.every_n_steps"),
    ("validation_dataset", "datasets/spitz-fur/heldout", "train.validation.path"),
    ("validation_images", 4, "train.validation.num_images"),
])
def test_removed_eval_keys_say_what_to_write(tmp_path, key, value, instead):
    file = tmp_path / "old.yaml"
    file.write_text(f"eval:\n  {key}: {value}\n  prompt: fur\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    msg = str(info.value)
    assert f"eval.{key} was removed; write {instead}" in msg and str(file) in msg
    assert "unknown key" not in msg


def test_eval_device_is_checked_in_the_config():
    assert load_config(None).eval.device == "auto"
    assert load_config(None, ["eval.device=cuda:1"]).eval.device == "cuda:1"
    with pytest.raises(ConfigError, match="eval.device: String should match pattern"):
        load_config(None, ["eval.device=gpu"])


def test_a_yaml_boolean_in_a_text_field_says_to_quote_it(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  mixed_precision: no\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert "train.mixed_precision: Input should be 'no', 'fp16' or 'bf16' (got False; YAML reads no / yes / on / off " \
        "as booleans: quote the word, e.g. 'no')" in str(info.value)
