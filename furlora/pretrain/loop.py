"""Pretraining loops for the tiny SDXL-architecture models: the VAE, then one UNet body that
serves both the 4-channel base model and the 9-channel inpainting model.

Budgets are counted in optimiser steps; every random draw (corpus pictures, masks, noise,
timesteps, caption dropout, posterior samples) comes from generators seeded from
``(seed, step)``, so a run is repeatable. The number of torch threads follows the machine's
load (:class:`ThreadAdapter`), so a pretraining run on a shared 2-core machine takes idle cores
only.

Why one UNet body for both models: two independent UNets do not fit the committed-weights
size budget, and sharing the body halves the CPU cost. Each batch mixes base samples (read by a
4-channel input convolution) and inpainting samples (read by the 9-channel one); everything
after the input convolution is shared.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from furlora.pretrain.corpus import ProceduralCorpus

logger = logging.getLogger(__name__)


class ThreadAdapter:
    """Keeps torch's intra-op threads at the number of cores other processes leave idle.

    The 1-minute load average (``os.getloadavg``) counts this process too, and lags; so the
    cores this process itself used since the last call (process CPU time / wall time) are
    subtracted from it before deciding. Always at least 1 thread, at most ``max_threads``
    (default: every core).
    """

    def __init__(self, max_threads: int | None = None) -> None:
        self.cores = max_threads or os.cpu_count() or 1
        self._wall = time.monotonic()
        self._cpu = time.process_time()

    def __call__(self) -> int:
        wall, cpu = time.monotonic(), time.process_time()
        own = (cpu - self._cpu) / max(wall - self._wall, 1e-3)
        self._wall, self._cpu = wall, cpu
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform: use every core
            load = 0.0
        others = max(0.0, load - own)
        threads = int(min(self.cores, max(1, math.floor(self.cores - others + 0.5))))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads


def _lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class Stage:
    """The budget of one training stage: ``steps`` AdamW steps of ``batch_size`` pictures, learning
    rate ``lr`` (warm-up, then cosine decay), random draws seeded from ``seed``.

    ``time_limit`` (seconds) ends it early; ``stop_after``: end after that many steps of the
    ``steps``-long learning-rate schedule (replays a run that a time limit cut short).
    ``progress(step, loss)`` is called after every step.
    """

    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    time_limit: float | None = None
    progress: Callable[[int, float], None] | None = None
    stop_after: int | None = None


@dataclass
class LoopResult:
    """What a loop did: ``losses`` per step, ``steps`` run (fewer than asked only if a time
    limit stopped it) and ``seconds`` of wall-clock time."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------- VAE

def vae_loss(vae: Any, pixels: torch.Tensor, generator: torch.Generator, kl_weight: float = 1e-6) -> torch.Tensor:
    """Reconstruction loss of a batch ``pixels`` float32 [B,3,H,W] in [-1,1].

    L1 + MSE on pixels, an L1 term on horizontal/vertical differences (keeps edges sharp without
    a perceptual network) and a small KL term on the posterior.
    """
    posterior = vae.encode(pixels).latent_dist
    latents = posterior.sample(generator=generator)
    recon = vae.decode(latents).sample
    l1 = (recon - pixels).abs().mean()
    mse = F.mse_loss(recon, pixels)

    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (ry, rx), (py, px) = grads(recon), grads(pixels)
    edge = (ry - py).abs().mean() + (rx - px).abs().mean()
    kl = posterior.kl().mean() / pixels[0].numel()
    return l1 + mse + 0.5 * edge + kl_weight * kl


