"""SDXL text and micro-conditioning, computed exactly as diffusers' SDXL pipelines do.

Text: both CLIP encoders read the caption; the penultimate hidden state of each is taken and
concatenated along the feature axis (TE1 width + TE2 width = the UNet's cross-attention width);
the pooled, projected output of text encoder 2 feeds the added conditioning.
Micro-conditioning: six numbers per sample, (original h, original w, crop top, crop left,
target h, target w), from the dataset's real sizes and crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def tokenize(tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids [B, 77] (int64): padded to the tokenizer's max length, truncated."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_tokens(
    text_encoder: Any, text_encoder_2: Any, ids_1: torch.Tensor, ids_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode token ids with both encoders.

    Returns ``prompt_embeds`` [B, 77, hidden_1 + hidden_2] and ``pooled`` [B, projection_2],
    in the encoders' dtype. Gradients flow when the encoders train (LoRA on TE1/TE2).
    """
    device = next(text_encoder.parameters()).device
    out_1 = text_encoder(ids_1.to(device), output_hidden_states=True)
    out_2 = text_encoder_2(ids_2.to(device), output_hidden_states=True)
    embeds = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
    return embeds, out_2.text_embeds


def encode_prompt(components: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode captions with an :class:`~furlora.models.sdxl.SDXLComponents`' two encoders."""
    ids_1 = tokenize(components.tokenizer, prompts)
    ids_2 = tokenize(components.tokenizer_2, prompts)
    return encode_tokens(components.text_encoder, components.text_encoder_2, ids_1, ids_2)


def micro_conditioning(
    original_size: Sequence[int], crop_top_left: Sequence[int], target_size: Sequence[int]
) -> torch.Tensor:
    """SDXL ``add_time_ids`` of one sample: float32 [6] = (orig h, orig w, top, left, target h, target w)."""
    values = [*original_size, *crop_top_left, *target_size]
    if len(values) != 6:
        raise ValueError(
            f"micro-conditioning needs (h, w) sizes and a (top, left) crop, got {original_size}, "
            f"{crop_top_left}, {target_size}"
        )
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def batch_micro_conditioning(
    original_sizes: Sequence[Sequence[int]],
    crops_top_left: Sequence[Sequence[int]],
    target_sizes: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Stacked ``add_time_ids`` of a batch: float32 [B, 6]."""
    return torch.stack(
        [micro_conditioning(o, c, t) for o, c, t in zip(original_sizes, crops_top_left, target_sizes, strict=True)]
    )
