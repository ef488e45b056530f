"""The lora: config section: per-component settings from YAML, validated up front."""

from __future__ import annotations

import pytest

from furlora.config import load_config
from furlora.errors import ConfigError

YAML = """
lora:
  unet:
    preset: [attn-ff, conv]
    blocks: [mid_block, up_blocks.0]
    exclude: ["*attn2.to_k"]
    rank: 16
    alpha: 8
    learning_rate: 1.0e-4
  text_encoder:
    enabled: true
    preset: attn-mlp
    rank: 4
    alpha: 2
    dropout: 0.1
  text_encoder_2:
    enabled: true
    use_dora: true
  save_formats: [kohya]
  save_dtype: fp16
"""


def test_yaml_round_trip(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(YAML)
    lora = load_config(file).lora
    assert lora.unet.presets == ["attn-ff", "conv"] and lora.unet.blocks == ["mid_block", "up_blocks.0"]
    assert (lora.unet.rank, lora.unet.alpha, lora.unet.learning_rate) == (16, 8.0, 1e-4)
    assert lora.text_encoder.presets == ["attn-mlp"] and lora.text_encoder.dropout == 0.1
    assert lora.text_encoder.learning_rate is None
    assert lora.text_encoder_2.use_dora and lora.text_encoder_2.presets == ["attn"]
    assert lora.enabled_components() == ["unet", "text_encoder", "text_encoder_2"]
    assert lora.save_formats == ["kohya"] and lora.save_dtype == "fp16"


def test_defaults_train_the_unet_attention_only():
    lora = load_config(None).lora
    assert lora.enabled_components() == ["unet"]
    assert lora.unet.presets == ["attn"] and lora.unet.rank == 4


@pytest.mark.parametrize(("overrides", "expected"), [
    (["lora.text_encoder.preset=attn-ff"], "lora.text_encoder.preset: Value error, unknown preset 'attn-ff'; valid presets: attn, attn-mlp"),
    (["lora.unet.preset=[attn, attn]"], "names a preset twice"),
    (["lora.unet.enabled=false"], "every component is disabled"),
    (["lora.unet.preset=null"], "preset is null and include is empty: nothing would be hooked"),
    (["lora.unet.rnak=8"], "lora.unet.rnak: unknown key; did you mean 'rank'"),
    (["lora.unet.rank=0"], "lora.unet.rank: Input should be greater than or equal to 1"),
    (["lora.text_encoder_2.dropout=1.5"], "lora.text_encoder_2.dropout"),
    (["lora.save_formats=[]"], "lora.save_formats"),
])
def test_bad_values_name_their_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)
