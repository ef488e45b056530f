"""`furlora targets`, `furlora lora inspect`, `furlora lora convert`."""

from __future__ import annotations

import json

import pytest
import torch

from furlora.cli.main import main
from furlora.lora.formats import load_lora_file
from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings


@pytest.fixture(scope="module")
def lora_file(tiny_sdxl, tmp_path_factory):
    from furlora.models.sdxl import load_sdxl

    tiny = load_sdxl(tiny_sdxl)
    settings = LoraSettings.model_validate({"unet": {"preset": ["attn", "conv"], "rank": 4, "alpha": 2},
                                            "text_encoder": {"enabled": True, "rank": 2, "alpha": 1}})
    manager = LoraAdapters({"unet": tiny.unet, "text_encoder": tiny.text_encoder}, settings, seed=0)
    manager.apply()
    with torch.no_grad():
        for p in manager.trainable_parameters():
            p.normal_(0, 0.1)
    return manager.save(tmp_path_factory.mktemp("cli") / "fur.safetensors")


def test_targets_json_on_the_real_sdxl_architecture(capsys):
    code = main(["targets", "--model", "sdxl-meta", "--json", "--set", "lora.text_encoder.enabled=true",
                 "--set", "lora.text_encoder_2.enabled=true"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    components = report["components"]
    assert {n: c["hooked"] for n, c in components.items()} == {"unet": 560, "text_encoder": 48, "text_encoder_2": 128}
    assert components["unet"]["transformer_blocks"] == 70
    assert components["unet"]["parameters"] == 5_806_080  # 560 x r4 x (in + out)
    assert components["unet"]["bytes_fp16"] == 2 * 5_806_080
    assert report["total"]["hooked"] == 736
    assert components["unet"]["skipped"]["not_in_preset"]["kinds"]["ff"] == 140


def test_targets_table_on_a_tiny_model_with_a_config_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("lora:\n  unet:\n    preset: conv\n    blocks: [down_blocks.0, up_blocks.2]\n")
    assert main(["targets", "--model", "tiny-sdxl", "--config", str(config), "--names"]) == 0
    out = capsys.readouterr().out
    assert "preset conv, blocks down_blocks.0, up_blocks.2" in out
    assert "down_blocks.0.resnets.0" in out and "up_blocks.2.resnets.2" in out
    assert "  down_blocks.0.resnets.0.conv1" in out  # --names lists every hooked module
    assert "skipped, outside_blocks" in out


def test_targets_bad_selector_is_a_clear_error(capsys):
    assert main(["targets", "--model", "tiny-sdxl", "--set", "lora.unet.blocks=[up_blocks.2]"]) == 2
    err = capsys.readouterr().err
    assert "furlora: error: LoRA target selection on unet failed" in err
    assert "selector 'up_blocks.2' contains no module chosen by preset 'attn'" in err
    assert "Traceback" not in err


def test_inspect(lora_file, capsys):
    assert main(["lora", "inspect", str(lora_file)]) == 0
    out = capsys.readouterr().out
    assert "diffusers format" in out
    assert "unet" in out and "rank 4" in out and "alpha 2" in out
    assert "text_encoder" in out and "rank 2" in out
    assert "ss_base_model_version: sdxl_base_v1-0" in out
    assert main(["lora", "inspect", str(lora_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["components"]["unet"]["ranks"] == [4] and info["components"]["text_encoder"]["alphas"] == [1.0]


def test_convert_round_trip_keeps_weights_and_alphas(lora_file, tmp_path, capsys):
    kohya = tmp_path / "fur-kohya.safetensors"
    back = tmp_path / "fur-back.safetensors"
    assert main(["lora", "convert", str(lora_file), str(kohya), "--to", "kohya"]) == 0
    assert main(["lora", "convert", str(kohya), str(back), "--to", "diffusers"]) == 0
    assert "wrote" in capsys.readouterr().out
    original, converted, final = load_lora_file(lora_file), load_lora_file(kohya), load_lora_file(back)
    assert converted.format == "kohya" and final.format == "diffusers"
    assert converted.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    for weights in (converted, final):
        assert weights.tensors.keys() == original.tensors.keys()
        assert all(torch.equal(weights.tensors[k], original.tensors[k]) for k in original.tensors)
        assert weights.alphas == original.alphas


def test_convert_refuses_pickles(tmp_path, capsys):
    bad = tmp_path / "old.ckpt"
    torch.save({"a": torch.zeros(1)}, bad)
    assert main(["lora", "convert", str(bad), str(tmp_path / "x.safetensors"), "--to", "kohya"]) == 2
    assert "never unpickles" in capsys.readouterr().err
