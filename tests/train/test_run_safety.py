"""Run safety: one run per folder (an OS lock), a checkpoint on SIGTERM / Ctrl-C, a time budget.

The signal tests run ``furlora train`` in a subprocess (tests/train/train_runner.py --cli) with
no periodic checkpoint before the signal (every_n_steps 50, as in the report that a SIGTERM at
step 12 left nothing), send the signal at a random moment of a random early step, then resume
in this process and compare with a straight run bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from furlora.config import load_config
from furlora.errors import ConfigError, RunLockedError
from furlora.run_lock import LOCK_NAME, acquire_run_lock
from furlora.train.checkpoint import list_checkpoints, verify_checkpoint
from furlora.train.resume import select_checkpoint
from furlora.train.stop import REPEAT_WINDOW_S, TIME_BUDGET_EXIT, StopDecision
from test_train_exact_resume import write_config
from train_helpers import assert_same_training, tiny_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS = 8
#: No periodic checkpoint within the run: only the stop writes one.
RARE = {"every_n_steps": 50, "keep_last": 3, "asynchronous": True}
HOLDER = (
    "import sys; from furlora.run_lock import acquire_run_lock; acquire_run_lock(sys.argv[1]); "
    "print('held', flush=True); sys.stdin.read()"
)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")


def _hold(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s run lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


class Lines:
    """The merged stdout/stderr of a subprocess, read line by line in a thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never printed {text!r}; output:\n" + "".join(self.seen)[-4000:])

    def finish(self, timeout: float = 300) -> str:
        self.process.wait(timeout)
        while True:
            line = self._queue.get(timeout=30)
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)


def _runner(config: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "train_runner.py"), str(config), "--cli", "--announce-steps", *flags],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _complete(folder: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(folder) if (p / "COMPLETE.json").is_file()]


# ----------------------------------------------------------------------------- the run lock

