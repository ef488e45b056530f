"""The training-time validation images callback, with a live LoraAdapters."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from eval_helpers import box_mask, fast_settings, textured_image
from furlora.errors import EvaluationError
from furlora.eval.samples import EvalSample
from furlora.eval.validation_images import ValidationImages
from furlora.train.settings import ValidationSettings


def test_callback_renders_every_n_steps_with_and_without_the_lora(tiny_sdxl_inpaint, tmp_path):
    from furlora.lora.adapters import LoraAdapters
    from furlora.lora.settings import LoraSettings
    from furlora.models.sdxl import load_sdxl

    components = load_sdxl(tiny_sdxl_inpaint)
    manager = LoraAdapters({"unet": components.unet}, LoraSettings())
    manager.apply()
    with torch.no_grad():
        for name, param in components.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    components.unet.train()
    sample = EvalSample("dog", textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48), "white fur")
    callback = ValidationImages(fast_settings(), ValidationSettings(every_n_steps=2), samples=[sample], out_dir=tmp_path)
    trainer = SimpleNamespace(components=components, global_step=1, output_dir=tmp_path, manager=manager, is_main=True)
    callback(trainer)
    assert not list(tmp_path.iterdir())  # step 1: not a validation step
    trainer.global_step = 2
    callback(trainer)
    grid, table = tmp_path / "step_000002_dog.png", tmp_path / "step_000002.json"
    assert grid.is_file() and table.is_file()
    metrics = json.loads(table.read_text())["samples"]["dog"]
    assert metrics["drift_max"] == 0.0 and metrics["mask_pixels"] == 32 * 32
    assert components.unet.training  # training mode restored
    from PIL import Image

    width = Image.open(grid).size[0]
    assert width == 6 + 4 * (256 + 6)  # input, mask, LoRA off, step 2
    entry = callback.render(components, 3, tmp_path)
    with manager.disabled():
        off = callback.render(components, 4, tmp_path / "off")
    assert entry["samples"]["dog"]["psnr"] != off["samples"]["dog"]["psnr"]


def test_validation_needs_images():
    with pytest.raises(EvaluationError, match="train.validation.path is not set"):
        ValidationImages(fast_settings())
