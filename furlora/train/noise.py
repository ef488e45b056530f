"""The random draws of one training micro-step: noise (with offset), timesteps and full-mask choices.

All of them come from :func:`furlora.train.rng.step_generator`, so they are a pure function of
(seed, global step, rank, micro step) and the shapes involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from furlora.train.rng import step_generator


@dataclass
class StepDraws:
    """Random inputs of one micro-step.

    ``noise``: float32 [B, C, h, w] standard normal (plus the noise offset, if any).
    ``timesteps``: int64 [B] in [0, num_train_timesteps).
    ``full_mask``: bool [B], True = train this sample with a full inpainting mask.
    """

    noise: torch.Tensor
    timesteps: torch.Tensor
    full_mask: torch.Tensor


def draw_step(seed: int, global_step: int, rank: int, micro_step: int, latent_shape: tuple[int, int, int, int],
              num_train_timesteps: int, noise_offset: float = 0.0, full_mask_fraction: float = 0.0) -> StepDraws:
    """Draw everything random for one micro-step on the CPU (move to the device afterwards).

    Each quantity uses its own stream, so changing e.g. ``full_mask_fraction`` does not change
    the noise of the same step. (Caption dropout is the dataset's: data.captions.dropout.)
    """
    batch, channels = latent_shape[0], latent_shape[1]

    def gen(stream: str) -> torch.Generator:
        return step_generator(seed, global_step, rank, stream, micro_step)

    noise = torch.randn(latent_shape, generator=gen("noise"), dtype=torch.float32)
    if noise_offset > 0:
        # A per-(sample, channel) constant shift: lets the model learn global brightness changes.
        offset = torch.randn((batch, channels, 1, 1), generator=gen("noise_offset"), dtype=torch.float32)
        noise = noise + noise_offset * offset
    timesteps = torch.randint(0, num_train_timesteps, (batch,), generator=gen("timesteps"), dtype=torch.int64)
    full_mask = torch.rand((batch,), generator=gen("full_mask")) < full_mask_fraction
    return StepDraws(noise=noise, timesteps=timesteps, full_mask=full_mask)


def validation_draws(
    seed: int, sample_key: str, timesteps: list[int], latent_shape: tuple[int, int, int]
) -> list[tuple[int, torch.Tensor]]:
    """Fixed (timestep, noise [C, h, w]) pairs for one held-out sample: identical at every validation."""
    out = []
    for t in timesteps:
        generator = step_generator(seed, 0, 0, f"validation/{sample_key}/{t}")
        out.append((t, torch.randn(latent_shape, generator=generator, dtype=torch.float32)))
    return out
