"""Trainer overhead, measured side by side in one run on the tiny inpainting model (CPU).

1. Step time of the furlora Trainer vs a minimal hand-written PyTorch loop doing the same work
   (same dataset and sampler, VAE encode of image and masked image, cached text embeddings,
   9-channel UNet forward/backward with LoRA, masked loss, clipping, AdamW).   target <= 1.05x
2. Step time of the Trainer with a checkpoint every step vs no checkpoints.   target <= 1.05x

Both comparisons interleave short blocks of steps inside one process, so a change of machine
load hits both sides alike: (1) the Trainer's step callback runs a block of hand-loop steps
every other block; (2) the callback writes a checkpoint after every step of every other block.
Ratios are of median step times (robust to load spikes). Step times of the Trainer are measured
between callbacks (the interleaved work is excluded).

    python bench/train.py [--steps 60] [--block 5] [--resolution 128] [--threads 1]

``--mode realsize-ckpt``: the per-step checkpoint of a real-size state (LoRA of the 16 GB preset
on the SDXL UNet + both text encoders, 8-bit AdamW state, EMA; shapes from the meta SDXL tree,
tensors built on the CPU, no UNet weights): how long the training thread is blocked per
checkpoint, before (a fresh ``torch.cat`` copy per save) and after (reused staging buffers), and
the ratio to a 1.4 s GPU step (target: blocked <= 0.07 s, 5%).

``--mode cache-threads``: per step of the Trainer on the demo model with the latent cache on
(after the caching pass) vs no cache (diffusers-like: VAE encodes every step), and with 1 vs 2
torch threads; the four variants alternate in short runs, medians side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_config(output: Path, args: argparse.Namespace, *extra: str) -> Any:
    from furlora.config import load_config

    return load_config(
        None,
        [
            "seed=1",
            f"output_dir={output}",
            f"data.path={ROOT / 'datasets' / 'spitz-fur' / 'train'}",
            f"data.resolution={args.resolution}",
            f"train.batch_size={args.batch_size}",
            "train.learning_rate=0.0005",
            "train.max_grad_norm=1.0",
            "train.cpu=true",
            "train.checkpoint.every_n_steps=0",
            "train.log.progress_bar=false",
            "train.log.tensorboard=false",
            *extra,
        ],
    )


def interleaved(output: Path, args: argparse.Namespace, other: Any) -> tuple[list[float], list[float]]:
    """Trainer step times in blocks A and B; ``other(trainer)`` runs after each step of a B block.

    Returns (times of steps in A blocks, times of steps in B blocks), warm-up steps excluded.
    A B-block step's time includes what ``other`` leaves running (a background checkpoint write).
    """
    from furlora.train.trainer import Trainer

    state = {"last": None}
    a_times: list[float] = []
    b_times: list[float] = []

    def callback(trainer: Any) -> None:
        now = time.perf_counter()
        step = trainer.global_step  # 1-based: the step that just ended
        if state["last"] is not None and step > args.warmup:
            in_b = ((step - 1) // args.block) % 2 == 1
            (b_times if in_b else a_times).append(now - state["last"])
        if ((step - 1) // args.block) % 2 == 1:
            other(trainer)
        state["last"] = time.perf_counter()

    config = make_config(output, args, f"train.max_steps={args.warmup + 2 * args.steps}")
    Trainer(config, resume="never", callbacks=[callback]).fit()
    return a_times, b_times


class HandLoop:
    """The minimal hand-written loop: the same work as a Trainer step, no framework."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch.nn.functional as F  # noqa: F401

        from furlora.data.buckets import BucketBatchSampler
        from furlora.data.dataset import collate_samples
        from furlora.lora.adapters import LoraAdapters
        from furlora.models.sdxl import load_sdxl
        from furlora.train.setup import build_dataset

        config = make_config(Path(tempfile.mkdtemp()), args)
        self.c = load_sdxl("tiny-sdxl-inpaint")
        self.manager = LoraAdapters({"unet": self.c.unet}, config.lora, seed=1)
        self.manager.apply()
        self.params = self.manager.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=5e-4, weight_decay=1e-2)
        self.dataset = build_dataset(config)
        self.sampler = BucketBatchSampler(self.dataset, args.batch_size, 1)
        self.collate = collate_samples
        self.text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.epoch, self.batches = 0, []
        self.c.unet.train()

    def _next(self) -> dict[str, Any]:
        if not self.batches:
            self.sampler.set_epoch(self.epoch)
            self.batches = list(self.sampler)
            self.epoch += 1
        return self.collate([self.dataset.sample(i, self.epoch - 1) for i in self.batches.pop(0)])

    def _encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from furlora.models.conditioning import encode_tokens, tokenize

        for caption in captions:
            if caption not in self.text:
                with torch.no_grad():
                    e, p = encode_tokens(self.c.text_encoder, self.c.text_encoder_2,
                                         tokenize(self.c.tokenizer, [caption]), tokenize(self.c.tokenizer_2, [caption]))
                self.text[caption] = (e[0], p[0])
        return torch.stack([self.text[c][0] for c in captions]), torch.stack([self.text[c][1] for c in captions])

    def step(self) -> None:
        import torch.nn.functional as F

        c = self.c
        batch = self._next()
        sf = c.vae.config.scaling_factor
        with torch.no_grad():
            latents = c.vae.encode(batch["pixel_values"]).latent_dist.mean * sf
            masked = c.vae.encode(batch["masked_pixel_values"]).latent_dist.mean * sf
        embeds, pooled = self._encode_text(list(batch["caption"]))
        time_ids = torch.tensor([[*o, *t, *s] for o, t, s in zip(batch["original_size"], batch["crop_top_left"], batch["target_size"])], dtype=torch.float32)
        size = latents.shape[-2:]
        hole = F.interpolate(batch["inpaint_mask"], size=size)
        weight = F.interpolate(batch["mask"], size=size, mode="area")
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],))
        noisy = c.noise_scheduler.add_noise(latents, noise, t)
        pred = c.unet(torch.cat([noisy, hole, masked], 1), t, encoder_hidden_states=embeds,
                      added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        err = (pred - noise).pow(2).mean(1, keepdim=True)
        loss = ((err * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-8)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def block(self, warmup: int, steps: int) -> list[float]:
        for _ in range(warmup):
            self.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return times


def realsize_state(config_path: Path, device: str = "cpu") -> Any:
    """A CheckpointState with the real-size LoRA / 8-bit AdamW / EMA tensors of ``config_path``'s LoRA."""
    from furlora.config import load_config
    from furlora.lora.targets import select_targets
    from furlora.models.architecture import build_meta_sdxl
    from furlora.train.checkpoint import CheckpointState

    config = load_config(config_path)
    lora: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    for component in config.lora.enabled_components():
        settings = config.lora.component(component)
        root = build_meta_sdxl("sdxl-meta", [component])[component]
        for target in select_targets(component, root, settings).targets:
            shape = tuple(dict(root.named_modules())[target.live_name].weight.shape)
            out_features, in_features, *kernel = shape
            a = (settings.rank, in_features, *kernel)
            b = (out_features, settings.rank, *([1] * len(kernel)))
            lora[f"{component}.{target.live_name}.lora_A.weight"] = torch.randn(a, generator=generator).to(device)
            lora[f"{component}.{target.live_name}.lora_B.weight"] = torch.randn(b, generator=generator).to(device)
    # bitsandbytes' 8-bit AdamW: two uint8 moments per value and one fp32 absmax per block of 256.
    state = {
        i: {
            "step": torch.tensor(100.0),
            "state1": torch.randint(0, 255, (t.numel(),), dtype=torch.uint8, device=device),
            "state2": torch.randint(0, 255, (t.numel(),), dtype=torch.uint8, device=device),
            "absmax1": torch.rand((t.numel() + 255) // 256, device=device),
            "absmax2": torch.rand((t.numel() + 255) // 256, device=device),
        }
        for i, t in enumerate(lora.values())
    }
    optimizer = {"state": state, "param_groups": [{"lr": 1e-4, "params": list(range(len(lora)))}]}
    ema = {k: v.to("cpu", copy=True) for k, v in lora.items()}  # train.ema.device: cpu (the presets)
    meta = {"global_step": 100, "config_hash": "bench"}
    return CheckpointState(step=100, lora=lora, training={"optimizer": optimizer, "rng": {"seed": 1}}, meta=meta, ema=ema)


def bench_realsize_checkpoint(args: argparse.Namespace) -> int:
    """Training-thread time per checkpoint of a real-size state, before vs after."""
    from furlora.train.checkpoint import CheckpointWriter, pack

    state = realsize_state(ROOT / "configs" / "sdxl-16gb.yaml", args.device)
    nbytes = sum(t.numel() * t.element_size() for d in (state.lora, state.ema) for t in d.values())
    nbytes += sum(t.numel() * t.element_size() for row in state.training["optimizer"]["state"].values() for t in row.values())
    work = Path(tempfile.mkdtemp(prefix="furlora-bench-ckpt-"))
    writer = CheckpointWriter(work / "after", keep_last=1, asynchronous=True)
    before: list[float] = []
    after: list[float] = []
    before_cpu: list[float] = []
    after_cpu: list[float] = []
    write_times: list[float] = []
    for i in range(args.saves):  # alternate the two copies, so machine load hits both alike
        start, cpu = time.perf_counter(), time.thread_time()
        pack(state)  # what the training thread did before: a fresh torch.cat per dtype
        if args.device != "cpu":
            torch.cuda.synchronize()
        before.append(time.perf_counter() - start)
        before_cpu.append(time.thread_time() - cpu)
        state.step = 100 + i
        cpu = time.thread_time()
        started = time.perf_counter()
        writer.save(state)
        # The next step's forward and backward on the GPU: the CPU thread mostly waits for kernels.
        time.sleep(args.step_seconds)
        writer.before_update()  # the optimizer step may not change the state before the copy is done
        after_cpu.append(time.thread_time() - cpu)
        after.append(writer.last_blocked_seconds)
        writer.wait()  # saves never queue here: the write time is measured on its own
        write_times.append(time.perf_counter() - started)
    step = 1.4
    b, a = statistics.median(before), statistics.median(after)
    print(f"\nreal-size state of configs/sdxl-16gb.yaml: {len(state.lora)} LoRA tensors, {nbytes / 1e6:.0f} MB "
          f"(LoRA + EMA fp32, 8-bit AdamW); {args.saves} saves; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (shared machine)")
    print(f"  training thread blocked per checkpoint, before (fresh copy):  median {b:.3f} s = {b / step * 100:.1f}% of a 1.4 s step")
    print(f"  training thread blocked per checkpoint, after (copy in the writer thread during a {args.step_seconds:.1f} s "
          f"forward/backward, reused buffer): median {a:.3f} s = {a / step * 100:.1f}% of a 1.4 s step"
          f"  (target <= 0.070 s, 5%)")
    print(f"  CPU seconds of the training thread per checkpoint: before {statistics.median(before_cpu):.3f} s, "
          f"after {statistics.median(after_cpu):.3f} s (wall minus time other processes held the cores)")
    print(f"  after / before: {a / b:.3f}x; background copy + write (serialise, sha256, fsync, rename): median {statistics.median(write_times):.2f} s")
    return 0


def bench_cache_threads(args: argparse.Namespace) -> int:
    """Trainer step times on the demo model: cache on vs off, 1 vs 2 threads, alternating runs."""
    import logging

    from furlora.train.trainer import Trainer

    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="furlora-bench-cache-"))
    variants = {
        "cache, 1 thread": ("true", 1), "no cache, 1 thread": ("false", 1),
        "cache, 2 threads": ("true", 2), "no cache, 2 threads": ("false", 2),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, (cache, threads) in variants.items():
            stamps: list[float] = []
            config = make_config(
                work / f"{round_}-{cache}-{threads}", args, "model.source=tiny-sdxl-inpaint-pretrained",
                f"train.max_steps={args.warmup + args.block}", f"train.cache_latents={cache}",
                f"train.cpu_threads={threads}", "train.validation.path=null", f"data.cache_dir={work / 'cache'}",
            )
            Trainer(config, resume="never", callbacks=[lambda t: stamps.append(time.perf_counter())]).fit()
            times[name] += [b - a for a, b in zip(stamps[args.warmup - 1 :], stamps[args.warmup :])]
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\ntiny-sdxl-inpaint-pretrained (demo model), {args.resolution} px, batch {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    for name, value in med.items():
        print(f"  {name:<20} median {value * 1000:8.1f} ms/step over {len(times[name])} steps")
    for threads in (1, 2):
        s = "s" if threads > 1 else ""
        print(f"cache / no cache, {threads} thread{s}:   {med[f'cache, {threads} thread{s}'] / med[f'no cache, {threads} thread{s}']:.3f}x")
    for cache in ("cache", "no cache"):
        print(f"2 threads / 1 thread, {cache}: {med[f'{cache}, 2 threads'] / med[f'{cache}, 1 thread']:.3f}x  (target <= 1.0x)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["overhead", "realsize-ckpt", "cache-threads"], default="overhead")
    parser.add_argument("--saves", type=int, default=5, help="realsize-ckpt: checkpoints to time")
    parser.add_argument("--step-seconds", type=float, default=1.4, help="realsize-ckpt: simulated forward/backward time")
    parser.add_argument("--device", default="cpu", help="realsize-ckpt: where the LoRA and optimizer state live (cpu, cuda)")
    parser.add_argument("--rounds", type=int, default=2, help="cache-threads: rounds of the four variants")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    parser.add_argument("--block", type=int, default=5, help="steps per block (blocks alternate)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is robust on a busy machine)")
    args = parser.parse_args()
    if args.mode == "realsize-ckpt":
        return bench_realsize_checkpoint(args)
    if args.mode == "cache-threads":
        return bench_cache_threads(args)
    torch.set_num_threads(args.threads)
    import logging

    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="furlora-bench-"))
    hand = HandLoop(args)
    hand.block(args.warmup, 0)
    hand_times: list[float] = []

    def run_hand_step(trainer: Any) -> None:
        hand_times.extend(hand.block(0, 1))

    trainer_times, _ = interleaved(work / "vs-loop", args, run_hand_step)
    print("trainer vs hand loop: done", flush=True)

    def save(trainer: Any) -> None:
        trainer.save_checkpoint()

    no_ckpt, ckpt = interleaved(work / "ckpt", args, save)
    med = {
        "trainer": statistics.median(trainer_times),
        "hand loop": statistics.median(hand_times),
        "ckpt every step": statistics.median(ckpt),
        "no ckpt": statistics.median(no_ckpt),
    }
    counts = {"trainer": len(trainer_times), "hand loop": len(hand_times), "ckpt every step": len(ckpt), "no ckpt": len(no_ckpt)}
    print(f"\ntiny-sdxl-inpaint, {args.resolution} px, batch {args.batch_size}, {args.threads} thread(s), blocks of "
          f"{args.block} steps; load average {os.getloadavg()[0]:.1f}")
    for name, value in med.items():
        print(f"  {name:<16} median {value * 1000:8.1f} ms/step over {counts[name]} steps")
    print(f"trainer / hand-written loop:      {med['trainer'] / med['hand loop']:.3f}x  (target <= 1.05x)")
    print(f"checkpoint every step / none:     {med['ckpt every step'] / med['no ckpt']:.3f}x  (target <= 1.05x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