def test_a_second_run_on_a_locked_folder_stops_before_loading_anything_and_names_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from furlora.train import setup as setup_module, trainer as trainer_module

    folder = tmp_path / "run"
    holder = _hold(folder)
    try:
        touched: list[str] = []
        monkeypatch.setattr(setup_module, "preflight", lambda *a, **k: touched.append("preflight"))
        monkeypatch.setattr(setup_module, "load_components", lambda *a, **k: touched.append("weights"))
        with pytest.raises(RunLockedError) as error:
            trainer_module.Trainer(tiny_config(folder))
        message = str(error.value)
        assert re.search(
            rf"output_dir {re.escape(str(folder))} is in use by another furlora run: PID {holder.pid} on host "
            rf"{re.escape(socket.gethostname())}, started at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d", message
        ), message
        assert "Wait for that run to finish" in message and "another output_dir (--set output_dir=...)" in message
        assert touched == []  # no dataset read, no weights loaded

        # What a user sees: one line on stderr, exit status 2, for `furlora train`, `demo` and `cache` alike.
        config = write_config(tmp_path / "run.yaml", folder)
        for command in (["train", str(config)], ["demo", "--output", str(folder)], ["cache", str(config)]):
            result = subprocess.run(
                [sys.executable, "-m", "furlora.cli.main", *command], env=_env(), capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 2, result.stdout + result.stderr
            assert result.stderr.startswith(f"furlora: error: output_dir {folder} is in use by another furlora run: PID {holder.pid} ")
            assert "Traceback" not in result.stderr
    finally:
        holder.stdin.close()
        holder.wait(30)
    # The holder ended normally: the folder is free again.
    acquire_run_lock(folder).release()


def test_a_lock_left_by_a_sigkilled_run_is_free_and_reentrant_in_one_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "run"
    holder = _hold(folder)
    holder.kill()  # SIGKILL: no cleanup ran, the file still names the dead holder
    holder.wait(30)
    assert f'"pid": {holder.pid}' in (folder / LOCK_NAME).read_text()
    with caplog.at_level(logging.INFO, logger="furlora.run_lock"):
        first = acquire_run_lock(folder)
    assert f"the previous run (PID {holder.pid} on host" in caplog.text and "taking it over" in caplog.text
    assert f'"pid": {os.getpid()}' in (folder / LOCK_NAME).read_text()
    second = acquire_run_lock(folder)  # the same process again (the demo around its trainer): counted
    probe = [sys.executable, "-c", "import sys; from furlora.run_lock import acquire_run_lock; acquire_run_lock(sys.argv[1])", str(folder)]
    first.release()
    blocked = subprocess.run(probe, env=_env(), capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and f"PID {os.getpid()} on host" in blocked.stderr  # still held once
    second.release()
    assert (folder / LOCK_NAME).read_text() == ""  # released: nobody named
    assert subprocess.run(probe, env=_env(), capture_output=True, timeout=120).returncode == 0


# ----------------------------------------------------------------------------- signals

@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """The reference: the same config trained STEPS steps without interruption (in this process)."""
    from furlora.train.trainer import Trainer

    base = tmp_path_factory.mktemp("straight")
    config = write_config(base / "straight.yaml", base / "run", max_steps=STEPS, checkpoint=RARE)
    summary = Trainer(load_config(config), resume="never").fit()
    assert summary["ended"] == "completed" and summary["stop_signal"] is None
    return base / "run"


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_current_step_and_the_resume_is_bit_exact(
    tmp_path: Path, straight: Path, name: str
) -> None:
    from furlora.train.trainer import Trainer

    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    after, delay = rng.randint(1, 3), rng.uniform(0.0, 0.5)
    note = f"(random seed {seed}: signal {delay:.2f} s after step {after} was announced)"
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", max_steps=STEPS, checkpoint=RARE)
    run = _runner(config)
    lines = Lines(run)
    lines.wait_for(f"furlora-test: rank 0 step {after}")
    time.sleep(delay)
    run.send_signal(getattr(signal, name))
    output = lines.finish()
    status = 128 + int(getattr(signal, name))
    assert run.returncode == status, f"{note}\n{output[-4000:]}"

    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    stopped = summary["global_step"]
    assert summary["ended"] == "signal" and summary["stop_signal"] == name, note
    assert after <= stopped < STEPS, note
    # The only checkpoint is the one the signal wrote, at the step the run stopped after.
    assert _complete(tmp_path / "run" / "checkpoints") == [stopped], note
    assert summary["lora_files"] == {}  # a stopped run does not export
    # What the user sees (progress lines aside):
    assert f"furlora: {name} received: finishing the current step, then writing a checkpoint (send {name} again" in output
    assert (f"WARNING furlora.train.trainer: stopped by {name} after step {stopped} of {STEPS}; checkpoint "
            f"step-{stopped:08d} in {tmp_path / 'run' / 'checkpoints'}; training continues from it when run again") in output
    assert f"stopped by {name}: 'furlora-run' at step {stopped}/{STEPS} (not exported: the run is not finished)" in output
    assert f"  resume: furlora train {config}\n" in output

    resumed = Trainer(load_config(config), resume="auto").fit()
    assert resumed["resumed_from"].endswith(f"step-{stopped:08d}") and resumed["ended"] == "completed"
    assert_same_training(straight, tmp_path / "run", STEPS)


def test_a_second_signal_during_the_checkpoint_write_exits_at_once_and_keeps_the_previous_one(
    tmp_path: Path, model_cache: Path
) -> None:
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", max_steps=STEPS)  # a checkpoint every step
    checkpoints = tmp_path / "run" / "checkpoints"
    run = _runner(config, "--slow-write-step", "2")  # the write of checkpoint 2 stalls (for an hour)
    try:
        lines = Lines(run)
        lines.wait_for("furlora-test: writing checkpoint 2")
        run.send_signal(signal.SIGTERM)
        time.sleep(REPEAT_WINDOW_S + 1.0)  # later than a launcher's forwarded copy: a person's second signal
        run.send_signal(signal.SIGTERM)
        output = lines.finish(timeout=120)  # at once: long before the stalled write could end
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 128 + signal.SIGTERM, output[-4000:]
    assert "furlora: SIGTERM received: finishing the current step" in output
    assert ("furlora: second SIGTERM: exiting now without a new checkpoint (the last complete checkpoint is intact; "
            "a half-written one is removed on resume)") in output
    assert _complete(checkpoints) == [1]
    assert verify_checkpoint(checkpoints / "step-00000001") == []
    assert any(p.name.startswith(".tmp-step-00000002") for p in checkpoints.iterdir())
    state, skipped = select_checkpoint("auto", checkpoints)
    assert state is not None and state.step == 1 and skipped == []


# ----------------------------------------------------------------------------- time budget

def test_the_time_budget_stops_with_a_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from furlora.train.trainer import Trainer

    config = tiny_config(tmp_path, "train.max_steps=100000", "train.max_wall_time=20s")
    with caplog.at_level(logging.WARNING, logger="furlora.train.trainer"):
        summary = Trainer(config).fit()
    stopped = summary["global_step"]
    assert summary["ended"] == "time_budget" and summary["stop_signal"] is None
    assert 1 <= stopped < 100000
    assert _complete(tmp_path / "checkpoints")[-1] == stopped
    assert summary["lora_files"] == {}
    assert re.search(
        rf"time budget: stopped after step {stopped} of 100000, [\dhm.]+s of train.max_wall_time 20.0s used "
        r"\(another step and a checkpoint would not fit\); checkpoint " + f"step-{stopped:08d}", caplog.text
    ), caplog.text
    assert StopDecision("time_budget").exit_status == TIME_BUDGET_EXIT == 75
    assert StopDecision("signal", "SIGINT").exit_status == 130


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3h50m", 13800.0), ("90m", 5400.0), ("45s", 45.0), (5400, 5400.0), ("1d2h", 93600.0), ("03:50:00", 13800.0)],
)
def test_max_wall_time_accepts_seconds_and_durations(value: object, seconds: float) -> None:
    assert load_config(None, [f"train.max_wall_time={value}"]).train.max_wall_time == seconds


@pytest.mark.parametrize("value", ["soon", "3x", "5m3h", "h"])
def test_a_bad_max_wall_time_names_the_key_and_the_accepted_forms(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"train.max_wall_time: Value error, '{value}' is not a positive duration; "
                                          r"give seconds \(13800\) or a duration such as '3h50m', '90m'"):
        load_config(None, [f"train.max_wall_time={value}"])
