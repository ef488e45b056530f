"""The one pretraining command end to end at a toy budget, and the files it exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from furlora.errors import ModelLoadError
from furlora.models.pretrained import pretrained_model_path, verify_pretrained_files
from furlora.pretrain.__main__ import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    args = ["--out", str(out), "--size", "32", "--vae-steps", "2", "--vae-batch", "2",
            "--unet-steps", "2", "--unet-batch", "2", "--decoder-steps", "2", "--decoder-batch", "2",
            "--validation-count", "4"]
    assert main(args) == 0
    return out


def test_export_writes_hashed_fp16_folders(exported: Path) -> None:
    from safetensors import safe_open

    root = exported / "export"
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["models"]) == {"tiny-sdxl-pretrained", "tiny-sdxl-inpaint-pretrained"}
    weights = [p for p in manifest["files"] if p.endswith(".safetensors")]
    assert "tiny-sdxl-pretrained/unet/conv_in.safetensors" in weights
    for rel in weights:
        with safe_open(str(root / rel), framework="pt") as handle:
            assert all(handle.get_tensor(k).dtype == torch.float16 for k in handle.keys()), rel
    metrics = json.loads((root / "training_metrics.json").read_text())
    assert metrics["vae"]["steps"] == 2 and metrics["unet"]["steps"] == 2 and metrics["decoder"]["steps"] == 2
    assert str(exported) not in json.dumps(metrics)  # no path of the training machine
    configs = [p for p in manifest["files"] if p.endswith(".json")]
    assert not any(str(exported) in (root / p).read_text() for p in configs)
    assert "WORKDIR" in metrics["unet"]["command"]


def test_loader_assembles_both_models(exported: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from furlora.models.sdxl import load_sdxl

    root = exported / "export"
    inpaint = pretrained_model_path("tiny-sdxl-inpaint-pretrained", tmp_path, root=root)
    base = pretrained_model_path("tiny-sdxl-pretrained", tmp_path, root=root)
    assert inpaint == root / "tiny-sdxl-inpaint-pretrained"
    assert base.parent == tmp_path / "models"
    assert pretrained_model_path("tiny-sdxl-pretrained", tmp_path, root=root) == base  # assembled once
    c9, c4 = load_sdxl(inpaint), load_sdxl(base)
    assert c9.is_inpainting and not c4.is_inpainting
    assert c4.unet.conv_in.in_channels == 4 and c9.unet.conv_in.in_channels == 9
    # everything but the input convolution is the shared body
    sd4, sd9 = c4.unet.state_dict(), c9.unet.state_dict()
    assert torch.equal(sd4["conv_out.weight"], sd9["conv_out.weight"])
    conv4 = load_file(str(root / "tiny-sdxl-pretrained" / "unet" / "conv_in.safetensors"))
    assert torch.equal(sd4["conv_in.weight"], conv4["conv_in.weight"].float())
    assert c4.vae.config.scaling_factor == c9.vae.config.scaling_factor != 0.13025


def test_altered_or_missing_file_is_named(exported: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(exported / "export", root)
    assert verify_pretrained_files("tiny-sdxl-pretrained", root)
    vae = root / "tiny-sdxl-inpaint-pretrained" / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(vae.read_bytes())
    data[-1] ^= 0xFF
    vae.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"vae/diffusion_pytorch_model\.safetensors: sha256 .* recorded"):
        pretrained_model_path("tiny-sdxl-pretrained", tmp_path / "cache", root=root)
    (root / "tiny-sdxl-pretrained" / "unet" / "conv_in.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"conv_in\.safetensors: missing"):
        verify_pretrained_files("tiny-sdxl-pretrained", root)
    with pytest.raises(ModelLoadError, match="unknown pretrained model 'nope'.*tiny-sdxl-pretrained"):
        pretrained_model_path("nope")


def test_a_unet_stage_can_continue_a_previous_one(exported: Path) -> None:
    first = json.loads((exported / "unet_metrics.json").read_text())
    args = ["--out", str(exported), "--stage", "unet", "--unet-continue", "--size", "32", "--unet-steps", "1",
            "--unet-batch", "2", "--validation-count", "4"]
    assert main(args) == 0
    second = json.loads((exported / "unet_metrics.json").read_text())
    assert second["steps"] == 1
    assert [stage["steps"] for stage in second["previous_stages"]] == [first["steps"]]
    # it started from the first stage's weights, not from the random ones
    for key, value in first["validation_loss"].items():
        assert second["validation_loss_before"][key] == pytest.approx(value, rel=1e-5)
