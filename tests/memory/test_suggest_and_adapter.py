"""The config adapter reads the real settings; --suggest returns configs the planner accepts."""

from __future__ import annotations

import pytest
import yaml

from furlora.config import load_config, validate_config
from furlora.errors import ConfigError
from furlora.memory import MiB, estimate, plan_input_from_config, suggest
from furlora.memory.adapter import architecture_of
from furlora.memory.suggest import RULES, apply_changes

TINY = {"model": {"source": "tiny-sdxl-inpaint"}, "data": {"resolution": 256}}


def _config(**train):
    return validate_config({**TINY, "train": train})


def test_adapter_reads_every_memory_setting():
    config = validate_config({
        "model": {"source": "tiny-sdxl-inpaint", "dtype": "bf16", "vae_dtype": "fp32"},
        "data": {"resolution": 256},
        "lora": {"unet": {"preset": "attn-ff", "rank": 8}, "text_encoder": {"enabled": True, "rank": 2}},
        "train": {"batch_size": 2, "gradient_accumulation_steps": 3, "mixed_precision": "bf16",
                  "gradient_checkpointing": True, "optimizer": "adamw8bit", "attention": "sliced",
                  "ema": {"enabled": True, "device": "same"}, "loss": {"prior_preservation_weight": 0.5},
                  "validation": {"path": "somewhere"},
                  "resolution_schedule": [{"step": 0, "resolution": 192}, {"step": 10, "resolution": 320}]},
    })
    p = plan_input_from_config(config)
    assert p.architecture == "tiny-sdxl-inpaint"
    assert p.resolution == (320, 320)  # the largest phase of the schedule
    assert (p.batch_size, p.gradient_accumulation_steps) == (2, 3)
    assert (p.weight_dtype, p.vae_dtype, p.mixed_precision, p.lora_dtype) == ("bf16", "fp32", "bf16", "fp32")
    assert (p.gradient_checkpointing, p.optimizer, p.attention) == (True, "adamw8bit", "sliced")
    assert p.ema and p.prior_preservation and p.sample_during_training and p.device == "cuda"
    assert set(p.lora) == {"unet", "text_encoder"}
    assert p.lora["unet"].rank == 8 and any(t.endswith("ff.net.2") for t in p.lora["unet"].targets)
    assert p.text_encoders_resident and not p.encode_text_per_step  # a trained encoder is not "encoded"
    assert plan_input_from_config(_config(cpu=True)).device == "cpu"
    assert plan_input_from_config(_config(), device="cpu").device == "cpu"


def test_architecture_of_sources(tiny_sdxl):
    assert architecture_of("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl-meta"
    assert architecture_of("diffusers/stable-diffusion-xl-1.0-inpainting-0.1") == "sdxl-inpaint-meta"
    assert architecture_of(str(tiny_sdxl)) == str(tiny_sdxl)
    with pytest.raises(ConfigError, match="--architecture sdxl-meta"):
        architecture_of("someone/not-downloaded-sdxl")


def test_suggestion_fits_and_is_a_config_the_planner_accepts(tmp_path):
    raw = {**TINY, "data": {"resolution": 384}, "train": {"batch_size": 4, "attention": "sliced", "cpu": True}}
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(raw))
    config = load_config(file)
    original = estimate(plan_input_from_config(config))
    # a budget that fused attention alone cannot meet, but the later rules can
    fused = estimate(plan_input_from_config(apply_changes(config, {"train.attention": "sdpa"})))
    capacity = fused.total_bytes - 1 * MiB
    result = suggest(config, capacity)
    assert not original.fits(capacity) and result.fits
    summaries = [c.summary for c in result.changes]
    assert summaries[0] == "fused scaled-dot-product attention"
    assert "gradient checkpointing" in summaries
    assert all(c.saves_bytes > 0 for c in result.changes)
    assert summaries.index("fused scaled-dot-product attention") < summaries.index("gradient checkpointing")
    # the overrides, applied to the YAML file the normal way, give a config that fits
    reloaded = load_config(file, result.overrides())
    replanned = estimate(plan_input_from_config(reloaded))
    assert replanned.fits(capacity)
    assert replanned.total_bytes == result.plan.total_bytes


def test_suggestion_that_cannot_fit_says_so():
    config = _config(cpu=True)
    result = suggest(config, 10 * MiB)  # less than the Python process itself
    assert not result.fits and result.notes == ["even all changes together do not fit"]
    assert result.plan.total_bytes <= result.original_plan.total_bytes


def test_lower_resolution_and_rank_rules_keep_the_config_valid():
    config = validate_config({**TINY, "data": {"resolution": 768}, "lora": {"unet": {"rank": 16, "alpha": 8}},
                              "train": {"resolution_schedule": [{"step": 0, "resolution": 512},
                                                                {"step": 5, "resolution": 768}]}})
    rules = dict((r.__name__, r) for r, _ in RULES)
    resolution = rules["_lower_resolution"](config)
    lowered = apply_changes(config, resolution.overrides)
    assert lowered.data.resolution == 640 and [p.resolution for p in lowered.train.resolution_schedule] == [512, 640]
    rank = rules["_lower_rank"](config)
    lowered = apply_changes(config, rank.overrides)
    assert lowered.lora.unet.rank == 8 and lowered.lora.unet.alpha == 4  # alpha / rank kept


def test_log_plan_logs_the_table_and_warns(caplog):
    import logging

    from furlora.memory import log_plan

    config = _config()
    with caplog.at_level(logging.INFO):
        plan = log_plan(config, free_bytes=1 * MiB)
    text = caplog.text
    assert plan is not None and "memory plan (furlora plan):" in text and "UNet weights" in text
    assert "expect an out-of-memory error" in text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert log_plan(config, architecture="no/such-folder") is None  # advice only: never raises
    assert "memory plan unavailable (ConfigError" in caplog.text
