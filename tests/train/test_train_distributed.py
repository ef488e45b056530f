"""Two CPU processes (torchrun, gloo): train, resume from the run's own checkpoint, match a straight run;
SIGTERM to one rank stops both after the same step with a checkpoint, and the resume matches too."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from furlora.train.checkpoint import list_checkpoints, read_checkpoint
from test_run_safety import RARE, Lines
from test_train_exact_resume import write_config

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _torchrun_command() -> list[str]:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", "--nproc_per_node", "2"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


def _torchrun(config: Path, output: Path, max_steps: int) -> dict:
    result = subprocess.run(
        [*_torchrun_command(), "-m", "furlora.cli.main", "train", str(config), "--set", f"train.max_steps={max_steps}"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads((output / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """Two processes, 6 steps without interruption: the reference of both tests."""
    base = tmp_path_factory.mktemp("straight")
    config = write_config(base / "straight.yaml", base / "run", max_steps=6)
    summary = _torchrun(config, base / "run", 6)
    assert summary["processes"] == 2 and summary["ended"] == "completed"
    return base / "run"


def _assert_lora_equal(straight: Path, other: Path) -> None:
    a = read_checkpoint(straight / "checkpoints" / "step-00000006")
    b = read_checkpoint(other / "checkpoints" / "step-00000006")
    assert a.lora.keys() == b.lora.keys()
    for key in a.lora:
        assert torch.equal(a.lora[key], b.lora[key]), key
    assert a.meta["stream"] == b.meta["stream"]


# Not marked slow on purpose: the distributed path is part of every CI run (about 40-60 s).
def test_two_processes_train_resume_and_match_a_straight_run(tmp_path: Path, straight: Path) -> None:
    resumed_cfg = write_config(tmp_path / "resumed.yaml", tmp_path / "resumed", max_steps=6)
    first = _torchrun(resumed_cfg, tmp_path / "resumed", 3)
    assert first["processes"] == 2 and first["global_step"] == 3
    second = _torchrun(resumed_cfg, tmp_path / "resumed", 6)
    assert second["resumed_from"].endswith("step-00000003") and second["global_step"] == 6
    _assert_lora_equal(straight, tmp_path / "resumed")
    a = read_checkpoint(straight / "checkpoints" / "step-00000006")
    b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "step-00000006")
    # Each optimizer step consumed one batch per process: 6 steps x 2 processes = 12 batches.
    from furlora.config import load_config
    from furlora.data.buckets import BucketBatchSampler
    from furlora.train.setup import build_dataset

    per_epoch = len(BucketBatchSampler(build_dataset(load_config(resumed_cfg)), 2, 0))
    usable = per_epoch - per_epoch % 2
    assert b.meta["stream"] == a.meta["stream"]
    stream = b.meta["stream"]
    assert stream["epoch"] * usable + stream["position"] == 12


def _worker_pid(launcher: int, rank: int) -> int:
    """The PID of the torchrun worker of ``rank`` (a child of the launcher with RANK=rank; Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), None)
        if parent == str(launcher) and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_sigterm_on_one_rank_stops_both_after_the_same_step_and_resumes_exactly(tmp_path: Path, straight: Path) -> None:
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", max_steps=6, checkpoint=RARE)
    after = random.randint(1, 2)
    launcher = subprocess.Popen(
        [*_torchrun_command(), str(HERE / "train_runner.py"), str(config), "--cli", "--announce-steps"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = Lines(launcher)
        lines.wait_for(f"furlora-test: rank 1 step {after}")
        os.kill(_worker_pid(launcher.pid, 1), signal.SIGTERM)  # rank 1 only; rank 0 hears of it in the all-reduce
        output = lines.finish(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    stopped = summary["global_step"]
    assert summary["ended"] == "signal" and summary["stop_signal"] == "SIGTERM" and summary["processes"] == 2, output[-4000:]
    assert after <= stopped < 6, output[-4000:]
    assert output.count("furlora: SIGTERM received: finishing the current step") == 1  # only rank 1 was signalled
    assert (f"stopped by SIGTERM after step {stopped} of 6; checkpoint step-{stopped:08d} in "
            f"{tmp_path / 'run' / 'checkpoints'}") in output
    assert launcher.returncode != 0  # torchrun reports the stopped workers (exit 143) as failed
    # One checkpoint, at the step both ranks agreed on (had they not, the all-reduce of the next step would
    # hang, and the stream position compared after the resume would differ from the straight run's).
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == [f"step-{stopped:08d}"]
    resumed = _torchrun(config, tmp_path / "run", 6)
    assert resumed["resumed_from"].endswith(f"step-{stopped:08d}") and resumed["ended"] == "completed"
    _assert_lora_equal(straight, tmp_path / "run")
