"""Files written beside their target and renamed into place get the process umask's mode.

mkstemp creates 0600 files and mkdtemp 0700 folders; a LoRA file with mode 0600 cannot be read by
ComfyUI / A1111 running as another user. Under umask 022 every writer must give 0644 / 0755.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _lora():
    from furlora.lora.weights import LoraWeights

    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    g = torch.Generator().manual_seed(0)
    tensors = {f"{key}.lora_A.weight": torch.randn(4, 64, generator=g),
               f"{key}.lora_B.weight": torch.randn(64, 4, generator=g)}
    return LoraWeights(tensors, {key: 4.0})


def test_lora_files_take_the_umask_mode(umask_022, tmp_path):
    from furlora.lora.formats import save_diffusers_lora, save_kohya_lora

    assert _mode(save_diffusers_lora(tmp_path / "fur.safetensors", _lora())) == 0o644
    assert _mode(save_kohya_lora(tmp_path / "fur_kohya.safetensors", _lora())) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_other_umasks_are_followed_too(tmp_path):
    from furlora.lora.formats import save_diffusers_lora

    old = os.umask(0o027)
    try:
        assert _mode(save_diffusers_lora(tmp_path / "fur.safetensors", _lora())) == 0o640
    finally:
        os.umask(old)


def test_embedding_files_take_the_umask_mode(umask_022, tmp_path):
    from furlora.tokens.files import save_embedding_file

    path = save_embedding_file(tmp_path / "emb.safetensors", torch.zeros(1, 8), torch.zeros(1, 16), token="sks")
    assert _mode(path) == 0o644


def test_latent_cache_files_take_the_umask_mode(umask_022, tmp_path):
    from furlora.data.cache import LatentCache

    path = LatentCache(tmp_path / "cache").put({"image": "a.png", "size": 64}, torch.zeros(4, 8, 8))
    assert _mode(path) == 0o644


def test_published_model_folders_take_the_umask_mode(umask_022, tmp_path):
    from furlora.models.cache_folder import COMPLETE_MARKER, publish_folder

    from safetensors.torch import save_file

    def build(folder: Path) -> None:
        (folder / COMPLETE_MARKER).write_text("{}")
        (folder / "unet").mkdir()
        save_file({"w": torch.zeros(2)}, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))

    target = publish_folder(tmp_path / "models" / "tiny", build)
    assert _mode(target) == 0o755 and _mode(target / "unet") == 0o755
    assert _mode(target / COMPLETE_MARKER) == 0o644
    assert _mode(target / "unet" / "diffusion_pytorch_model.safetensors") == 0o644  # safetensors writes 0600


def test_checkpoints_take_the_umask_mode(umask_022, tmp_path):
    from furlora.train.checkpoint import CheckpointState, write_checkpoint

    state = CheckpointState(step=1, lora={"unet.w.lora_A.weight": torch.zeros(2, 3)}, training={},
                            meta={"config_hash": "x"})
    folder = write_checkpoint(tmp_path / "ckpt", state)
    assert _mode(folder) == 0o755
    assert {_mode(f) for f in folder.iterdir()} == {0o644}


def test_a_failed_write_leaves_the_target_untouched(tmp_path):
    from furlora.atomic import atomic_file

    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
