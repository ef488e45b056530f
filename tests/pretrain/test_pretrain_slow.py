"""A short real pretraining budget: the losses must fall (opt-in: ``--run-slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from furlora.pretrain.__main__ import main


@pytest.mark.slow
def test_short_pretraining_budget_learns(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--size", "64", "--vae-steps", "150", "--vae-batch", "4",
            "--unet-steps", "150", "--unet-batch", "8", "--validation-count", "16"]
    assert main(args) == 0
    vae = json.loads((tmp_path / "vae_metrics.json").read_text())
    unet = json.loads((tmp_path / "unet_metrics.json").read_text())
    assert vae["steps"] == 150 and unet["steps"] == 150
    assert vae["loss_last_50"] < vae["loss_first_50"], vae
    assert vae["psnr_db"] > vae["psnr_before_db"] + 2, vae
    for key in ("base", "inpaint", "inpaint_masked"):
        assert unet["validation_loss"][key] < 0.8 * unet["validation_loss_before"][key], unet
    assert unet["loss_last_100"] < unet["loss_first_100"], unet
    assert (tmp_path / "export" / "manifest.json").is_file()
