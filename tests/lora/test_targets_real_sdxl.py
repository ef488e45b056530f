"""Target selection on the real SDXL architecture (meta device, no weights)."""

from __future__ import annotations

import re

import pytest
import torch
from peft.tuners.lora import LoraLayer

from furlora.errors import TargetError
from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings, TextEncoderLoraSettings, UnetLoraSettings
from furlora.lora.targets import select_targets


def transformer_blocks(names: list[str]) -> set[str]:
    return {m.group(1) for n in names if (m := re.match(r"(.*\.transformer_blocks\.\d+)\.", n))}


def test_unet_attn_hooks_560_linear_in_70_transformer_blocks(real_sdxl):
    sel = select_targets("unet", real_sdxl["unet"], UnetLoraSettings(preset="attn", rank=4))
    assert len(sel.targets) == 560
    assert {t.layer for t in sel.targets} == {"Linear"}
    assert len(transformer_blocks(sel.names)) == 70
    assert all(re.search(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$", n) for n in sel.names)
    assert len(set(sel.names)) == 560
    roles = [t.role for t in sel.targets]
    assert roles.count("self-attn") == roles.count("cross-attn") == 280


def test_text_encoder_attn_counts(real_sdxl):
    te1 = select_targets("text_encoder", real_sdxl["text_encoder"], TextEncoderLoraSettings(enabled=True))
    te2 = select_targets("text_encoder_2", real_sdxl["text_encoder_2"], TextEncoderLoraSettings(enabled=True))
    assert len(te1.targets) == 48
    assert len(te2.targets) == 128
    # Display names are the same for both encoders; live names follow each model's own layout.
    assert te1.names == te2.names[:48]
    assert te1.names[:4] == [f"encoder.layers.0.self_attn.{p}_proj" for p in ("k", "out", "q", "v")]
    assert te1.targets[0].live_name == "encoder.layers.0.self_attn.k_proj"  # transformers 5: no text_model level
    assert te2.targets[0].live_name == "text_model.encoder.layers.0.self_attn.k_proj"
    mlp = select_targets("text_encoder", real_sdxl["text_encoder"],
                         TextEncoderLoraSettings(enabled=True, preset="attn-mlp"))
    assert len(mlp.targets) == 72


def test_block_selection_mid_block_and_first_up_block_only(real_sdxl):
    sel = select_targets("unet", real_sdxl["unet"], UnetLoraSettings(preset="attn", blocks=["mid_block", "up_blocks.0"]))
    assert sel.names and all(n.startswith(("mid_block.", "up_blocks.0.")) for n in sel.names)
    assert len(sel.targets) == 80 + 3 * 80  # 10 + 3 x 10 transformer blocks, 8 projections each
    outside = sel.skipped["outside_blocks"]
    assert len(outside) == 560 - 320 and not any(n.startswith(("mid_block.", "up_blocks.0.")) for n in outside)


def test_fine_block_selector(real_sdxl):
    sel = select_targets("unet", real_sdxl["unet"], UnetLoraSettings(blocks=["up_blocks.0.attentions.1"]))
    assert len(sel.targets) == 80 and all(n.startswith("up_blocks.0.attentions.1.") for n in sel.names)


def test_conv_reaches_the_high_resolution_stages_without_attention(real_sdxl):
    sel = select_targets("unet", real_sdxl["unet"], UnetLoraSettings(preset="conv"))
    stages = {".".join(n.split(".")[:2]) for n in sel.names}
    assert {"down_blocks.0", "up_blocks.2"} <= stages
    assert {t.layer for t in sel.targets} == {"Conv2d"}
    assert all(re.search(r"resnets\.\d+\.(conv1|conv2|conv_shortcut)$", n) for n in sel.names)
    # 17 resnets x (conv1, conv2) + 11 channel-changing shortcuts
    assert len(sel.targets) == 45
    combined = select_targets("unet", real_sdxl["unet"], UnetLoraSettings(preset=["attn", "conv"]))
    assert len(combined.targets) == 560 + 45


def test_selector_matching_nothing_names_it_and_lists_valid_blocks(real_sdxl):
    with pytest.raises(TargetError) as info:
        select_targets("unet", real_sdxl["unet"], UnetLoraSettings(blocks=["down_blocks.7", "down_blocks.0"]))
    text = str(info.value)
    assert "lora.unet.blocks selector 'down_blocks.7' names no block" in text
    # down_blocks.0 exists but holds no attention: exactly the silent failure we refuse
    assert "selector 'down_blocks.0' contains no module chosen by preset 'attn'" in text
    assert "resnet-conv" in text and "valid blocks of unet:" in text
    assert "up_blocks.0.attentions.1" in text and "mid_block" in text


def test_patterns_matching_nothing_are_errors(real_sdxl):
    with pytest.raises(TargetError, match=r"include pattern '\*\.nope' matches no Linear / Conv2d module"):
        select_targets("unet", real_sdxl["unet"], UnetLoraSettings(include=["*.nope"]))
    with pytest.raises(TargetError, match=r"exclude pattern '\*ff\*' matches no selected module"):
        select_targets("unet", real_sdxl["unet"], UnetLoraSettings(preset="attn", exclude=["*ff*"]))
    with pytest.raises(TargetError, match=r"include pattern '\*norm1' matches no Linear / Conv2d module"):
        select_targets("unet", real_sdxl["unet"], UnetLoraSettings(include=["*norm1"]))


def test_include_and_exclude(real_sdxl):
    sel = select_targets("unet", real_sdxl["unet"],
                         UnetLoraSettings(preset="attn", include=["*.time_emb_proj"], exclude=["*.attn2.to_k", "*.attn2.to_v"]))
    assert len(sel.targets) == 560 - 140 + 17
    assert not any(n.endswith(("attn2.to_k", "attn2.to_v")) for n in sel.names)
    assert len(sel.skipped["excluded"]) == 140
    te = select_targets("text_encoder_2", real_sdxl["text_encoder_2"],
                        TextEncoderLoraSettings(enabled=True, blocks=["text_model.encoder.layers.31"], preset="attn-mlp"))
    assert te.names == [f"encoder.layers.31.{m}" for m in
                        ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.out_proj", "self_attn.q_proj", "self_attn.v_proj")]


def test_apply_on_meta_wraps_each_selected_module_exactly_once():
    # A fresh meta tree (hooking mutates it); builds in about a second, allocates nothing.
    from furlora.models.architecture import build_real_sdxl

    components = {n: build_real_sdxl(n) for n in ("unet", "text_encoder", "text_encoder_2")}
    settings = LoraSettings.model_validate(
        {"unet": {"preset": ["attn", "conv"], "rank": 4, "alpha": 2},
         "text_encoder": {"enabled": True}, "text_encoder_2": {"enabled": True, "rank": 8}})
    manager = LoraAdapters(components, settings, model_name="sdxl-meta")
    report = manager.apply()
    wrapped = {n: [m for m in c.modules() if isinstance(m, LoraLayer)] for n, c in components.items()}
    assert {n: len(w) for n, w in wrapped.items()} == {"unet": 605, "text_encoder": 48, "text_encoder_2": 128}
    # no LoRA layer wraps another LoRA layer
    assert not any(isinstance(layer.get_base_layer(), LoraLayer) for w in wrapped.values() for layer in w)
    assert report.components["unet"].hooked == 605
    assert report.components["unet"].transformer_blocks == 70
    assert all(p.dtype == torch.float32 and p.requires_grad for p in manager.trainable_parameters())
    assert report.parameters == sum(p.numel() for p in manager.trainable_parameters())
    with pytest.raises(TargetError, match="already applied"):
        manager.apply()
    # A second manager on the hooked model refuses instead of wrapping again.
    with pytest.raises(TargetError, match="already has peft/LoRA layers"):
        LoraAdapters(components, settings).apply()


def test_coverage_warns_about_text_encoder_1_last_layer(real_sdxl):
    from furlora.lora.coverage import component_coverage

    hooked = select_targets("text_encoder", real_sdxl["text_encoder"], TextEncoderLoraSettings(enabled=True))
    notes = component_coverage(hooked).notes
    assert len(notes) == 1 and "encoder.layers.11" in notes[0] and "never gets a gradient" in notes[0]
    skipped = select_targets("text_encoder", real_sdxl["text_encoder"],
                             TextEncoderLoraSettings(enabled=True, exclude=["encoder.layers.11.*"]))
    assert len(skipped.targets) == 44 and component_coverage(skipped).notes == []
    te2 = select_targets("text_encoder_2", real_sdxl["text_encoder_2"], TextEncoderLoraSettings(enabled=True))
    assert component_coverage(te2).notes == []  # its last layer feeds the pooled embedding
