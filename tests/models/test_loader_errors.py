"""The loader's errors: each names the path and what was expected, before weights load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from furlora.errors import FurloraError, ModelLoadError
from furlora.models.sdxl import inspect_model_folder, load_sdxl


@pytest.fixture()
def model_copy(tiny_sdxl: Path, tmp_path: Path) -> Path:
    target = tmp_path / "my model"  # a space in the path on purpose
    shutil.copytree(tiny_sdxl, target)
    return target


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_sdxl(missing)
    assert str(missing) in str(info.value)
    assert "tiny-sdxl" in str(info.value)  # says what would work


def test_missing_component_is_listed(model_copy):
    shutil.rmtree(model_copy / "vae")
    with pytest.raises(ModelLoadError) as info:
        load_sdxl(model_copy)
    msg = str(info.value)
    assert "missing component vae" in msg
    assert str(model_copy / "vae" / "config.json") in msg


def test_every_missing_component_reported_together(model_copy):
    shutil.rmtree(model_copy / "vae")
    shutil.rmtree(model_copy / "scheduler")
    with pytest.raises(ModelLoadError) as info:
        inspect_model_folder(model_copy)
    assert "missing component vae" in str(info.value)
    assert "missing component scheduler" in str(info.value)
    assert "2 problems" in str(info.value)


def test_sd15_like_folder_is_not_sdxl(model_copy):
    index = json.loads((model_copy / "model_index.json").read_text())
    index.pop("text_encoder_2")
    index.pop("tokenizer_2")
    index["_class_name"] = "StableDiffusionPipeline"
    (model_copy / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(model_copy / "text_encoder_2")
    shutil.rmtree(model_copy / "tokenizer_2")
    with pytest.raises(ModelLoadError, match="not an SDXL model") as info:
        load_sdxl(model_copy)
    assert str(model_copy) in str(info.value)
    assert "one text encoder" in str(info.value)


def test_sd15_like_folder_without_model_index(model_copy):
    (model_copy / "model_index.json").unlink()
    shutil.rmtree(model_copy / "text_encoder_2")
    with pytest.raises(ModelLoadError, match="SD 1.x/2.x, not SDXL"):
        load_sdxl(model_copy)


def test_wrong_unet_conditioning_is_not_sdxl(model_copy):
    config_file = model_copy / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["addition_embed_type"] = None
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="text_time") as info:
        load_sdxl(model_copy)
    assert str(config_file) in str(info.value)


def test_truncated_safetensors_is_reported_with_its_path(model_copy):
    weights = model_copy / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as info:
        load_sdxl(model_copy)
    assert str(weights) in str(info.value)


def test_garbage_safetensors_header(model_copy):
    weights = model_copy / "text_encoder_2" / "model.fp16.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelLoadError, match="corrupt") as info:
        load_sdxl(model_copy)
    assert str(weights) in str(info.value)


def test_pickle_weights_are_refused(model_copy):
    weights = model_copy / "vae" / "diffusion_pytorch_model.fp16.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="pickle files are not loaded"):
        load_sdxl(model_copy)


def test_single_file_checkpoint_gets_a_conversion_hint(tmp_path):
    file = tmp_path / "sd_xl_base_1.0.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="from_single_file"):
        load_sdxl(file)


def test_uncached_hub_id_offline_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache") as info:
        load_sdxl("stabilityai/stable-diffusion-xl-base-1.0")
    assert "local diffusers-format folder" in str(info.value)


def test_bad_dtype_names_the_key(tiny_sdxl):
    with pytest.raises(ModelLoadError, match="model.dtype 'fp8'"):
        load_sdxl(tiny_sdxl, dtype="fp8")


def test_errors_are_also_builtin_errors():
    assert issubclass(ModelLoadError, OSError)
    assert issubclass(ModelLoadError, FurloraError)
