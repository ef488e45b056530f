"""Kill at any moment + resume == an uninterrupted run, bit for bit (CPU, same seed and config).

Three subprocesses continue one run: the first is SIGKILLed from outside as soon as its second
checkpoint is complete (wherever it then is; it kills itself after step 3 if that is late), the
second SIGKILLs itself in the middle of writing checkpoint 5, the third is SIGKILLed by its
training thread while the asynchronous write of checkpoint 6 is in flight (half on disk); this
process then resumes and finishes it. Meanwhile (during the first) this process also trains the
same config straight through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from furlora.train.checkpoint import list_checkpoints
from train_helpers import assert_same_training

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS = 7


def write_config(path: Path, output: Path, **train: object) -> Path:
    config = {
        "seed": 3,
        "output_dir": str(output),
        "model": {"source": "tiny-sdxl-inpaint"},
        "data": {"path": str(ROOT / "datasets" / "spitz-fur" / "train"), "resolution": 64},
        "lora": {"unet": {"rank": 4, "alpha": 8.0, "dropout": 0.1}},
        "train": {
            "max_steps": STEPS,
            "learning_rate": 1e-3,
            "batch_size": 2,
            "full_mask_fraction": 0.3,
            "cpu": True,
            "cpu_threads": 1,
            "loss": {"floor_weight": 0.1, "noise_offset": 0.05},
            "ema": {"enabled": True, "decay": 0.9},
            "checkpoint": {"every_n_steps": 1, "keep_last": 3, "asynchronous": True},
            "log": {"progress_bar": False, "tensorboard": False},
            **train,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _runner(config: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "train_runner.py"), str(config), *flags],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _complete_steps(folder: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(folder) if (p / "COMPLETE.json").is_file()]


def _train(config: Path, resume: str) -> dict:
    from furlora.config import load_config
    from furlora.train.trainer import Trainer

    return Trainer(load_config(config), resume=resume).fit()


def test_kill_at_any_moment_then_resume_is_bit_identical(tmp_path: Path, model_cache: Path) -> None:
    killed = write_config(tmp_path / "killed.yaml", tmp_path / "killed")
    straight = write_config(tmp_path / "straight.yaml", tmp_path / "straight")
    checkpoints = tmp_path / "killed" / "checkpoints"

    # 1. Killed from outside (by a watcher thread) once two checkpoints are complete, at whatever
    #    it is doing then; as a backstop it kills itself after step 3 if the watcher is late.
    first = _runner(killed, "--kill-after-step", "3")

    def watch() -> None:
        deadline = time.monotonic() + 240
        while first.poll() is None and time.monotonic() < deadline:
            if [s for s in _complete_steps(checkpoints) if s >= 2]:
                first.send_signal(signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _train(straight, "never")  # meanwhile, the reference run in this process
    watcher.join()
    first.wait(240)
    assert first.returncode == -signal.SIGKILL, first.stdout.read().decode()[-3000:]
    reached = max(_complete_steps(checkpoints))
    assert 2 <= reached <= 3

    # 2. Resumes, then dies in the middle of writing checkpoint 5.
    second = _runner(killed, "--kill-writing-step", "5")
    out = second.communicate(timeout=240)[0].decode()
    assert second.returncode == -signal.SIGKILL, out[-3000:]
    assert max(_complete_steps(checkpoints)) == 4
    assert any(p.name.startswith(".tmp-step-00000005") for p in checkpoints.iterdir())

    # 3. Resumes from 4 (the half-written 5 is ignored and cleaned up); killed by the training
    #    thread while the background write of checkpoint 6 is in flight.
    third = _runner(killed, "--kill-while-writing", "6")
    out = third.communicate(timeout=240)[0].decode()
    assert third.returncode == -signal.SIGKILL, out[-3000:]
    assert "killing with checkpoint 6 in flight" in out
    assert max(_complete_steps(checkpoints)) == 5
    assert any(p.name.startswith(".tmp-step-00000006") for p in checkpoints.iterdir())

    # 4. Resumes from 5 (the half-written 6 is ignored and cleaned up) and finishes.
    summary = _train(killed, "auto")
    assert summary["resumed_from"].endswith("step-00000005")
    assert not any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())

    assert_same_training(tmp_path / "straight", tmp_path / "killed", STEPS)
