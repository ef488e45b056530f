"""One function picks the device and dtypes (furlora.models.device), and every caller uses it.

The CUDA branches run here with ``torch.cuda.is_available`` faked to True: nothing is allocated
on a GPU, the tests check which device each caller asks for.
"""

from __future__ import annotations

import pytest
import torch

from furlora.errors import ConfigError
from furlora.models.device import autocast_dtype, pick_device, placement, torch_dtype


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine with one CUDA device, as far as furlora can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_takes_the_gpu_when_present(fake_gpu):
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device(None) == torch.device("cuda")
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto", cpu_only=True) == torch.device("cpu")  # train.cpu wins


def test_auto_is_the_cpu_without_an_accelerator(no_gpu):
    assert pick_device("auto") == torch.device("cpu")


def test_asking_for_a_missing_gpu_names_the_setting(no_gpu):
    with pytest.raises(ConfigError, match=r"--device: 'cuda' but no CUDA GPU is visible; use auto or cpu"):
        pick_device("cuda", key="--device")
    with pytest.raises(ConfigError, match="eval.device: 'mps'"):
        pick_device("mps")


def test_bad_device_names(fake_gpu):
    with pytest.raises(ConfigError, match=r"eval.device: 'gpu' is not a device; write auto, cpu, cuda, cuda:N or mps"):
        pick_device("gpu")
    with pytest.raises(ConfigError, match=r"'cuda:2' but this machine has 1 CUDA device"):
        pick_device("cuda:2")


def test_dtype_rules():
    where = placement("cpu", "bf16")
    assert (where.device, where.dtype, where.vae_dtype) == (torch.device("cpu"), torch.bfloat16, torch.float32)
    assert placement("cpu", "fp16", "fp16").vae_dtype == torch.float16
    assert autocast_dtype("no") is None and autocast_dtype("bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="model.vae_dtype: 'fp8' is not one of fp32, fp16, bf16"):
        torch_dtype("fp8", "model.vae_dtype")


def test_the_trainer_accelerator_asks_the_same_function(fake_gpu, monkeypatch, tmp_path):
    import accelerate

    from furlora.config import load_config
    from furlora.train.setup import build_accelerator

    seen = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kw: seen.append(kw["cpu"]))
    build_accelerator(load_config(None, [f"output_dir={tmp_path}", "train.cpu=false"]))
    build_accelerator(load_config(None, [f"output_dir={tmp_path}", "train.cpu=true"]))
    assert seen == [False, True]


def test_evaluation_loads_on_the_picked_device_with_the_trainers_dtypes(monkeypatch, tiny_sdxl_inpaint):
    """eval.device auto on a GPU machine loads onto cuda; UNet / text encoders in model.dtype, VAE fp32."""
    import furlora.models.sdxl as sdxl
    from furlora.eval.compare import prepare_inpainter
    from furlora.eval.settings import EvalSettings

    real_load = sdxl.load_sdxl
    calls = []

    def recording_load(source, **kwargs):
        calls.append(kwargs)
        with monkeypatch.context() as real_machine:  # the weights load on this machine's CPU
            real_machine.setattr(torch.cuda, "is_available", lambda: False)
            return real_load(source, dtype=kwargs["dtype"], vae_dtype=kwargs["vae_dtype"])

    monkeypatch.setattr(sdxl, "load_sdxl", recording_load)
    real_load(tiny_sdxl_inpaint)  # diffusers' lazy imports resolve before the GPU is faked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    settings = EvalSettings(progress=False)
    inpainter = prepare_inpainter(str(tiny_sdxl_inpaint), [], settings, dtype="bf16", prediction_type="v_prediction")
    assert calls[-1]["device"] == torch.device("cuda")
    assert (calls[-1]["dtype"], calls[-1]["vae_dtype"]) == ("bf16", "fp32")
    assert inpainter.pipeline.unet.dtype == torch.bfloat16 and inpainter.pipeline.vae.dtype == torch.float32
    # A forced prediction type (train.prediction_type) reaches the evaluation's scheduler.
    assert inpainter.pipeline.scheduler.config.prediction_type == "v_prediction"
    prepare_inpainter(str(tiny_sdxl_inpaint), [], settings.model_copy(update={"device": "cpu"}))
    assert calls[-1]["device"] == torch.device("cpu")


def test_cli_device_option_is_checked_before_weights_load(no_gpu, tiny_sdxl_inpaint, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from furlora.cli.main import main

    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    hole = np.zeros((64, 64), np.uint8)
    hole[16:48, 16:48] = 255
    Image.fromarray(hole).save(mask)
    code = main(["inpaint", "--model", str(tiny_sdxl_inpaint), "--image", str(image), "--mask", str(mask),
                 "--out", str(tmp_path / "out.png"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "--device: 'cuda' but no CUDA GPU is visible" in err
    code = main(["compare", "--model", str(tiny_sdxl_inpaint), "--image", str(image), "--mask", str(mask),
                 "--out", str(tmp_path / "cmp"), "--set", "eval.device=cuda:0"])
    assert code == 2 and "eval.device: 'cuda:0' but no CUDA GPU is visible" in capsys.readouterr().err


def test_no_other_module_decides_whether_a_gpu_is_there():
    """Device choices go through furlora.models.device; train/rng.py only saves / restores CUDA RNG state."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "furlora"
    allowed = {"models/device.py", "train/rng.py"}
    asking = sorted(
        str(f.relative_to(package)) for f in package.rglob("*.py")
        if ("cuda.is_available" in f.read_text(encoding="utf-8") or "mps.is_available" in f.read_text(encoding="utf-8"))
    )
    assert [f for f in asking if f not in allowed] == []