def _optimise(name: str, params: list[torch.Tensor], opt: torch.optim.Optimizer,
              loss_at: Callable[[list[int], torch.Generator], torch.Tensor], warmup: int, stage: Stage) -> LoopResult:
    """The optimisation loop both stages share: warmup + schedule, step ``s`` reads corpus pictures
    ``s*B ... s*B+B-1`` with one generator seeded from (seed, step), grad clipping at 1.0, thread
    adaptation, time limit and ``stop_after``."""
    result, start = LoopResult(), time.monotonic()
    adapt = ThreadAdapter()
    for step in range(min(stage.steps, stage.stop_after or stage.steps)):
        if step % 20 == 0:
            adapt()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, stage.steps, stage.lr, warmup=warmup)
        indices = list(range(step * stage.batch_size, (step + 1) * stage.batch_size))
        loss = loss_at(indices, torch.Generator().manual_seed(stage.seed * 1_000_003 + step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        result.losses.append(loss.item())
        result.steps = step + 1
        if stage.progress:
            stage.progress(step, result.losses[-1])
        if stage.time_limit is not None and time.monotonic() - start > stage.time_limit:
            logger.warning("%s stage stopped by its time limit after %d of %d steps", name, step + 1, stage.steps)
            break
    result.seconds = time.monotonic() - start
    return result


def train_vae(vae: Any, corpus: ProceduralCorpus, stage: Stage, decoder_only: bool = False) -> LoopResult:
    """Train ``vae`` in place for ``stage.steps`` AdamW steps on corpus pictures ``step*B ... step*B+B-1``.

    ``decoder_only``: the encoder stays frozen, so latents (and a UNet trained on them) stay
    valid while reconstructions improve.
    """
    vae.train().requires_grad_(True)
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)

    def loss_at(indices: list[int], gen: torch.Generator) -> torch.Tensor:
        return vae_loss(vae, corpus.batch(indices)["pixel_values"], gen)  # type: ignore[arg-type]

    result = _optimise("VAE", params, opt, loss_at, min(100, stage.steps // 10 + 1), stage)
    vae.eval().requires_grad_(False)
    return result


@torch.no_grad()
def reconstruction_psnr(vae: Any, corpus: ProceduralCorpus, count: int = 32, batch_size: int = 8) -> float:
    """Mean PSNR (dB, pixel range [-1,1] mapped to [0,1]) of posterior-mean reconstructions."""
    values = []
    for start in range(0, count, batch_size):
        pixels = corpus.batch(list(range(start, min(count, start + batch_size))))["pixel_values"]
        recon = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)  # type: ignore[union-attr]
        mse = ((recon - pixels) / 2).pow(2).flatten(1).mean(1)  # type: ignore[operator]
        values += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    return float(sum(values) / len(values))


@torch.no_grad()
def latent_scaling_factor(vae: Any, corpus: ProceduralCorpus, count: int = 64) -> float:
    """1 / std of posterior-mean latents: the factor that gives the UNet unit-variance latents."""
    pixels = corpus.batch(list(range(count)))["pixel_values"]
    latents = vae.encode(pixels).latent_dist.mode()
    return float(1.0 / latents.std())


# ----------------------------------------------------------------------------- UNet

class DualConvIn(nn.Module):
    """Input convolution of the shared UNet body: ``conv4`` for base samples (first 4 input
    channels only), ``conv9`` for inpainting samples. ``base_rows`` bool [B] picks per sample."""

    def __init__(self, conv9: nn.Conv2d, conv4: nn.Conv2d) -> None:
        super().__init__()
        self.conv9, self.conv4 = conv9, conv4
        self.base_rows: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv9(x)
        if self.base_rows is None:
            return out
        return torch.where(self.base_rows[:, None, None, None], self.conv4(x[:, :4]), out)


@dataclass
class UNetBatch:
    """One prepared step: ``model_input`` [B,9,h,w] (base rows carry zeros in channels 4-8),
    ``noise`` [B,4,h,w], ``timesteps`` int64 [B], ``embeds`` [B,77,D], ``pooled`` [B,P],
    ``time_ids`` [B,6], ``base_rows`` bool [B], ``latent_mask`` [B,1,h,w] (1 = repaint)."""

    model_input: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor
    base_rows: torch.Tensor
    latent_mask: torch.Tensor


@torch.no_grad()
def prepare_unet_batch(
    parts: dict[str, Any],
    corpus: ProceduralCorpus,
    indices: list[int],
    generator: torch.Generator,
    base_fraction: float = 0.35,
    caption_dropout: float = 0.1,
) -> UNetBatch:
    """Encode a corpus batch into the UNet's inputs with the frozen VAE and text encoders.

    ``parts``: ``vae``, ``text_encoder``, ``text_encoder_2``, ``tokenizer``, ``tokenizer_2``,
    ``noise_scheduler``. Inpainting rows follow diffusers' SDXL inpainting layout:
    cat(noisy latents, latent-size mask, latents of the masked picture).
    """
    from furlora.models.conditioning import encode_tokens, tokenize

    batch = corpus.batch(indices)
    b = len(indices)
    vae, scale = parts["vae"], parts["vae"].config.scaling_factor
    both = torch.cat([batch["pixel_values"], batch["masked_pixel_values"]])  # type: ignore[list-item]
    lat = vae.encode(both).latent_dist.sample(generator=generator) * scale
    latents, masked_latents = lat[:b], lat[b:]
    h, w = latents.shape[-2:]
    mask = F.interpolate(batch["inpaint_mask"], size=(h, w), mode="nearest")  # type: ignore[arg-type]
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, parts["noise_scheduler"].config.num_train_timesteps, (b,), generator=generator)
    noisy = parts["noise_scheduler"].add_noise(latents, noise, timesteps)
    base_rows = torch.rand(b, generator=generator) < base_fraction
    extra = torch.cat([mask, masked_latents], dim=1) * (~base_rows)[:, None, None, None]
    captions = [
        "" if float(torch.rand(1, generator=generator)) < caption_dropout else c
        for c in batch["captions"]  # type: ignore[union-attr]
    ]
    embeds, pooled = encode_tokens(
        parts["text_encoder"], parts["text_encoder_2"],
        tokenize(parts["tokenizer"], captions), tokenize(parts["tokenizer_2"], captions),
    )
    return UNetBatch(
        model_input=torch.cat([noisy, extra], dim=1), noise=noise, timesteps=timesteps,
        embeds=embeds, pooled=pooled, time_ids=batch["time_ids"], base_rows=base_rows,  # type: ignore[arg-type]
        latent_mask=torch.where(base_rows[:, None, None, None], torch.ones_like(mask), mask),
    )


def unet_prediction(unet: Any, batch: UNetBatch) -> torch.Tensor:
    """Predicted noise [B,4,h,w] of the shared body (its ``conv_in`` must be a DualConvIn)."""
    unet.conv_in.base_rows = batch.base_rows
    try:
        return unet(
            batch.model_input, batch.timesteps, encoder_hidden_states=batch.embeds,
            added_cond_kwargs={"text_embeds": batch.pooled, "time_ids": batch.time_ids},
        ).sample
    finally:
        unet.conv_in.base_rows = None


def train_unet(unet: Any, parts: dict[str, Any], corpus: ProceduralCorpus, stage: Stage) -> LoopResult:
    """Train the shared UNet body (epsilon objective, plain MSE) in place for ``stage.steps`` steps."""
    unet.train().requires_grad_(True)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=1e-2)

    def loss_at(indices: list[int], gen: torch.Generator) -> torch.Tensor:
        batch = prepare_unet_batch(parts, corpus, indices, gen)
        return F.mse_loss(unet_prediction(unet, batch), batch.noise)

    result = _optimise("UNet", params, opt, loss_at, min(200, stage.steps // 10 + 1), stage)
    unet.eval().requires_grad_(False)
    return result


@torch.no_grad()
def unet_validation_loss(
    unet: Any, parts: dict[str, Any], corpus: ProceduralCorpus, count: int = 64, batch_size: int = 16, seed: int = 0
) -> dict[str, float]:
    """Fixed-seed validation losses on ``count`` corpus pictures (use a corpus with another seed).

    Returns ``base`` (MSE of the 4-channel path), ``inpaint`` (MSE of the 9-channel path over the
    whole latent) and ``inpaint_masked`` (MSE inside the latent mask, the region repainted).
    Same noise and timesteps for both paths, so the numbers compare.
    """
    sums = {"base": 0.0, "inpaint": 0.0, "inpaint_masked": 0.0}
    mask_total = 0.0
    for start in range(0, count, batch_size):
        idx = list(range(start, min(count, start + batch_size)))
        gen = torch.Generator().manual_seed(seed * 7919 + start)
        batch = prepare_unet_batch(parts, corpus, idx, gen, base_fraction=0.0, caption_dropout=0.0)
        inpaint = unet_prediction(unet, batch)
        base_batch = UNetBatch(**{**batch.__dict__, "base_rows": torch.ones(len(idx), dtype=torch.bool)})
        base = unet_prediction(unet, base_batch)
        err_i = (inpaint - batch.noise).pow(2)
        sums["base"] += float((base - batch.noise).pow(2).mean()) * len(idx)
        sums["inpaint"] += float(err_i.mean()) * len(idx)
        sums["inpaint_masked"] += float((err_i * batch.latent_mask).sum() / 4)
        mask_total += float(batch.latent_mask.sum())
    return {
        "base": sums["base"] / count,
        "inpaint": sums["inpaint"] / count,
        "inpaint_masked": sums["inpaint_masked"] / max(mask_total, 1.0),
    }
