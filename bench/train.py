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
        from furlora.lora.hooks import LoraHookManager
        from furlora.models.sdxl import load_sdxl
        from furlora.train.setup import build_dataset

        config = make_config(Path(tempfile.mkdtemp()), args)
        self.c = load_sdxl("tiny-sdxl-inpaint")
        self.manager = LoraHookManager({"unet": self.c.unet}, config.lora, seed=1)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    parser.add_argument("--block", type=int, default=5, help="steps per block (blocks alternate)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is robust on a busy machine)")
    args = parser.parse_args()
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
