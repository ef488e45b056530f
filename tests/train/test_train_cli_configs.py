"""`furlora train` / `furlora demo`, the shipped training configs, and the trainer's import direction."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from furlora.cli.main import main
from furlora.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["tiny-cpu", "sdxl-12gb", "sdxl-16gb", "sdxl-24gb", "sdxl-inpainting", "paper-table1"]
FAST = [
    f"data.path={ROOT / 'datasets' / 'spitz-fur' / 'train'}",
    "data.resolution=64",
    "train.log.progress_bar=false",
    "train.log.tensorboard=false",
]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_loads(name: str) -> None:
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config.name and config.train.max_steps >= 100


def test_paper_table1_config() -> None:
    c = load_config(ROOT / "configs" / "paper-table1.yaml")
    assert (c.lora.unet.rank, c.lora.unet.alpha, c.data.resolution) == (16, 32.0, 512)
    assert (c.train.batch_size, c.train.gradient_accumulation_steps, c.train.learning_rate) == (1, 4, 5e-5)
    assert (c.train.optimizer, c.train.max_grad_norm, c.train.max_steps) == ("adamw8bit", 0.5, 1000)
    assert (c.train.checkpoint.every_n_steps, c.seed) == (200, 42)


def test_demo_trains_at_the_pixel_scale_its_comparison_repaints() -> None:
    """The comparison repaints the held-out images at their own size; resized to data.resolution
    without zoom, the LoRA would learn fur at half the scale it repaints (README, demo runs 2 and 7)."""
    import numpy as np
    from PIL import Image

    from furlora.data.transforms import plan_geometry

    c = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    assert not any(p.crop_to_mask or p.tile or p.working_resolution for p in c.eval.passes)
    bucket = (c.data.resolution, c.data.resolution)
    images = sorted((ROOT / "datasets" / "spitz-fur").glob("*/dog_*[0-9].png"))
    assert len(images) == 32
    for image in images:
        w, h = Image.open(image).size
        g = plan_geometry((h, w), bucket, c.data.augment, np.random.default_rng(0))
        assert g.resized_size == (h, w), f"{image.name}: trained at {g.resized_size[0] / h:.2f}x its pixel scale"


def test_train_command_trains_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ROOT / "configs" / "tiny-cpu.yaml"
    args = ["train", str(config), "--set", f"output_dir={tmp_path}", "--set", "train.max_steps=2",
            "--set", "train.lr_warmup_steps=0", "--set", "train.validation.path=null",
            # A constant rate: raising max_steps of a cosine run would change its schedule (refused).
            "--set", "train.lr_scheduler=constant", *sum((["--set", o] for o in FAST), [])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained 'tiny-spitz-fur': step 2/2 (inpaint objective" in out
    assert (tmp_path / "lora" / "tiny-spitz-fur.kohya.safetensors").is_file()
    args[args.index("train.max_steps=2")] = "train.max_steps=3"
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((tmp_path / "train_summary.json").read_text())["global_step"] == 3


def test_bad_input_fails_before_weights_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ROOT / "configs" / "tiny-cpu.yaml"
    assert main(["train", str(config), "--set", "train.learnin_rate=1"]) == 2
    assert "train.learnin_rate: unknown key; did you mean 'learning_rate'" in capsys.readouterr().err
    assert main(["train", str(config), "--resume", str(tmp_path / "nope")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(config), "--set", f"output_dir={tmp_path}", "--set", "model.source=tiny-sdxl"]) == 2
    assert "needs a 9-channel inpainting UNet" in capsys.readouterr().err


def test_demo_writes_lora_files_summary_and_both_losses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["train.max_steps=3", "train.lr_warmup_steps=0", "train.validation.max_samples=1",
            "train.validation.num_images=1", "train.validation.image_steps=1",
            "eval.max_images=1", "eval.passes=[{steps: 1}]", *FAST]
    assert main(["demo", "--output", str(tmp_path), *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out
    assert "masked validation loss: LoRA" in out and "base model" in out
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["val_loss"] is not None and summary["val_loss_base"] is not None
    assert Path(summary["lora_files"]["diffusers"]).is_file() and Path(summary["lora_files"]["kohya"]).is_file()
    assert Path(summary["comparison_report"]).is_file()
    # base vs LoRA per region, the count of improved images, and the grid to open first
    assert "demo: held-out inpainting, base model ('off') vs LoRA, mean of 1 images, inside each region:" in out
    for region in ("all", "face", "chest", "tail", "paws"):
        assert re.search(rf"^  {region} +PSNR dB: off [\d.]+, \S+@1 [\d.]+ \([+-][\d.e-]+\)$", out, re.M), region
    assert re.search(r"^  all +colour error \(deltaE of mean Lab\): off [\d.]+, ", out, re.M)
    assert re.search(r"beats the base model on [01] of 1 held-out images \(masked PSNR\); colour error lower on [01] of 1", out)
    grid = re.search(r"^demo: open first: (\S+\.png) ", out, re.M)
    assert grid and Path(grid.group(1)).is_file() and Path(grid.group(1)).parent.name == "grids"
    assert set(summary["comparison"]["off"]) >= {"psnr", "ssim", "colour_error", "delta_e"}


def test_train_package_never_imports_eval_or_cli() -> None:
    for file in (ROOT / "furlora" / "train").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("furlora.eval", "furlora.cli")), f"{file.name} imports {name}"
