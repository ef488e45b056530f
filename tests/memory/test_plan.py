"""The plan's structure and how it responds to each setting (tiny model, meta device)."""

from __future__ import annotations

import logging

import pytest

from furlora.errors import ConfigError
from furlora.memory import GiB, MiB, LoraPlan, PlanInput, estimate, format_bytes, parse_memory_size, warn_if_exceeds

BASE = PlanInput(architecture="tiny-sdxl-inpaint", resolution=(256, 256))


def _step(plan) -> int:
    return plan.phases["train_step"].bytes


def _row(plan, key: str) -> int:
    return next(i.bytes for i in [*plan.resident, *plan.overhead] if i.key == key)


def test_total_is_resident_plus_largest_phase_plus_overhead():
    plan = estimate(BASE)
    largest = max(item.bytes for item in plan.phases.values())
    assert plan.total_bytes == plan.resident_bytes + largest + sum(i.bytes for i in plan.overhead)
    assert sum(i.bytes for i in plan.stacked()) == plan.total_bytes
    assert set(plan.phases) == {"train_step", "vae_encode", "text_encode"}


def test_activations_follow_resolution_batch_and_checkpointing():
    small = _step(estimate(BASE))
    big = _step(estimate(BASE.with_changes(resolution=(512, 512))))
    batch = _step(estimate(BASE.with_changes(batch_size=2)))
    ckpt = _step(estimate(BASE.with_changes(gradient_checkpointing=True)))
    assert 3.5 < big / small < 4.5  # activations scale with the pixel count
    assert 1.8 < batch / small < 2.1
    assert ckpt < 0.75 * small


def test_attention_and_precision_change_activations():
    sdpa = _step(estimate(BASE.with_changes(resolution=(512, 512))))
    math = _step(estimate(BASE.with_changes(resolution=(512, 512), attention="math")))
    sliced = _step(estimate(BASE.with_changes(resolution=(512, 512), attention="sliced")))
    assert math > sdpa and sliced > sdpa  # training keeps every slice of sliced attention
    bf16 = estimate(BASE.with_changes(weight_dtype="bf16", mixed_precision="bf16"))
    fp32 = estimate(BASE)
    assert _step(bf16) < _step(fp32)
    assert _row(bf16, "unet") * 2 == _row(fp32, "unet")
    assert _row(bf16, "lora") == _row(fp32, "lora")  # LoRA stays fp32


def test_unloaded_components_count_zero_and_lose_their_phase():
    plan = estimate(BASE.with_changes(text_encoders_resident=False, vae_resident=False, encode_latents_per_step=False,
                                      encode_text_per_step=False))
    assert _row(plan, "vae") == _row(plan, "text_encoder") == _row(plan, "text_encoder_2") == 0
    assert set(plan.phases) == {"train_step"}
    # a trained text encoder is always resident, whatever the cache says
    trained = estimate(BASE.with_changes(text_encoders_resident=False,
                                         lora={"unet": LoraPlan(), "text_encoder": LoraPlan()}))
    assert _row(trained, "text_encoder") > 0
    assert "trained text encoders" in trained.phases["train_step"].note


def test_ema_sampling_and_rank():
    plan = estimate(BASE)
    ema = estimate(BASE.with_changes(ema=True))
    assert _row(ema, "ema") == _row(plan, "lora") and _row(plan, "ema") == 0
    sampling = estimate(BASE.with_changes(sample_during_training=True, vae_resident=False))
    assert "sampling" in sampling.phases and "loaded back" in sampling.phases["sampling"].note
    rank16 = estimate(BASE.with_changes(lora={"unet": LoraPlan(rank=16)}))
    assert _row(rank16, "lora") == 4 * _row(plan, "lora")


def test_cpu_mode_has_no_cuda_overhead():
    cuda, cpu = estimate(BASE), estimate(BASE.with_changes(device="cpu"))
    assert {i.key for i in cuda.overhead} == {"cuda_context", "allocator"}
    assert {i.key for i in cpu.overhead} == {"process", "heap"}


def test_table_and_verdict():
    plan = estimate(BASE)
    text = plan.table(16 * GiB)
    for label in ("UNet weights", "text encoder 1 weights", "VAE weights", "LoRA weights", "gradients",
                  "optimizer state", "UNet training step", "CUDA context", "total (estimated peak)"):
        assert label in text
    assert "verdict: FITS in 16.00 GiB GPU" in text
    assert "DOES NOT FIT" in plan.table(100 * MiB)
    assert plan.to_dict(100 * MiB)["fits"] is False


def test_warn_if_exceeds(caplog):
    plan = estimate(BASE)
    with caplog.at_level(logging.INFO, logger="furlora.memory"):
        assert warn_if_exceeds(plan, 64 * GiB) is False
        assert warn_if_exceeds(plan, 1 * MiB) is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "out-of-memory" in warnings[0].getMessage()


def test_bad_plan_input_lists_every_problem():
    with pytest.raises(ConfigError) as info:
        estimate(PlanInput(architecture="tiny-sdxl", resolution=(100, 30), batch_size=0, optimizer="sgd", lora={}))
    message = str(info.value)
    for part in ("resolution (100, 30)", "batch_size 0", "optimizer 'sgd'", "no component trains"):
        assert part in message
    with pytest.raises(ConfigError, match="neither one of sdxl-meta"):
        estimate(PlanInput(architecture="no/such-model"))


@pytest.mark.parametrize(("text", "expected"), [
    ("16GB", 16 * GiB), ("16 GiB", 16 * GiB), ("12g", 12 * GiB), ("24576MB", 24 * GiB), ("0.5GB", GiB // 2),
])
def test_parse_memory_size(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["banana", "16", "-3GB", "16 PB", "", "0GB"])
def test_parse_memory_size_rejects_nonsense(text):
    with pytest.raises(ConfigError, match="--gpu-memory"):
        parse_memory_size(text)


def test_format_bytes():
    assert format_bytes(3 * GiB // 2) == "1.50 GiB"
    assert format_bytes(512) == "512 B"
