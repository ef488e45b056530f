"""LoRA + token through the Trainer: the embedding file is exported and resume is bit-exact.

The config trains the token for the first half of the steps (train_fraction 0.5): the run is
stopped at the cut-off step, so the resumed run must both restore the vectors and keep them frozen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _config(out: Path, steps: int = 4):
    from furlora.config import load_config

    return load_config(
        ROOT / "configs" / "tiny-cpu-lora-token.yaml",
        [
            f"data.path={ROOT / 'datasets' / 'spitz-fur' / 'train'}",
            f"train.validation.path={ROOT / 'datasets' / 'spitz-fur' / 'heldout'}",
            "train.validation.max_samples=2",
            f"output_dir={out}",
            f"train.max_steps={steps}",
            "data.resolution=64",
            "train.checkpoint.every_n_steps=2",
            "train.checkpoint.asynchronous=false",
            "train.log.tensorboard=false",
            "train.log.progress_bar=false",
            # What this test checks needs no sample pictures; one thread each under pytest -n 2.
            "train.validation.sample_images=false",
            "train.cpu_threads=1",
        ],
    )


class _Stop(Exception):
    pass


def _stop_at_2(trainer):
    if trainer.global_step == 2:
        raise _Stop


def _rows_at_2(store):
    def callback(trainer):
        if trainer.global_step == 2:
            store.update({e: trainer.tokens.rows[e].detach().clone() for e in trainer.tokens.rows})
    return callback


def test_lora_plus_token_resume_through_the_trainer_is_bit_exact(tmp_path, model_cache):
    from furlora.train import trainer as module

    at_2: dict[str, torch.Tensor] = {}
    straight = module.Trainer(_config(tmp_path / "a"), resume="never", callbacks=[_rows_at_2(at_2)])
    start = {e: straight.tokens.rows[e].detach().clone() for e in ("text_encoder", "text_encoder_2")}
    table = {e: getattr(straight.components, e).get_input_embeddings().weight.detach().clone() for e in start}
    straight.fit()

    interrupted = module.Trainer(_config(tmp_path / "b"), resume="never", callbacks=[_stop_at_2])
    with pytest.raises(_Stop):
        interrupted.fit()
    resumed = module.Trainer(_config(tmp_path / "b"), resume="auto")
    resumed.fit()
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("step-00000002")

    for enc in ("text_encoder", "text_encoder_2"):
        final = straight.tokens.rows[enc].detach()
        assert not torch.equal(final, start[enc])  # the token trained ...
        assert torch.equal(final, at_2[enc])  # ... for the first half only (train_fraction 0.5)
        assert torch.equal(resumed.tokens.rows[enc].detach(), final)
        # The encoder's table: the new rows hold the trained vectors, every other row is untouched.
        weight = getattr(resumed.components, enc).get_input_embeddings().weight.detach()
        ids = resumed.tokens.token_ids[enc]
        assert torch.equal(weight[ids], final.to(weight.dtype))
        assert torch.equal(weight[: ids[0]], table[enc][: ids[0]])
    a, b = straight.manager.lora_state_dict(), resumed.manager.lora_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    files = [k for k in straight.files if k.startswith("embedding")]
    assert files, f"no embedding file exported: {straight.files}"
    ea, eb = load_file(straight.files[files[0]]), load_file(resumed.files[files[0]])
    assert sorted(ea) == ["clip_g", "clip_l"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert torch.equal(ea["clip_l"], straight.tokens.rows["text_encoder"].detach())
    assert resumed.summary["embedding_files"] == {"spitz-fur": resumed.files[files[0]]}
    assert all(not k.startswith("embedding") for k in resumed.summary["lora_files"])
    # Validation saw the token captions too, and matches across the interruption.
    assert [v["val_loss"] for v in resumed.state.validations] == [v["val_loss"] for v in straight.state.validations]


def test_max_steps_is_training_relevant_when_the_token_stops_early():
    from furlora.train.resume import training_items

    config = {"train": {"max_steps": 10, "lr_scheduler": "constant"}, "tokens": {"enabled": True, "train_fraction": 1.0}}
    assert "train.max_steps" not in training_items(config)  # the token trains to the end, whatever the length
    config["tokens"]["train_fraction"] = 0.5
    assert training_items(config)["train.max_steps"] == 10  # the cut-off step depends on the run length
