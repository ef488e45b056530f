"""A deterministic masked validation loss on a held-out split.

Every held-out sample (as drawn in epoch 0: fixed crop and inpainting hole) is scored at fixed
timesteps with fixed noise derived from (seed, sample key, timestep), so two validations differ
only by the weights. The score is the area-normalised weighted MSE of the prediction with the
training loss's weight map (:func:`furlora.train.step.loss_weights`: the region weight map, or
with the 9-channel objective max(1, region weight) inside the hole) but no floor and no extra
terms, so it is comparable across runs whatever the loss options.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from furlora.train.encode import BatchEncoder
from furlora.train.loss import per_pixel_error, weighted_mean
from furlora.train.noise import StepDraws, validation_draws
from furlora.train.step import PreparedBatch, loss_weights, predict, prepare_batch, prediction_target


@torch.no_grad()
def validation_loss(unet: Any, encoder: BatchEncoder, dataset: Any, collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                    noise_scheduler: Any, prediction_type: str, inpaint: bool, seed: int, timesteps: list[int], max_samples: int,
                    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> float:
    """Mean masked validation loss over samples x timesteps (a float >= 0)."""
    scores: list[torch.Tensor] = []
    no_full = StepDraws(noise=torch.empty(0), timesteps=torch.empty(0), full_mask=torch.zeros(1, dtype=torch.bool))
    for index in range(min(len(dataset), max_samples)):
        sample = dataset.sample(index, 0) if hasattr(dataset, "sample") else dataset[index]
        batch = collate([sample])
        prepared = prepare_batch(batch, no_full, encoder, inpaint, text_trainable=False)
        key = str(sample.get("key", index))
        draws = validation_draws(seed, key, timesteps, tuple(prepared.latents.shape[1:]))
        count = len(draws)
        device = prepared.latents.device
        noise = torch.stack([n for _, n in draws]).to(device)
        ts = torch.tensor([t for t, _ in draws], dtype=torch.int64, device=device)
        # Score all timesteps of the sample in one forward: repeat its conditioning.
        repeated = _repeat(prepared, count)
        latents = repeated.latents
        noisy = noise_scheduler.add_noise(latents, noise, ts)
        target = prediction_target(noise_scheduler, latents, noise, ts, prediction_type)
        with autocast():
            prediction = predict(unet, repeated, noisy, ts)
        scores.append(weighted_mean(per_pixel_error(prediction, target), loss_weights(repeated, 0.0), True))
    if not scores:
        raise ValueError("the validation dataset is empty")
    return float(torch.cat(scores).mean())


def _repeat(prepared: PreparedBatch, count: int) -> PreparedBatch:
    """A copy of a one-sample PreparedBatch with every tensor repeated ``count`` times on dim 0."""
    tensors = {k: v.expand(count, *v.shape[1:]).contiguous() for k, v in vars(prepared).items() if isinstance(v, torch.Tensor)}
    return dataclasses.replace(prepared, region_names=prepared.region_names * count, **tensors)
