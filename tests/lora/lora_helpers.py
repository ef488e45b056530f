"""Helpers of the LoRA tests: fixed inputs and one SDXL conditioning + UNet forward pass."""

from __future__ import annotations

import torch


def tiny_inputs(seed: int = 0, batch: int = 2) -> dict[str, torch.Tensor]:
    """Fixed random inputs of the tiny SDXL: token ids of both tokenizers, latents, timesteps, time ids."""
    g = torch.Generator().manual_seed(seed)
    return {
        "ids_1": torch.randint(0, 250, (batch, 77), generator=g),
        "ids_2": torch.randint(0, 250, (batch, 77), generator=g),
        "latents": torch.randn(batch, 4, 16, 16, generator=g),
        "timesteps": torch.tensor([10, 700][:batch]),
        "time_ids": torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]] * batch),
    }


def sdxl_forward(unet, text_encoder, text_encoder_2, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL conditioning exactly as the pipelines do it, then one UNet call.

    Returns every output that a LoRA on any component changes: the UNet prediction, both
    encoders' last hidden states, and the pooled projection of encoder 2.
    """
    dtype = next(unet.parameters()).dtype
    out_1 = text_encoder(inputs["ids_1"], output_hidden_states=True)
    out_2 = text_encoder_2(inputs["ids_2"], output_hidden_states=True)
    embeds = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
    sample = unet(
        inputs["latents"].to(dtype), inputs["timesteps"], encoder_hidden_states=embeds.to(dtype),
        added_cond_kwargs={"text_embeds": out_2.text_embeds.to(dtype), "time_ids": inputs["time_ids"].to(dtype)},
    ).sample
    return {
        "unet": sample,
        "text_encoder": out_1.last_hidden_state,
        "text_encoder_2": out_2.last_hidden_state,
        "pooled": out_2.text_embeds,
    }


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}
