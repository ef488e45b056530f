"""The eval: section: pass lists from YAML, checks with key paths, seeds."""

from __future__ import annotations

import pytest

from furlora.config import load_config, validate_config
from furlora.errors import ConfigError
from furlora.eval.passes import derive_seed, pass_seed, total_denoising_steps
from furlora.eval.settings import EvalSettings, PassSettings


def test_passes_load_from_yaml(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        "eval:\n"
        "  passes:\n"
        "    - {strength: 1.0, steps: 20, feather: 8}\n"
        "    - {strength: 0.4, steps: 20, grow: -4, crop_to_mask: true, working_resolution: 512}\n"
        "  lora_scales: [0.5, 1.0]\n"
        "  component_scales: {text_encoder: 0.0}\n"
    )
    settings = load_config(config_file).eval
    assert [p.denoising_steps for p in settings.passes] == [20, 8]
    assert total_denoising_steps(settings.passes) == 28
    assert settings.passes[1].crop_to_mask and settings.component_scales == {"text_encoder": 0.0}


def test_bad_passes_are_reported_with_their_key_paths():
    with pytest.raises(ConfigError) as info:
        validate_config({"eval": {"passes": [
            {"strength": 1.0, "steps": 10},
            {"strength": 0.05, "steps": 10},
            {"crop_to_mask": True, "tile": True, "working_resolution": 100},
            {"strenght": 0.5},
        ]}})
    message = str(info.value)
    assert "eval.passes.1" in message and "leaves 0 denoising steps" in message
    assert "eval.passes.2" in message and "exclusive" in message and "not a multiple of 8" in message
    assert "eval.passes.3.strenght: unknown key; did you mean 'strength'" in message
    with pytest.raises(ConfigError, match="eval.refiner"):
        validate_config({"eval": {"passes": [{"refiner": True}]}})
    with pytest.raises(ConfigError, match="component_scales"):
        validate_config({"eval": {"component_scales": {"vae": 1.0}}})


def test_seeds_are_explicit_and_independent():
    assert derive_seed(0, 0) == derive_seed(0, 0)
    assert len({derive_seed(0, p, t) for p in range(3) for t in range(3)}) == 9
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert pass_seed(PassSettings(seed=123), 9, 2) == 123
    assert pass_seed(PassSettings(), 9, 2) == derive_seed(9, 2)
    assert 0 <= derive_seed(2**40, 5) < 2**63


def test_defaults_are_a_decreasing_three_pass_schedule():
    passes = EvalSettings().passes
    assert [p.strength for p in passes] == [1.0, 0.5, 0.25]
