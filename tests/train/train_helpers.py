"""Helpers of the trainer tests: hand-made batches (dataset contract layout) and a fast tiny config."""

from __future__ import annotations

from typing import Any

import torch


def make_batch(batch: int = 2, size: int = 32, seed: int = 0) -> dict[str, Any]:
    """A collated batch in the dataset contract's layout (see furlora.data.dataset)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand((batch, 3, size, size), generator=g) * 2 - 1
    hole = torch.zeros((batch, 1, size, size))
    hole[:, :, : size // 2, : size // 2] = 1.0
    regions = torch.zeros((batch, 2, size, size))
    regions[:, 0, : size // 2] = 1.0  # "face": top half
    regions[:, 1, size // 2 :] = 1.0  # "chest": bottom half
    return {
        "pixel_values": pixels,
        "mask": regions.amax(dim=1, keepdim=True) * 0.5 + hole * 0.5,
        "region_masks": regions,
        "region_names": [["face", "chest"] for _ in range(batch)],
        "inpaint_mask": hole,
        "masked_pixel_values": pixels * (1 - hole),
        "caption": [f"a spitz, fine fur {i}" for i in range(batch)],
        "original_size": [(size * 3, size * 2 + i) for i in range(batch)],
        "crop_top_left": [(5, 7 + i) for i in range(batch)],
        "target_size": [(size, size) for _ in range(batch)],
        "index": list(range(batch)),
        "key": [f"dog_{i}" for i in range(batch)],
    }


def tiny_config(output: Any, *overrides: str) -> Any:
    """A fast RunConfig: tiny inpainting model, bundled dataset at 64 px, no trackers or bar."""
    from pathlib import Path

    from furlora.config import load_config

    root = Path(__file__).resolve().parents[2]
    return load_config(
        None,
        [
            "seed=5",
            f"output_dir={output}",
            f"data.path={root / 'datasets' / 'spitz-fur' / 'train'}",
            "data.resolution=64",
            "train.max_steps=4",
            "train.learning_rate=0.001",
            "train.cpu=true",
            "train.checkpoint.every_n_steps=1",
            "train.checkpoint.asynchronous=false",
            "train.log.progress_bar=false",
            "train.log.tensorboard=false",
            "train.log_memory_plan=false",  # covered by its own test; keeps the others fast
            *overrides,
        ],
    )


def assert_same_training(a_run: Any, b_run: Any, step: int) -> None:
    """Two run folders ended in bit-identical training state at ``step``: LoRA, EMA, Adam moments,
    data stream, NaN guard, and the exported diffusers file (tensors and metadata)."""
    from pathlib import Path

    from safetensors import safe_open

    from furlora.train.checkpoint import read_checkpoint

    a_run, b_run = Path(a_run), Path(b_run)
    a = read_checkpoint(a_run / "checkpoints" / f"step-{step:08d}")
    b = read_checkpoint(b_run / "checkpoints" / f"step-{step:08d}")
    assert a.lora.keys() == b.lora.keys()
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in a.lora.items()), "LoRA did not train"
    for key in a.lora:
        assert torch.equal(a.lora[key], b.lora[key]), key
    for key in a.ema:
        assert torch.equal(a.ema[key], b.ema[key]), key
    state_a, state_b = a.training["optimizer"]["state"], b.training["optimizer"]["state"]
    for index in state_a:
        assert torch.equal(state_a[index]["exp_avg"], state_b[index]["exp_avg"])
        assert torch.equal(state_a[index]["exp_avg_sq"], state_b[index]["exp_avg_sq"])
    assert a.meta["stream"] == b.meta["stream"] and a.meta["guard"] == b.meta["guard"]
    exported = "lora/furlora-run.diffusers.safetensors"
    with safe_open(a_run / exported, "pt") as fa, safe_open(b_run / exported, "pt") as fb:
        assert fa.metadata() == fb.metadata()
        assert sorted(fa.keys()) == sorted(fb.keys())
        for key in fa.keys():
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), key
