"""Checkpoint writer / reader: atomicity, checksums, retention, fallback, config refusal, full disk."""

from __future__ import annotations

import copy
import errno
import json
import os
from pathlib import Path

import pytest
import torch

from furlora.errors import CheckpointError, ConfigError, TrainingError
from furlora.train import checkpoint as ckpt
from furlora.train.checkpoint import (
    CheckpointState,
    CheckpointWriter,
    apply_retention,
    clean_stale,
    find_resumable,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from furlora.train.resume import check_compatible, config_differences, config_hash, select_checkpoint


def _state(step: int, config: dict | None = None) -> CheckpointState:
    g = torch.Generator().manual_seed(step)
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3, generator=g)).sum().backward()
    opt.step()
    config = config or {"train": {"learning_rate": 1e-4, "lr_scheduler": "constant"}, "name": "a"}
    return CheckpointState(
        step=step,
        lora={"unet.w.lora_A.weight": torch.randn(2, 3, generator=g)},
        training=copy.deepcopy({"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}}),
        meta={"stream": {"epoch": 0, "position": step}, "config": config, "config_hash": config_hash(config)},
    )


def test_roundtrip_is_exact(tmp_path: Path) -> None:
    state = _state(3)
    path = write_checkpoint(tmp_path, state)
    assert path.name == "step-00000003"
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE.json", "state.safetensors", "trainer.json"]
    back = read_checkpoint(path)
    assert back.step == 3
    assert torch.equal(back.lora["unet.w.lora_A.weight"], state.lora["unet.w.lora_A.weight"])
    exp_avg = state.training["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(back.training["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert back.meta["stream"] == {"epoch": 0, "position": 3}
    marker = json.loads((path / "COMPLETE.json").read_text())
    assert set(marker["files"]) == {"state.safetensors", "trainer.json"}


def test_interrupted_write_leaves_no_checkpoint_and_previous_intact(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _state(1))

    def crash() -> None:
        raise KeyboardInterrupt  # stands in for a kill between writing and renaming

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, _state(2), _before_rename=crash)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    assert any(p.name.startswith(".tmp-step-00000002") for p in tmp_path.iterdir())
    state, skipped = find_resumable(tmp_path)
    assert state.step == 1 and skipped == []
    assert [p.name for p in clean_stale(tmp_path)] == [f".tmp-step-00000002-{os.getpid()}"]


def test_damaged_latest_falls_back_to_previous_and_says_so(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, _state(step))
    tensors = tmp_path / "step-00000003" / "state.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last tensor byte
    tensors.write_bytes(bytes(data))
    state, skipped = select_checkpoint("auto", tmp_path)
    assert state.step == 2
    assert len(skipped) == 1 and "step-00000003/state.safetensors: checksum mismatch" in skipped[0]
    # A checkpoint folder without its marker (a copy interrupted by hand) is also skipped.
    (tmp_path / "step-00000002" / "COMPLETE.json").unlink()
    state, skipped = select_checkpoint("auto", tmp_path)
    assert state.step == 1 and "no COMPLETE.json" in skipped[1]
    # Truncated files are caught by size.
    (tmp_path / "step-00000001" / "trainer.json").write_bytes(b"xx")
    with pytest.raises(CheckpointError, match="every one is damaged") as info:
        select_checkpoint("auto", tmp_path)
    assert "trainer.json: 2 bytes" in str(info.value)


def test_rewriting_a_damaged_step_replaces_it(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, _state(1))
    (tmp_path / "step-00000001" / "trainer.json").write_text("{}")
    write_checkpoint(tmp_path, _state(1))
    assert read_checkpoint(tmp_path / "step-00000001").step == 1


def test_retention_keeps_newest_complete_and_deletes_after_new_is_complete(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path, keep_last=2, asynchronous=False)
    seen = []

    def observe() -> None:  # runs before step 3 is renamed into place: nothing deleted yet
        seen.append([p.name for p in list_checkpoints(tmp_path)])

    for step in (1, 2):
        writer.save(_state(step))
    writer.before_rename = observe
    writer.save(_state(3))
    assert seen == [["step-00000001", "step-00000002"]]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    writer.before_rename = None
    writer.save(_state(10))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000010"]
    assert apply_retention(tmp_path, 1)[0].name == "step-00000003"
    assert not any(p.name.startswith(".deleting") for p in tmp_path.iterdir())


def test_full_disk_keeps_previous_and_stops_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_checkpoint(tmp_path, _state(1))
    real = ckpt._write_file

    def full(path: Path, data: bytes) -> None:
        if path.name == "state.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full)
    writer = CheckpointWriter(tmp_path, keep_last=1, asynchronous=True)
    writer.save(_state(2))
    with pytest.raises(TrainingError, match="disk full") as info:
        writer.wait()
    assert "previous checkpoint step-00000001 is intact" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]
    assert read_checkpoint(tmp_path / "step-00000001").step == 1


def test_async_writer_matches_sync(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "a", keep_last=5, asynchronous=True)
    writer.save(_state(4))
    writer.wait()
    write_checkpoint(tmp_path / "b", _state(4))
    for name in ("state.safetensors", "trainer.json"):
        assert (tmp_path / "a/step-00000004" / name).read_bytes() == (tmp_path / "b/step-00000004" / name).read_bytes()


def test_config_mismatch_is_refused_with_the_keys() -> None:
    base = {"name": "a", "output_dir": "x", "train": {"learning_rate": 1e-4, "lr_scheduler": "constant", "max_steps": 10,
                                                      "checkpoint": {"every_n_steps": 1}}, "lora": {"rank": 4}}
    state = _state(1, base)
    state.path = Path("step-00000001")
    changed = json.loads(json.dumps(base))
    changed["name"] = "b"  # not training-relevant
    changed["train"]["max_steps"] = 20  # constant schedule: run length may grow
    changed["train"]["checkpoint"]["every_n_steps"] = 5
    check_compatible(state, changed)
    assert config_hash(changed) == config_hash(base)
    changed["lora"]["rank"] = 8
    changed["train"]["learning_rate"] = 2e-4
    with pytest.raises(CheckpointError) as info:
        check_compatible(state, changed)
    message = str(info.value)
    assert "lora.rank: checkpoint 4, now 8" in message
    assert "train.learning_rate: checkpoint 0.0001, now 0.0002" in message
    assert "name" not in message.split("training:")[1]
    # With a decaying schedule the run length changes the learning rates: refused.
    cosine = json.loads(json.dumps(base))
    cosine["train"]["lr_scheduler"] = "cosine"
    longer = json.loads(json.dumps(cosine))
    longer["train"]["max_steps"] = 20
    assert config_differences(cosine, longer) == ["train.max_steps: checkpoint 10, now 20"]


def test_resume_modes(tmp_path: Path) -> None:
    assert select_checkpoint("never", tmp_path / "empty") == (None, [])
    assert select_checkpoint("auto", tmp_path / "empty") == (None, [])
    write_checkpoint(tmp_path, _state(5))
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        select_checkpoint("never", tmp_path)
    assert select_checkpoint(str(tmp_path / "step-00000005"), tmp_path)[0].step == 5
    with pytest.raises(ConfigError, match="no such checkpoint folder"):
        select_checkpoint(str(tmp_path / "nope"), tmp_path)
