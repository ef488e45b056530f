"""Two CPU processes (torchrun, gloo): train, resume from the run's own checkpoint, match a straight run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from furlora.train.checkpoint import read_checkpoint
from test_train_exact_resume import write_config

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(config: Path, output: Path, max_steps: int) -> dict:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "furlora.cli.main",
         "train", str(config), "--set", f"train.max_steps={max_steps}"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads((output / "train_summary.json").read_text())


# Not marked slow on purpose: the distributed path is part of every CI run (about 40-60 s).
def test_two_processes_train_resume_and_match_a_straight_run(tmp_path: Path, model_cache: Path) -> None:
    resumed_cfg = write_config(tmp_path / "resumed.yaml", tmp_path / "resumed", max_steps=6)
    straight_cfg = write_config(tmp_path / "straight.yaml", tmp_path / "straight", max_steps=6)
    first = _torchrun(resumed_cfg, tmp_path / "resumed", 3)
    assert first["processes"] == 2 and first["global_step"] == 3
    second = _torchrun(resumed_cfg, tmp_path / "resumed", 6)
    assert second["resumed_from"].endswith("step-00000003") and second["global_step"] == 6
    straight = _torchrun(straight_cfg, tmp_path / "straight", 6)
    assert straight["processes"] == 2
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "step-00000006")
    b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "step-00000006")
    for key in a.lora:
        assert torch.equal(a.lora[key], b.lora[key]), key
    # Each optimizer step consumed one batch per process: 6 steps x 2 processes = 12 batches.
    from furlora.config import load_config
    from furlora.data.buckets import BucketBatchSampler
    from furlora.train.setup import build_dataset

    per_epoch = len(BucketBatchSampler(build_dataset(load_config(straight_cfg)), 2, 0))
    usable = per_epoch - per_epoch % 2
    assert b.meta["stream"] == a.meta["stream"]
    stream = b.meta["stream"]
    assert stream["epoch"] * usable + stream["position"] == 12
