"""LoraAdapters on the tiny SDXL: dtypes, gradient flow, scale / disable, merge, groups, seeds."""

from __future__ import annotations

import pytest
import torch
from lora_helpers import max_diff, sdxl_forward, tiny_inputs

from furlora.errors import LoraFormatError, TrainingError
from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings

ALL_THREE = {
    "unet": {"preset": "attn-ff", "rank": 4, "alpha": 2, "learning_rate": 1e-4},
    "text_encoder": {"enabled": True, "preset": "attn-mlp", "rank": 2, "alpha": 3, "learning_rate": 5e-5},
    "text_encoder_2": {"enabled": True, "rank": 3, "alpha": 1.5},
}


def hook(tiny, config=ALL_THREE, seed=0) -> LoraAdapters:
    manager = LoraAdapters(
        {"unet": tiny.unet, "text_encoder": tiny.text_encoder, "text_encoder_2": tiny.text_encoder_2},
        LoraSettings.model_validate(config), seed=seed)
    manager.apply()
    return manager


def perturb(manager: LoraAdapters, seed: int = 1, std: float = 0.1) -> None:
    """Give every LoRA weight (including the zero-initialised B) a non-zero value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in manager.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def forward(tiny, inputs):
    with torch.no_grad():
        return sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, inputs)


def test_lora_weights_are_fp32_on_a_bf16_model_and_base_is_frozen(tiny_sdxl):
    from furlora.models.sdxl import load_sdxl

    tiny = load_sdxl(tiny_sdxl, dtype="bf16")
    manager = hook(tiny)
    lora = manager.trainable_parameters()
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    lora_ids = {id(p) for p in lora}
    base = [p for m in (tiny.unet, tiny.text_encoder, tiny.text_encoder_2) for p in m.parameters() if id(p) not in lora_ids]
    assert base and all(not p.requires_grad and p.dtype == torch.bfloat16 for p in base)
    perturb(manager)
    out = forward(tiny, tiny_inputs())
    assert out["unet"].dtype == torch.bfloat16 and torch.isfinite(out["unet"].float()).all()


def test_gradient_flow_every_lora_weight_and_no_base_weight(tiny):
    manager = hook(tiny)
    inputs = tiny_inputs()

    def loss():
        out = sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, inputs)
        return out["unet"].pow(2).mean() + out["text_encoder"].pow(2).mean()

    report = manager.check_gradient_flow(loss)
    assert report.ok, report.problems()
    assert report.lora_with_grad == report.lora_parameters == len(manager.trainable_parameters())
    report.raise_for_problems()


def test_gradient_flow_names_modules_off_the_loss_path_and_unfrozen_base(tiny):
    manager = hook(tiny)
    inputs = tiny_inputs()
    tiny.unet.conv_in.weight.requires_grad_(True)  # a base weight someone forgot to freeze

    def loss():
        # SDXL reads text encoder 1's penultimate layer: its last layer is not on this loss path.
        return sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, inputs)["unet"].pow(2).mean()

    report = manager.check_gradient_flow(loss)
    assert not report.ok
    assert report.lora_without_grad and all(n.startswith("text_encoder.text_model.encoder.layers.1.")
                                            for n in report.lora_without_grad)
    assert len(report.lora_without_grad) == 6 * 2  # q, k, v, out, fc1, fc2 x (A, B)
    assert report.base_with_grad == ["unet.conv_in.weight"]
    with pytest.raises(TrainingError, match="12 LoRA weights got no gradient"):
        report.raise_for_problems()


def test_scale_zero_and_disable_give_the_base_model_exactly(tiny):
    inputs = tiny_inputs()
    base = forward(tiny, inputs)
    manager = hook(tiny)
    assert max(max_diff(forward(tiny, inputs), base).values()) == 0.0  # B = 0 at init: no change yet
    perturb(manager)
    lora = forward(tiny, inputs)
    assert all(d > 1e-3 for d in max_diff(lora, base).values())

    manager.set_scale(None, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(forward(tiny, inputs).values(), base.values()))
    manager.set_scale(None, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(forward(tiny, inputs).values(), lora.values()))

    with manager.disabled():
        assert all(torch.equal(a, b) for a, b in zip(forward(tiny, inputs).values(), base.values()))
    assert all(torch.equal(a, b) for a, b in zip(forward(tiny, inputs).values(), lora.values()))

    # per component: only text encoder 1 off
    with manager.disabled("text_encoder"):
        part = forward(tiny, inputs)
        assert torch.equal(part["text_encoder"], base["text_encoder"])
        assert torch.equal(part["text_encoder_2"], lora["text_encoder_2"])
        assert not torch.equal(part["unet"], lora["unet"]) and not torch.equal(part["unet"], base["unet"])
    assert manager.is_enabled("text_encoder")

    manager.set_scale("unet", 0.5)
    half = forward(tiny, inputs)
    assert torch.equal(half["text_encoder"], lora["text_encoder"])
    assert manager.scale("unet") == 0.5 and manager.scale("text_encoder") == 1.0
    manager.enabled(False)
    assert all(torch.equal(a, b) for a, b in zip(forward(tiny, inputs).values(), base.values()))


def test_merge_and_unmerge(tiny):
    inputs = tiny_inputs()
    manager = hook(tiny)
    perturb(manager, std=0.05)
    lora = forward(tiny, inputs)
    layer = manager.layers("unet")["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    before = layer.get_base_layer().weight.detach().clone()
    manager.merge()
    assert not torch.equal(layer.get_base_layer().weight, before)
    merged = forward(tiny, inputs)
    assert max(max_diff(merged, lora).values()) < 1e-4
    with pytest.raises(TrainingError, match="unmerge"):
        manager.set_scale("unet", 0.5)
    manager.unmerge()
    assert torch.allclose(layer.get_base_layer().weight, before, atol=1e-6)
    assert max(max_diff(forward(tiny, inputs), lora).values()) < 1e-5


def test_parameter_groups_have_per_component_learning_rates(tiny):
    manager = hook(tiny)
    groups = manager.parameter_groups()
    assert [g["name"] for g in groups] == ["unet", "text_encoder", "text_encoder_2"]
    assert groups[0]["lr"] == 1e-4 and groups[1]["lr"] == 5e-5 and "lr" not in groups[2]
    assert sum(len(g["params"]) for g in groups) == len(manager.trainable_parameters())
    optimizer = torch.optim.AdamW(groups, lr=3e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 5e-5, 3e-4]
    assert manager.parameter_groups(base_lr=7e-4)[2]["lr"] == 7e-4


def test_seeded_initialisation_is_reproducible(tiny_sdxl):
    from furlora.models.sdxl import load_sdxl

    a = hook(load_sdxl(tiny_sdxl), seed=5).lora_state_dict()
    b = hook(load_sdxl(tiny_sdxl), seed=5).lora_state_dict()
    c = hook(load_sdxl(tiny_sdxl), seed=6).lora_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("lora_A.weight"))


def test_state_dict_round_trip_and_checks(tiny, tiny_sdxl):
    from furlora.models.sdxl import load_sdxl

    inputs = tiny_inputs()
    manager = hook(tiny)
    perturb(manager)
    state = manager.lora_state_dict()
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in state
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.lora_B.weight" in state
    other_tiny = load_sdxl(tiny_sdxl)
    other = hook(other_tiny, seed=9)
    other.load_lora_state_dict(state)
    assert max(max_diff(forward(other_tiny, inputs), forward(tiny, inputs)).values()) == 0.0
    bad = dict(state)
    bad["unet.conv_in.lora_A.weight"] = torch.zeros(4, 4)
    with pytest.raises(LoraFormatError, match=r"1 unknown keys .*unet.conv_in.lora_A.weight"):
        other.load_lora_state_dict(bad)


def test_dora_trains_saves_and_reloads(tiny, tiny_sdxl, tmp_path):
    from furlora.models.sdxl import load_sdxl

    config = {"unet": {"preset": "attn", "rank": 2, "alpha": 4, "use_dora": True}}
    inputs = tiny_inputs()
    manager = hook(tiny, config)
    assert any(k.endswith("lora_magnitude_vector") for k in manager.lora_state_dict())
    perturb(manager, std=0.05)
    with torch.no_grad():
        for k, p in manager.named_lora_parameters().items():
            if k.endswith("lora_magnitude_vector"):
                p.abs_().add_(0.5)
    path = manager.save(tmp_path / "dora.safetensors")
    other_tiny = load_sdxl(tiny_sdxl)
    hook(other_tiny, config, seed=3).load(path)
    assert max(max_diff(forward(other_tiny, inputs), forward(tiny, inputs)).values()) == 0.0
    with pytest.raises(LoraFormatError, match="DoRA weights cannot be written in the kohya format"):
        manager.save(tmp_path / "dora-kohya.safetensors", format="kohya")
