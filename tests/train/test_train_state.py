"""TrainState is what a checkpoint stores and a resume reads; RunSummary is typed and reads like its JSON."""

from __future__ import annotations

import json

import pytest

from furlora.train.state import RunSummary, TrainState

#: The keys of train_summary.json that the CLI, the demo and users' scripts read.
SUMMARY_KEYS = {
    "name", "global_step", "max_steps", "objective", "prediction_type", "resumed_from", "skipped_steps",
    "final_loss", "val_loss", "val_loss_base", "validations", "train_seconds", "seconds_per_step_this_run",
    "trainable_parameters", "processes", "lora_files", "embedding_files", "tokens", "checkpoint",
    "checkpoint_dir", "config_hash", "ended", "stop_signal",
}


def _summary(**changes) -> RunSummary:
    values = dict(name="run", global_step=4, max_steps=4, objective="inpaint", prediction_type="epsilon",
                  resumed_from=None, skipped_steps=1, final_loss=0.25, val_loss=0.5, val_loss_base=0.75,
                  validations=[{"step": 4, "val_loss": 0.5, "val_loss_base": 0.75}], train_seconds=3.0,
                  seconds_per_step_this_run=0.75, trainable_parameters=1024, processes=1, checkpoint="step-00000004",
                  lora_files={"diffusers": "lora/run.safetensors"}, checkpoint_dir="checkpoints",
                  embedding_files={}, tokens=[], config_hash="abc")
    values.update(changes)
    return RunSummary(**values)


def test_train_state_survives_a_checkpoint_as_json():
    state = TrainState(resolution=64)
    state.global_step = 7
    state.train_seconds = 12.5
    state.validations.append({"step": 5, "val_loss": 0.125})
    back = TrainState(resolution=64)
    back.restore(json.loads(json.dumps(state.checkpoint_meta())))
    assert (back.global_step, back.train_seconds, back.validations) == (7, 12.5, [{"step": 5, "val_loss": 0.125}])


def test_an_old_checkpoint_without_history_restores_with_defaults():
    state = TrainState()
    state.restore({"global_step": 3})
    assert (state.global_step, state.validations, state.train_seconds) == (3, [], 0.0)


def test_run_summary_has_the_json_keys_and_reads_like_the_file():
    summary = _summary()
    data = summary.to_dict()
    assert set(data) == SUMMARY_KEYS and json.loads(json.dumps(data)) == data
    assert summary["val_loss"] == summary.val_loss == 0.5 and summary.get("lora_files") == {"diffusers": "lora/run.safetensors"}
    assert dict(summary) == data and summary["ended"] == "completed" and summary["stop_signal"] is None
    assert summary.get("no_such_key") is None
    with pytest.raises(KeyError):
        summary["no_such_key"]
    with pytest.raises(AttributeError):
        summary.val_loss = 1.0  # frozen: a summary describes a finished run
