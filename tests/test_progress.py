"""Progress in a log file or CI: whole lines at an interval, not carriage-return redraws."""

from __future__ import annotations

import io

from furlora.progress import LineProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_ten_percent_and_a_last_line():
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(300, desc="train", unit="step", file=out, clock=clock)
    for _ in range(300):
        clock.now += 0.5  # 2 steps/s: 150 s in all, 10% (30 steps) every 15 s
        bar.set_postfix(loss="0.1234", refresh=False)
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10
    assert lines[0] == "train: 30/300 (10%), 2 step/s, elapsed 00:15, ETA 02:15, loss=0.1234"
    assert lines[-1] == "train: 300/300 (100%), 2 step/s, elapsed 02:30, loss=0.1234"


def test_slow_steps_still_print_a_line_every_30_seconds():
    out, clock = io.StringIO(), _Clock()
    with LineProgress(1000, desc="compare", unit="pass", file=out, clock=clock) as bar:
        for _ in range(9):
            clock.now += 10.0
            bar.update(1)
    lines = out.getvalue().splitlines()
    # lines at 30 s, 60 s and 90 s (9 of 1000 is far below 10%), then none at close (nothing new)
    assert [line.split(",")[0] for line in lines] == ["compare: 3/1000 (0%)", "compare: 6/1000 (1%)", "compare: 9/1000 (1%)"]


def test_a_resumed_run_counts_its_rate_from_where_it_started():
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(100, desc="train", unit="step", initial=50, file=out, clock=clock)
    clock.now = 10.0
    bar.update(10)
    assert out.getvalue() == "train: 60/100 (60%), 1 step/s, elapsed 00:10, ETA 00:40\n"


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    bar = progress_bar(10, "train", "step", disable=True, file=out)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_a_terminal_gets_the_live_tqdm_bar_and_a_file_gets_lines():
    from tqdm.auto import tqdm

    live = progress_bar(10, "train", "step", file=_Terminal())
    assert isinstance(live, tqdm)
    live.close()
    assert isinstance(progress_bar(10, "train", "step", file=io.StringIO()), LineProgress)


def test_the_training_tracker_prints_lines_when_stderr_is_not_a_terminal(capsys):
    from types import SimpleNamespace

    from furlora.train.tracking import RunTracker

    accelerator = SimpleNamespace(is_main_process=True)
    tracker = RunTracker(accelerator, total_steps=20, initial_step=0, every_n_steps=1, progress_bar=True,
                         enabled_trackers=False, run_name="t", config={})
    for step in range(1, 21):
        tracker.step(step, {"loss": 0.5, "lr": 1e-3})
    tracker.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert [line.split(",")[0] for line in lines] == [f"train: {n}/20 ({5 * n}%)" for n in range(2, 21, 2)]
    assert lines[-1].endswith("loss=0.5000, lr=1.00e-03")


def test_the_dataset_check_prints_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from furlora.data.settings import DataSettings
    from furlora.data.validate import validate_dataset

    # 120 tiny images: the check shows progress from 100 images on.
    for i in range(120):
        Image.fromarray(np.full((64, 64, 3), i, np.uint8)).save(tmp_path / f"img_{i:03d}.png")
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / f"img_{i:03d}.face.png")
    validate_dataset(tmp_path, DataSettings(path=str(tmp_path), resolution=64), strict=False)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("checking dataset: ")]
    assert lines[-1].startswith("checking dataset: 120/120 (100%)")
    assert 5 <= len(lines) <= 12


def test_library_loading_bars_are_off_in_a_log_and_untouched_on_a_terminal():
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from furlora.progress import quiet_library_bars

    try:
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()
        assert quiet_library_bars(_Terminal()) is False
        assert transformers_logging.is_progress_bar_enabled()
        assert quiet_library_bars(io.StringIO()) is True
        assert not transformers_logging.is_progress_bar_enabled()
        assert not diffusers_logging.is_progress_bar_enabled()
    finally:
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()
