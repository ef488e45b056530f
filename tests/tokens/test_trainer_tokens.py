"""LoRA + token through the Trainer: the embedding file is exported and resume is bit-exact.

Skipped until furlora/train/trainer.py calls furlora.tokens.prepare_tokens (issue 8 integration).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _trainer_module():
    import furlora.train.trainer as trainer

    if "prepare_tokens" not in Path(trainer.__file__).read_text(encoding="utf-8"):
        pytest.skip("the trainer does not add learned tokens yet")
    return trainer


def _config(out: Path, steps: int = 4):
    from furlora.config import load_config

    return load_config(
        ROOT / "configs" / "tiny-cpu-lora-token.yaml",
        [
            f"data.path={ROOT / 'datasets' / 'spitz-fur' / 'train'}",
            f"output_dir={out}",
            f"train.max_steps={steps}",
            "data.resolution=64",
            "train.checkpoint.every_n_steps=2",
            "train.checkpoint.asynchronous=false",
            "train.log.tensorboard=false",
            "train.log.progress_bar=false",
        ],
    )


class _Stop(Exception):
    pass


def _stop_at_2(trainer):
    if trainer.global_step == 2:
        raise _Stop


def test_lora_plus_token_resume_through_the_trainer_is_bit_exact(tmp_path, model_cache):
    module = _trainer_module()
    straight = module.Trainer(_config(tmp_path / "a"), resume="never")
    start = {e: straight.tokens.rows[e].detach().clone() for e in ("text_encoder", "text_encoder_2")}
    straight.fit()

    interrupted = module.Trainer(_config(tmp_path / "b"), resume="never", callbacks=[_stop_at_2])
    with pytest.raises(_Stop):
        interrupted.fit()
    resumed = module.Trainer(_config(tmp_path / "b"), resume="auto")
    resumed.fit()
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("step-00000002")

    for enc in ("text_encoder", "text_encoder_2"):
        assert not torch.equal(straight.tokens.rows[enc].detach(), start[enc])  # the token trained
        assert torch.equal(resumed.tokens.rows[enc].detach(), straight.tokens.rows[enc].detach())
    a, b = straight.manager.lora_state_dict(), resumed.manager.lora_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    files = [k for k in straight.files if k.startswith("embedding")]
    assert files, f"no embedding file exported: {straight.files}"
    ea, eb = load_file(straight.files[files[0]]), load_file(resumed.files[files[0]])
    assert sorted(ea) == ["clip_g", "clip_l"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
