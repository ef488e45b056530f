"""kohya key names: SDXL's original block naming, both directions, for every UNet module."""

from __future__ import annotations

import pytest
from torch import nn

from furlora.lora.kohya_names import kohya_module_name, parse_kohya_module_name, sgm_to_unet, unet_to_sgm


@pytest.mark.parametrize(("diffusers", "sgm"), [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.0.proj", "input_blocks.8.1.transformer_blocks.9.ff.net.0.proj"),
    ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
    ("down_blocks.0.resnets.1.conv2", "input_blocks.2.0.out_layers.3"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
    ("down_blocks.1.resnets.0.time_emb_proj", "input_blocks.4.0.emb_layers.1"),
    ("mid_block.resnets.0.conv1", "middle_block.0.in_layers.2"),
    ("mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
    ("mid_block.resnets.1.conv2", "middle_block.2.out_layers.3"),
    ("up_blocks.0.attentions.2.transformer_blocks.3.attn2.to_out.0", "output_blocks.2.1.transformer_blocks.3.attn2.to_out.0"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ("up_blocks.2.resnets.2.conv_shortcut", "output_blocks.8.0.skip_connection"),
    ("conv_in", "input_blocks.0.0"),
    ("conv_out", "out.2"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
])
def test_known_sdxl_names(diffusers, sgm):
    assert unet_to_sgm(diffusers) == sgm
    assert sgm_to_unet(sgm) == diffusers


def test_every_real_unet_module_round_trips(real_sdxl):
    names = [n for n, m in real_sdxl["unet"].named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(names) == 794
    stems = set()
    for name in names:
        stem = kohya_module_name("unet", name)
        assert stem.startswith("lora_unet_") and "." not in stem
        assert parse_kohya_module_name(stem) == ("unet", name)
        stems.add(stem)
    assert len(stems) == len(names)  # no two modules share a kohya name


def test_text_encoder_names():
    assert kohya_module_name("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj") == \
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    assert parse_kohya_module_name("lora_te2_text_model_encoder_layers_31_mlp_fc2") == \
        ("text_encoder_2", "text_model.encoder.layers.31.mlp.fc2")


@pytest.mark.parametrize("stem", [
    "lora_unet_input_blocks_99_7_foo",
    "lora_unet_middle_block_5_proj_in",
    "lora_te3_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te1_encoder_layers_0_self_attn_q_proj",
])
def test_bad_names_raise(stem):
    with pytest.raises(ValueError):
        parse_kohya_module_name(stem)
