"""Small parts of the trainer: batch stream, seeded draws, state packing, schedules, EMA, guard."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from furlora.errors import TrainingError
from furlora.train.ema import AdapterEMA
from furlora.train.guard import NonFiniteGuard
from furlora.train.noise import draw_step
from furlora.train.rng import capture_rng_state, derive_seed, restore_rng_state
from furlora.train.schedule import lr_factor, resolution_at
from furlora.train.settings import ResolutionPhase
from furlora.train.state_io import flatten_state, unflatten_state
from furlora.train.stream import BatchStream


class _Dataset:
    def sample(self, index: int, epoch: int) -> dict:
        return {"index": index, "epoch": epoch}


class _Sampler:
    """5 batches per epoch, order a function of the epoch."""

    def batches(self, epoch: int) -> list[list[int]]:
        order = list(range(10))
        random.Random(epoch).shuffle(order)
        return [order[i : i + 2] for i in range(0, 10, 2)]


def _collate(samples: list[dict]) -> list[tuple[int, int]]:
    return [(s["epoch"], s["index"]) for s in samples]


def _read(stream: BatchStream, n: int) -> list:
    return [stream.next() for _ in range(n)]


def test_stream_resumes_at_the_exact_batch_and_prefetch_changes_nothing() -> None:
    straight = BatchStream(_Dataset(), _Sampler(), _collate, prefetch=True)
    reference = _read(straight, 12)
    first = BatchStream(_Dataset(), _Sampler(), _collate, prefetch=False)
    head = _read(first, 7)
    assert first.state_dict() == {"epoch": 1, "position": 2}
    resumed = BatchStream(_Dataset(), _Sampler(), _collate, prefetch=True)
    resumed.load_state_dict(first.state_dict())
    assert head + _read(resumed, 5) == reference
    assert [b[0][0] for b in reference] == [0] * 5 + [1] * 5 + [2] * 2
    for s in (straight, first, resumed):
        s.close()


def test_stream_gives_each_rank_its_own_batches() -> None:
    ranks = [BatchStream(_Dataset(), _Sampler(), _collate, world_size=2, rank=r, prefetch=False) for r in range(2)]
    got = [_read(s, 3) for s in ranks]
    epoch0 = [[(0, i) for i in b] for b in _Sampler().batches(0)]
    # 5 batches, 2 ranks: batches 0-3 are used, batch 4 is skipped, then epoch 1 starts.
    assert got[0][:2] == [epoch0[0], epoch0[2]] and got[1][:2] == [epoch0[1], epoch0[3]]
    assert got[0][2][0][0] == 1 and got[1][2][0][0] == 1
    assert ranks[0].state_dict() == {"epoch": 1, "position": 2}


def test_draws_are_a_pure_function_of_seed_step_rank_micro() -> None:
    a = draw_step(1, 10, 0, 0, (2, 4, 8, 8), 1000, noise_offset=0.1, full_mask_fraction=0.5)
    b = draw_step(1, 10, 0, 0, (2, 4, 8, 8), 1000, noise_offset=0.1, full_mask_fraction=0.5)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps) and torch.equal(a.full_mask, b.full_mask)
    for other in (draw_step(1, 11, 0, 0, (2, 4, 8, 8), 1000), draw_step(1, 10, 1, 0, (2, 4, 8, 8), 1000),
                  draw_step(1, 10, 0, 1, (2, 4, 8, 8), 1000), draw_step(2, 10, 0, 0, (2, 4, 8, 8), 1000)):
        assert not torch.equal(other.timesteps, a.timesteps) or not torch.equal(other.noise, a.noise)
    # The noise stream does not depend on the other options (each quantity has its own stream).
    plain = draw_step(1, 10, 0, 0, (2, 4, 8, 8), 1000)
    assert torch.equal(plain.timesteps, a.timesteps)
    assert not torch.equal(plain.noise, a.noise)  # the offset was added
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)
    assert 0 <= derive_seed(123, "x") < 2**63


def test_rng_state_roundtrip() -> None:
    state = capture_rng_state()
    values = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(values[0], again[0]) and values[1:] == again[1:]


def test_state_packing_roundtrip() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "lora": {f"unet.m{i}.lora_A.weight": torch.randn(2, i + 1) for i in range(5)},
        "rng": capture_rng_state(),
        "misc": {"betas": (0.9, 0.999), "none": None, "nan": math.nan, "ints": [1, 2], 7: "int key"},
        "bf16": torch.ones(3, dtype=torch.bfloat16),
    }
    buffers, skeleton = flatten_state(state)
    assert set(buffers) == {"float32", "uint8", "int64", "bfloat16"}
    import json

    back = unflatten_state(json.loads(json.dumps(skeleton)), buffers)
    assert back["misc"]["betas"] == (0.9, 0.999) and back["misc"][7] == "int key" and math.isnan(back["misc"]["nan"])
    for key, value in state["lora"].items():
        assert torch.equal(back["lora"][key], value)
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(back["optimizer"])
    for p in model.parameters():
        assert torch.equal(fresh.state[p]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])
    assert back["bf16"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="cannot store a object"):
        flatten_state({"x": object()})


def test_learning_rate_schedules() -> None:
    assert [lr_factor(s, "constant", 4, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(52, "linear", 4, 100) == pytest.approx(0.5)
    assert lr_factor(100, "linear", 4, 100) == 0.0
    assert lr_factor(52, "cosine", 4, 100) == pytest.approx(0.5)
    assert lr_factor(4, "cosine", 4, 100) == pytest.approx(1.0)
    schedule = [ResolutionPhase(step=0, resolution=512), ResolutionPhase(step=600, resolution=768)]
    assert resolution_at(599, schedule, 1024) == (0, 512) and resolution_at(600, schedule, 1024) == (1, 768)
    assert resolution_at(5, [], 1024) == (0, 1024)


def test_ema_update_and_state() -> None:
    w = torch.zeros(2)
    ema = AdapterEMA([("w", w)], decay=0.5)
    ema.update([("w", torch.ones(2))])
    ema.update([("w", torch.ones(2))])
    assert ema.state_dict()["w"].tolist() == [0.75, 0.75] and ema.updates == 2


def test_guard_counts_and_stops() -> None:
    guard = NonFiniteGuard(patience=2)
    assert guard.record(1.0, True) and not guard.record(math.nan, True) and guard.record(1.0, True)
    assert not guard.record(1.0, False) and not guard.record(math.inf, True)
    with pytest.raises(TrainingError, match="2 steps in a row .* 3 skipped in total; the last good checkpoint step-00000009"):
        guard.check(12, "step-00000009")
