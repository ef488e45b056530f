"""The Trainer on the tiny inpainting model: NaN guard, full disk, fallback, outputs, schedules."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from furlora.errors import CheckpointError, TrainingError
from furlora.train import checkpoint as ckpt
from furlora.train.checkpoint import list_checkpoints, read_checkpoint
from furlora.train.setup import memory_advice, out_of_memory
from furlora.train.trainer import Trainer
from train_helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _poison_latents(trainer: Trainer, steps: set[int]) -> None:
    """Make the latents NaN during the given (0-based) optimizer steps."""
    real = trainer.run.encoder.latents

    def latents(pixels: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = real(pixels, *args, **kwargs)
        return out * float("nan") if trainer.global_step in steps else out

    trainer.run.encoder.latents = latents


def test_a_nonfinite_step_is_skipped_and_counted(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def record(t: Trainer) -> None:
        seen.append((t.global_step, t.last_metrics["updated"]))
        weights[t.global_step] = t.manager.lora_state_dict()

    trainer = Trainer(tiny_config(tmp_path), callbacks=[record])
    _poison_latents(trainer, {1})
    summary = trainer.fit()
    assert seen == [(1, 1.0), (2, 0.0), (3, 1.0), (4, 1.0)]
    assert summary["skipped_steps"] == 1
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # the skip changed nothing
    assert not all(torch.equal(weights[2][k], weights[3][k]) for k in weights[1])
    # No checkpoint is written at a skipped step.
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001", "step-00000003", "step-00000004"]


def test_nan_streak_stops_with_the_last_good_checkpoint_intact(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path, "train.nan_patience=2", "train.max_steps=8"))
    _poison_latents(trainer, set(range(2, 100)))
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    assert "training stopped at step 4: 2 steps in a row had a non-finite loss" in message
    assert "the last good checkpoint step-00000002 is intact" in message
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")][-1] == "step-00000002"
    good = read_checkpoint(tmp_path / "checkpoints" / "step-00000002")
    assert all(torch.isfinite(v).all() for v in good.lora.values())


def test_full_disk_stops_clearly_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ckpt._write_file

    def full_at_step_3(path: Path, data: bytes) -> None:
        if path.parent.name.startswith(".tmp-step-00000003"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full_at_step_3)
    trainer = Trainer(tiny_config(tmp_path, "train.checkpoint.asynchronous=true", "train.checkpoint.keep_last=1"))
    with pytest.raises(TrainingError, match="disk full while writing checkpoint .*step-00000003; the previous checkpoint step-00000002 is intact"):
        trainer.fit()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000002"]
    assert read_checkpoint(tmp_path / "checkpoints" / "step-00000002").step == 2


def test_damaged_newest_checkpoint_falls_back_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Trainer(tiny_config(tmp_path, "train.max_steps=3")).fit()
    (tmp_path / "checkpoints" / "step-00000003" / "state.safetensors").write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        summary = Trainer(tiny_config(tmp_path, "train.max_steps=4")).fit()
    assert summary["resumed_from"].endswith("step-00000002")
    assert "step-00000003/state.safetensors" in caplog.text and "previous complete checkpoint step-00000002" in caplog.text
    assert summary["global_step"] == 4


def test_resume_refuses_other_training_settings_and_never_refuses_old_checkpoints(tmp_path: Path) -> None:
    Trainer(tiny_config(tmp_path, "train.max_steps=1")).fit()
    with pytest.raises(CheckpointError, match=r"train.learning_rate: checkpoint 0.001, now 0.002"):
        Trainer(tiny_config(tmp_path, "train.max_steps=2", "train.learning_rate=0.002")).fit()
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        Trainer(tiny_config(tmp_path, "train.max_steps=2"), resume="never").fit()


def test_outputs_summary_ema_validation_and_resolution_schedule(tmp_path: Path) -> None:
    resolutions: list[tuple[int, tuple[int, ...]]] = []
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "train.ema.enabled=true",
            "train.validation.path=" + str(ROOT / "datasets" / "spitz-fur" / "heldout"),
            "train.validation.max_samples=2",
            "train.validation.num_images=1",
            "train.validation.image_steps=2",
            "train.resolution_schedule=[{step: 0, resolution: 64}, {step: 2, resolution: 128}]",
            "train.log.tensorboard=true",
        ),
        callbacks=[lambda t: resolutions.append((t.global_step, t.state.resolution))],
    )
    assert trainer.validate() == trainer.validate(base=True)  # LoRA B starts at zero: the base model
    summary = trainer.fit()
    assert resolutions == [(1, 64), (2, 64), (3, 128), (4, 128)]
    written = json.loads((tmp_path / "train_summary.json").read_text())
    assert written["global_step"] == 4 and written["objective"] == "inpaint"
    assert written["val_loss"] == summary["val_loss"] and written["val_loss_base"] is not None
    assert written["val_loss"] != written["val_loss_base"]
    assert trainer.validate() == summary["val_loss"]  # deterministic
    for name in ("furlora-run.diffusers", "furlora-run.kohya", "furlora-run-ema.diffusers", "furlora-run-ema.kohya"):
        assert (tmp_path / "lora" / f"{name}.safetensors").is_file(), name
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step-00000000.png", "step-00000004.png"]
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 0
    state = read_checkpoint(tmp_path / "checkpoints" / "step-00000004")
    assert state.ema is not None and state.ema.keys() == state.lora.keys()
    assert state.meta["stream"]["phase"] == 1


def test_gradient_checkpointing_trains_the_same_weights(tmp_path: Path) -> None:
    plain = Trainer(tiny_config(tmp_path / "a", "train.max_steps=2")).fit()
    ckpt_run = Trainer(tiny_config(tmp_path / "b", "train.max_steps=2", "train.gradient_checkpointing=true")).fit()
    a = read_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000002").lora
    b = read_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000002").lora
    assert any(v.abs().sum() > 0 for k, v in b.items() if "lora_B" in k)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert plain["final_loss"] == pytest.approx(ckpt_run["final_loss"], rel=1e-5)


def test_out_of_memory_names_the_next_settings_to_turn_on() -> None:
    config = tiny_config("unused", "train.batch_size=2")
    error = out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.0 GiB"), config.train, 1024)
    assert isinstance(error, TrainingError)
    text = str(error)
    for expected in ("gradient_checkpointing: true", "mixed_precision: bf16", "optimizer: adamw8bit",
                     "batch_size: 1 with train.gradient_accumulation_steps: 2", "resolution_schedule"):
        assert expected in text
    # Sliced attention keeps more activations than sdpa in training (furlora plan): never advised.
    assert "sliced" not in text
    assert out_of_memory(ValueError("other"), config.train, 512) is None
    assert "gradient_checkpointing" not in memory_advice(
        tiny_config("unused", "train.gradient_checkpointing=true").train, 512
    )


def test_start_up_log_contains_the_memory_plan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(tmp_path / "run", "train.log_memory_plan=true")
    with caplog.at_level(logging.INFO, logger="furlora"):
        Trainer(config, resume="never")
    text = caplog.text
    assert "memory plan (furlora plan):" in text
    assert "UNet training step (activations)" in text
    assert "LoRA weights" in text
    # The plan is logged before the weights load.
    assert text.index("memory plan") < text.index("loaded SDXL")
