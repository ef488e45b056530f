"""The pieces behind real-size speed: the disk latent cache of the encoder, the staging copy of
checkpoints, the flat EMA, and the data thread's CPU threads."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from furlora.errors import TrainingError
from furlora.train import checkpoint as ckpt
from furlora.train.checkpoint import CheckpointState, CheckpointWriter, read_checkpoint, write_checkpoint
from furlora.train.ema import AdapterEMA
from furlora.train.encode import BatchEncoder
from furlora.train.stream import BatchStream
from furlora.train.threads import available_cpus


def _pixels(seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_disk_cached_latents_match_fresh_encodes(inpaint_components: Any, tmp_path: Path) -> None:
    first = BatchEncoder(inpaint_components, torch.device("cpu"), cache_dir=tmp_path)
    parts = [{"image": "a"}, {"image": "b"}]
    pixels = torch.stack([_pixels(0), _pixels(1)])
    fresh = first.latents(pixels, keys=parts)
    assert first.vae_encodes == 2 and len(first.store) == 2
    # Another process: empty memory, same folder. Bit-identical values, no VAE call.
    second = BatchEncoder(inpaint_components, torch.device("cpu"), cache_dir=tmp_path)
    again = second.latents(torch.zeros_like(pixels), keys=parts)  # the pixels are not even looked at
    assert second.vae_encodes == 0 and torch.equal(again, fresh)


def test_a_changed_vae_misses_every_entry(inpaint_components: Any, tmp_path: Path) -> None:
    encoder = BatchEncoder(inpaint_components, torch.device("cpu"), cache_dir=tmp_path)
    encoder.latents(_pixels(0)[None], keys=[{"image": "a"}])
    other = BatchEncoder(inpaint_components, torch.device("cpu"), cache_dir=tmp_path)
    other._vae_fingerprint = "another-vae"  # what a VAE with other weights fingerprints as
    other.latents(_pixels(0)[None], keys=[{"image": "a"}])
    assert other.vae_encodes == 1 and len(other.store) == 2


def _state(step: int, device: str = "cpu") -> CheckpointState:
    g = torch.Generator().manual_seed(step)
    lora = {f"unet.m{i}.lora_A.weight": torch.randn(4, 3, generator=g).to(device) for i in range(5)}
    optimizer = {"state": {i: {"step": torch.tensor(float(step)), "exp_avg": torch.randn(4, 3, generator=g)} for i in range(5)}}
    return CheckpointState(step=step, lora=lora, training={"optimizer": optimizer}, meta={"config_hash": "x"},
                           ema={k: v.to("cpu") * 0.5 for k, v in lora.items()})


def test_staged_checkpoints_reuse_buffers_and_equal_direct_writes(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "a", keep_last=5, asynchronous=True)
    writer.save(_state(1))
    writer.wait()
    buffers = {name: b.data_ptr() for name, b in writer._staging._buffers.items()}
    state = _state(2)
    writer.save(state)
    writer.before_update()  # what the trainer calls before its optimizer step
    assert writer.in_flight or writer.last_written is not None
    for tensor in state.lora.values():
        tensor.add_(1.0)  # training goes on while the write is in flight: the written copy must not change
    writer.wait()
    assert {name: b.data_ptr() for name, b in writer._staging._buffers.items()} == buffers  # reused, not reallocated
    write_checkpoint(tmp_path / "b", _state(2))
    for name in ("state.safetensors", "trainer.json"):
        assert (tmp_path / "a/step-00000002" / name).read_bytes() == (tmp_path / "b/step-00000002" / name).read_bytes()


def test_failed_background_write_stops_at_the_next_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = CheckpointWriter(tmp_path, keep_last=2, asynchronous=True)
    writer.save(_state(1))
    writer.wait()
    release = threading.Event()
    real = ckpt._write_file

    def full(path: Path, data: bytes) -> None:
        if path.name == "state.safetensors":
            release.wait(30)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full)
    writer.save(_state(2))
    assert writer.in_flight
    writer.poll()  # still writing: nothing to report, and poll does not wait
    release.set()
    writer._thread.join()
    with pytest.raises(TrainingError, match="disk full.*step-00000001 is intact"):
        writer.poll()
    assert read_checkpoint(tmp_path / "step-00000001").step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]


def test_flat_ema_equals_the_per_tensor_formula() -> None:
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g), "c": torch.randn(2, 2, 2, generator=g)}
    ema = AdapterEMA(weights.items(), decay=0.9)
    expected = {k: v.clone() for k, v in weights.items()}
    for _ in range(3):
        for v in weights.values():
            v.add_(torch.randn(v.shape, generator=g))
        ema.update(weights.items())
        for k, v in weights.items():
            expected[k].mul_(0.9).add_(v, alpha=0.1)
    state = ema.state_dict()
    assert set(state) == set(weights) and ema.updates == 3
    for k in weights:
        torch.testing.assert_close(state[k], expected[k], rtol=0, atol=1e-6)
        assert state[k].shape == weights[k].shape
    ema.load_state_dict({k: torch.zeros_like(v) for k, v in weights.items()}, updates=7)
    assert all(v.abs().sum() == 0 for v in ema.state_dict().values()) and ema.updates == 7


def test_available_cpus_follows_the_affinity_mask() -> None:
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


class _TensorData:
    """A dataset whose samples run parallel torch ops (as pixel conversion and collation do)."""

    def __init__(self) -> None:
        self.thread_counts: list[int] = []  # torch's intra-op thread count as seen in the data thread

    def sample(self, index: int, epoch: int) -> dict[str, torch.Tensor]:
        if threading.current_thread() is not threading.main_thread():  # the first batch may load in line
            self.thread_counts.append(torch.get_num_threads())
        x = torch.rand(2_000_000)
        return {"x": (x * 2 - 1).sum()}


class _Sampler:
    def batches(self, epoch: int) -> list[list[int]]:
        return [[0], [1], [2], [3]]


def test_data_thread_starts_no_second_openmp_pool() -> None:
    # The dataset imports albumentations, whose simsimd wheel loads a second libgomp: the fix must
    # reach torch's runtime, not that one.
    import albumentations  # noqa: F401

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.rand(2_000_000).mul(2).sum()  # the training thread's own pool exists
        data = _TensorData()
        stream = BatchStream(data, _Sampler(), lambda samples: samples[0], prefetch=True)
        for _ in range(4):
            stream.next()
        stream.close()
        assert torch.get_num_threads() == 2  # the training thread keeps its count
        # The data thread's own count is what sizes an OpenMP team for its ops: 1 = no team. (Counting
        # the process's threads instead is not reliable inside a test session: threads that earlier
        # tests started come and go.)
        assert len(data.thread_counts) >= 3 and set(data.thread_counts) == {1}, data.thread_counts
    finally:
        torch.set_num_threads(previous)


def test_plan_names_the_caches_that_cannot_apply() -> None:
    from furlora.config import load_config
    from furlora.memory.adapter import cache_notes

    root = Path(__file__).resolve().parents[2] / "configs"
    notes = cache_notes(load_config(root / "sdxl-16gb.yaml"))  # LoRA on text encoder 1
    assert notes == [
        "train.cache_text_embeddings cannot apply: a text-encoder LoRA (lora.text_encoder*) trains, so text embeddings are computed every step"
    ]
    assert cache_notes(load_config(root / "sdxl-inpainting.yaml")) == []
    off = cache_notes(load_config(root / "sdxl-inpainting.yaml", ["train.cache_latents=false"]))
    assert len(off) == 1 and off[0].startswith("train.cache_latents is false")


def test_a_short_run_fills_the_cache_as_it_goes_and_a_long_run_fills_it_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from train_helpers import tiny_config

    from furlora.train.trainer import Trainer

    with caplog.at_level(logging.INFO, logger="furlora"):
        trainer = Trainer(tiny_config(tmp_path / "short", "train.max_steps=2", "train.full_mask_fraction=0"))
        trainer.fit()
    # 2 steps x batch 1: one image latent + one masked-image latent per sample, no caching pass.
    assert trainer.run.encoder.vae_encodes == 4
    assert "filling the cache during training instead of a caching pass first" in caplog.text
    dataset = trainer.dataset
    entries = len(dataset) * dataset.settings.cache.variants * (1 + dataset.hole_count())
    long_run = Trainer(tiny_config(tmp_path / "long", f"train.max_steps={entries}"), resume="never")
    assert long_run._prefill_pays_off(long_run.dataset)
    long_run.release_run_lock()
