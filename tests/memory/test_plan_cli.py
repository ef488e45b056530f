"""`furlora plan`: table, verdict, JSON, --suggest, chart, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from furlora.cli.main import main


@pytest.fixture()
def config_file(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"model": {"source": "tiny-sdxl-inpaint"}, "data": {"resolution": 256},
                                    "train": {"batch_size": 2}}))
    return file


def test_plan_prints_breakdown_and_verdict(config_file, capsys):
    assert main(["plan", str(config_file), "--gpu-memory", "16GB"]) == 0
    out = capsys.readouterr().out
    for text in ("UNet weights", "LoRA weights", "optimizer state", "UNet training step (activations)",
                 "CUDA context and kernels", "total (estimated peak)", "verdict: FITS in 16.00 GiB GPU"):
        assert text in out


def test_plan_exit_1_when_it_does_not_fit(config_file, capsys):
    assert main(["plan", str(config_file), "--gpu-memory", "256MB"]) == 1
    assert "verdict: DOES NOT FIT in 256.00 MiB GPU" in capsys.readouterr().out


def test_plan_json_and_chart(config_file, tmp_path, capsys):
    chart = tmp_path / "plan.png"
    assert main(["plan", str(config_file), "--gpu-memory", "12GB", "--json", "--chart", str(chart),
                 "--set", "train.gradient_checkpointing=true"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is True and data["capacity_bytes"] == 12 * 2**30
    assert data["input"]["gradient_checkpointing"] is True and data["input"]["batch_size"] == 2
    assert data["total_bytes"] == sum(r["bytes"] for r in data["resident"] + data["overhead"]) + \
        data["phases"][data["peak_phase"]]["bytes"]
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 300
        assert len(image.convert("RGB").getcolors(100_000)) > 5  # bars in several colours, not blank


def test_plan_suggest_writes_a_config_that_fits(config_file, tmp_path, capsys):
    main(["plan", str(config_file), "--json"])
    total = json.loads(capsys.readouterr().out)["total_bytes"]
    budget = f"{(total - 2**20) / 2**20:.0f}MB"  # just too small as configured
    suggested = tmp_path / "suggested.yaml"
    assert main(["plan", str(config_file), "--gpu-memory", budget, "--suggest", "--write-config", str(suggested)]) == 0
    out = capsys.readouterr().out
    assert "suggestion (cheapest changes that fit), in order:" in out and "apply with: --set" in out
    assert main(["plan", str(suggested), "--gpu-memory", budget]) == 0
    assert "verdict: FITS" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu-memory", "banana"], "--gpu-memory 'banana' is not a memory size; give a number with a unit, e.g. 12GB"),
    (["--gpu-memory", "16"], "is not a memory size"),
    (["--suggest"], "--suggest needs --gpu-memory SIZE"),
    (["--architecture", "sdxxl"], "architecture 'sdxxl' is neither one of sdxl-meta"),
    (["--set", "train.optimizer=sgd"], "train.optimizer"),
])
def test_bad_input_gives_one_clear_error(config_file, capsys, args, message):
    assert main(["plan", str(config_file), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("furlora: error:") and message in err and "Traceback" not in err


def test_model_not_available_locally_asks_for_an_architecture(tmp_path, capsys):
    file = tmp_path / "hub.yaml"
    file.write_text("model:\n  source: someone/private-sdxl-finetune\n")
    assert main(["plan", str(file), "--gpu-memory", "16GB"]) == 2
    assert "--architecture sdxl-meta" in capsys.readouterr().err
