"""The tokens: config section: token naming rule and the checks that need no model."""

from __future__ import annotations

import pytest

from furlora.config import load_config, validate_config
from furlora.errors import ConfigError
from furlora.tokens.settings import TokenConcept, TokenSettings


def test_concept_expands_to_diffusers_multi_vector_names():
    concept = TokenConcept(name="<spitz-fur>", num_vectors=3)
    assert concept.token_names() == ["<spitz-fur>", "<spitz-fur>_1", "<spitz-fur>_2"]
    assert TokenConcept(name="<spitz-fur>").token_names() == ["<spitz-fur>"]
    assert concept.file_stem() == "spitz-fur"


def test_tokens_section_from_yaml(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "tokens:\n  enabled: true\n  learning_rate: 0.001\n  train_fraction: 0.5\n"
        "  concepts:\n    - {name: '<fur-a>', num_vectors: 2, init_words: [fur, hair]}\n"
        "  caption: {mode: replace}\n"
    )
    config = load_config(cfg)
    assert config.tokens.enabled
    assert config.tokens.all_token_names() == ["<fur-a>", "<fur-a>_1"]
    assert config.tokens.train_fraction == 0.5


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ({"concepts": [{"name": "<a b>"}]}, "no whitespace"),
        ({"concepts": [{"name": "<fur>"}, {"name": "<FUR>"}]}, "defined twice"),
        ({"concepts": [{"name": "<fur>", "num_vectors": 2}, {"name": "<fur>_1"}]}, "defined twice"),
        ({"concepts": [{"name": "<fur>"}, {"name": "<fur>x"}]}, "is part of"),
        ({"concepts": [{"name": "<a>", "num_vectors": 40}, {"name": "<b>", "num_vectors": 40}]}, "at most 75"),
        ({"caption": {"mode": "regions"}}, "needs caption.region_phrases"),
        ({"caption": {"mode": "regions", "region_phrases": {"chest": "fluffy chest"}}}, "names no concept"),
        ({"caption": {"mode": "replace"}, "concepts": [{"name": "<a>", "replace_words": []}]}, "needs replace_words"),
        ({"enabled": True, "concepts": []}, "concepts is empty"),
        ({"concepts": [{"name": "<a>", "init_words": ["two words"]}]}, "without whitespace"),
        ({"train_fraction": 0}, "tokens.train_fraction"),
    ],
)
def test_bad_token_settings_are_config_errors(tokens, expected):
    with pytest.raises(ConfigError) as info:
        validate_config({"tokens": tokens})
    assert expected in str(info.value)
    assert "tokens" in str(info.value)


def test_defaults_are_a_valid_single_fur_concept():
    settings = TokenSettings(enabled=True)
    assert settings.all_token_names() == ["<spitz-fur>"]
    assert settings.concepts[0].init_words == ["fur"]


def test_the_shipped_lora_token_config_loads():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu-lora-token.yaml")
    assert config.tokens.enabled
    assert config.tokens.all_token_names() == ["<spitz-fur>", "<spitz-fur>_1"]
    assert config.tokens.caption.mode == "replace"
    assert {"text_encoder", "text_encoder_2"} <= set(config.lora.enabled_components())
