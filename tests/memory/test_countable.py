"""Weights, LoRA, gradients and optimizer state of the plan equal the bytes of real tensors (tiny model)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from furlora.lora.settings import UnetLoraSettings
from furlora.memory import LoraPlan, PlanInput, estimate
from furlora.memory.params import component_weight_bytes, lora_targets, meta_component
from furlora.models.sdxl import load_sdxl

ARCH = "tiny-sdxl-inpaint"


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _row(plan, key: str) -> int:
    return next(i.bytes for i in plan.resident if i.key == key)


@pytest.fixture(scope="module")
def loaded(tiny_sdxl_inpaint):
    return load_sdxl(tiny_sdxl_inpaint, dtype="bf16", vae_dtype="fp32")


@pytest.mark.parametrize("architecture", ["name", "folder"])
def test_weight_rows_equal_loaded_tensor_bytes(loaded, tiny_sdxl_inpaint, architecture):
    arch = ARCH if architecture == "name" else str(tiny_sdxl_inpaint)
    plan = estimate(PlanInput(architecture=arch, resolution=(64, 64), weight_dtype="bf16", vae_dtype="fp32"))
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(loaded, name)
        measured = _nbytes([*module.parameters(), *module.buffers()])
        assert _row(plan, name) == measured, name
    # the integer position-id buffers of CLIP keep int64 while the weights go to bf16
    assert component_weight_bytes(ARCH, "text_encoder", "bf16") < component_weight_bytes(ARCH, "text_encoder", "fp32")


def _lora_unet(loaded, settings: UnetLoraSettings):
    """A trainable LoRA UNet built the way training builds it: targets from furlora.lora.targets, peft."""
    unet = load_sdxl(loaded.source, dtype="fp32").unet
    names = lora_targets("unet", unet, settings)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(names))
    unet = inject_adapter_in_model(config, unet)
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    return unet, names


def _train_step(unet, optimizer_cls, **kwargs):
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = optimizer_cls(params, lr=1e-3, **kwargs)
    config = unet.config
    torch.manual_seed(0)
    sample = torch.randn(1, config.in_channels, 8, 8)
    out = unet(
        sample, torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, config.cross_attention_dim),
        added_cond_kwargs={"text_embeds": torch.randn(1, 64), "time_ids": torch.randn(1, 6)},
    ).sample
    out.float().pow(2).mean().backward()
    optimizer.step()
    return params, optimizer


def _state_bytes(optimizer) -> int:
    tensors = [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return _nbytes(tensors)


@pytest.mark.parametrize("preset", ["attn", "attn-ff"])
def test_lora_gradient_and_adamw_rows_equal_real_tensors(loaded, preset):
    settings = UnetLoraSettings(preset=preset, rank=4)
    unet, names = _lora_unet(loaded, settings)
    params, optimizer = _train_step(unet, torch.optim.AdamW)
    plan = estimate(PlanInput(architecture=ARCH, resolution=(64, 64), optimizer="adamw",
                              lora={"unet": LoraPlan(rank=4, targets=names)}))
    assert _row(plan, "lora") == _nbytes(params) > 0
    assert _row(plan, "gradients") == _nbytes([p.grad for p in params])
    assert _row(plan, "optimizer") == _state_bytes(optimizer)


def test_adamw8bit_row_equals_bitsandbytes_state(loaded):
    bnb = pytest.importorskip("bitsandbytes")
    # rank 48 makes some LoRA tensors large enough (>= 4096 elements) for 8-bit state, others stay 32-bit
    settings = UnetLoraSettings(preset="attn", rank=48)
    unet, names = _lora_unet(loaded, settings)
    params, optimizer = _train_step(unet, bnb.optim.AdamW8bit)
    sizes = {p.numel() >= 4096 for p in params}
    assert sizes == {True, False}, "the test must cover both 8-bit and 32-bit state"
    plan = estimate(PlanInput(architecture=ARCH, resolution=(64, 64), optimizer="adamw8bit",
                              lora={"unet": LoraPlan(rank=48, targets=names)}))
    assert _row(plan, "optimizer") == _state_bytes(optimizer)
    adamw = estimate(PlanInput(architecture=ARCH, resolution=(64, 64), optimizer="adamw",
                               lora={"unet": LoraPlan(rank=48, targets=names)}))
    assert _row(plan, "optimizer") < _row(adamw, "optimizer") / 2


def test_default_targets_are_the_attention_projections():
    names = lora_targets("unet", meta_component(ARCH, "unet"))
    assert names and all(n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v") or n.endswith("to_out.0") for n in names)
    assert set(names) == set(lora_targets("unet", meta_component(ARCH, "unet"), UnetLoraSettings(preset="attn")))


def test_real_sdxl_parameter_counts_from_meta_trees():
    # the published sizes of SDXL base 1.0, from the module trees (no weights, no typed constants)
    assert component_weight_bytes("sdxl-meta", "unet", "fp16") == 2_567_463_684 * 2
    assert component_weight_bytes("sdxl-meta", "vae", "fp32") == 83_653_863 * 4
    # CLIP parameters at fp16 plus the 77 int64 position ids
    assert component_weight_bytes("sdxl-meta", "text_encoder", "fp16") == 123_060_480 * 2 + 77 * 8
    assert component_weight_bytes("sdxl-meta", "text_encoder_2", "fp16") == 694_659_840 * 2 + 77 * 8
    # the inpainting UNet differs only in conv_in: 9 input channels instead of 4 (5 x 320 x 3 x 3 more)
    assert component_weight_bytes("sdxl-inpaint-meta", "unet", "fp32") - component_weight_bytes("sdxl-meta", "unet", "fp32") \
        == 5 * 320 * 9 * 4


def test_old_planner_names_of_real_sdxl_say_what_to_write():
    from furlora.errors import ConfigError

    with pytest.raises(ConfigError, match="architecture 'sdxl-inpainting' is now called 'sdxl-inpaint-meta'"):
        estimate(PlanInput(architecture="sdxl-inpainting"))


def test_planner_lora_is_the_training_injection():
    """The planner's LoRA tensors are those LoraAdapters creates on a real (CPU) module."""
    from furlora.lora.adapters import LoraAdapters
    from furlora.models.architecture import build_component, component_config
    from furlora.lora.settings import LoraSettings
    from furlora.memory.params import inject_lora, trainable_parameters

    meta = inject_lora(meta_component(ARCH, "text_encoder_2"), "text_encoder_2", LoraPlan(rank=3), "fp32")
    shapes = sorted(tuple(p.shape) for p in trainable_parameters(meta))
    settings = LoraSettings.model_validate({"unet": {"enabled": False}, "text_encoder_2": {"enabled": True, "rank": 3}})
    module = build_component("text_encoder_2", component_config(ARCH, "text_encoder_2"), device="cpu")
    real = LoraAdapters({"text_encoder_2": module}, settings)
    real.apply()
    assert shapes == sorted(tuple(p.shape) for p in real.trainable_parameters()) and len(shapes) == 2 * 4 * 2  # 2 layers x q/k/v/out x (A, B)
