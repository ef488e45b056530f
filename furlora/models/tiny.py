"""Embedded tiny SDXL-architecture models: ``tiny-sdxl`` (4-channel UNet) and
``tiny-sdxl-inpaint`` (9-channel inpainting UNet).

Same architecture family as SDXL base 1.0, at small widths: two CLIP text encoders of
different widths (the second, bigG-like, with a projection and pooled output), text_time added
conditioning from the pooled embedding and six size/crop numbers, cross-attention width equal to
the sum of both encoders' hidden sizes, no attention in the highest-resolution stage, and an 8x
VAE with 4 latent channels. Weights come from a fixed seed. A model is written once as a
diffusers-format folder into the cache directory and then loaded through the normal loader
(:func:`furlora.models.sdxl.load_sdxl`), so tests run the code real users run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from furlora.models.cache_folder import publish_folder
from furlora.models.tokenizer import build_vocab_and_merges, write_tokenizer

logger = logging.getLogger(__name__)

TINY_SEED = 20260101

TE1_HIDDEN = 32  # CLIP ViT-L stand-in (real: 768)
TE2_HIDDEN = 64  # OpenCLIP bigG stand-in (real: 1280), with projection
ADDITION_TIME_EMBED_DIM = 8

_VOCAB_SIZE = len(build_vocab_and_merges()[0])


def _text_encoder_config(hidden: int, layers: int, heads: int, act: str, projection: bool) -> dict[str, Any]:
    return {
        "vocab_size": _VOCAB_SIZE,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": hidden if projection else hidden,
        "bos_token_id": _VOCAB_SIZE - 2,
        "eos_token_id": _VOCAB_SIZE - 1,
        "pad_token_id": 1,
        "layer_norm_eps": 1e-5,
    }


def _unet_config(in_channels: int) -> dict[str, Any]:
    return {
        "sample_size": 32,
        "in_channels": in_channels,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 128],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 1, 2],
        "attention_head_dim": [1, 2, 4],
        "cross_attention_dim": TE1_HIDDEN + TE2_HIDDEN,
        "norm_num_groups": 32,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
        # 6 micro-conditioning numbers (original size, crop top-left, target size) + pooled TE2.
        "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + TE2_HIDDEN,
        "addition_embed_type_num_heads": 64,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64],  # four blocks, three downsamplings: 8x, as SDXL
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 256,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

#: name -> UNet input channels.
TINY_MODELS: dict[str, int] = {"tiny-sdxl": 4, "tiny-sdxl-inpaint": 9}


def tiny_spec(name: str) -> dict[str, Any]:
    """Everything that determines a tiny model's files (its cache key is a hash of this)."""
    if name not in TINY_MODELS:
        raise KeyError(name)
    return {
        "name": name,
        "seed": TINY_SEED,
        "unet": _unet_config(TINY_MODELS[name]),
        "vae": _VAE_CONFIG,
        "text_encoder": _text_encoder_config(TE1_HIDDEN, 2, 2, "quick_gelu", projection=False),
        "text_encoder_2": _text_encoder_config(TE2_HIDDEN, 2, 4, "gelu", projection=True),
        "format": 1,
    }


def default_cache_dir() -> Path:
    """``$FURLORA_CACHE`` or ``~/.cache/furlora``."""
    return Path(os.environ.get("FURLORA_CACHE") or Path.home() / ".cache" / "furlora")


def ensure_tiny_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the diffusers-format folder of tiny model ``name``, building it once if needed.

    The folder name carries a hash of the spec, so a changed spec never serves stale files.
    Building writes into a temporary folder and renames it into place, so concurrent callers
    (parallel test workers) never see a half-written model.
    """
    spec = tiny_spec(name)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "models" / f"{name}-{key}"
    if (target / "model_index.json").is_file():
        return target
    publish_folder(target, lambda tmp: _write_tiny_model(spec, tmp))
    logger.info("built tiny model %s at %s", name, target)
    return target


def _write_tiny_model(spec: dict[str, Any], folder: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from furlora.models.architecture import real_sdxl_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        unet = UNet2DConditionModel(**spec["unet"])
        torch.manual_seed(spec["seed"] + 1)
        vae = AutoencoderKL(**spec["vae"])
        torch.manual_seed(spec["seed"] + 2)
        te1 = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"]))
        torch.manual_seed(spec["seed"] + 3)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"]))
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    te1.save_pretrained(folder / "text_encoder", safe_serialization=True)
    te2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    write_tokenizer(folder / "tokenizer", pad_token="<|endoftext|>")
    write_tokenizer(folder / "tokenizer_2", pad_token="!")
    scheduler_config = {k: v for k, v in real_sdxl_config("scheduler").items() if not k.startswith("_")}
    EulerDiscreteScheduler.from_config(scheduler_config).save_pretrained(folder / "scheduler")
    pipeline = "StableDiffusionXLInpaintPipeline" if spec["unet"]["in_channels"] == 9 else "StableDiffusionXLPipeline"
    index = dict(real_sdxl_config("model_index"))
    index["_class_name"] = pipeline
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    card = {
        "name": spec["name"],
        "what": "furlora embedded tiny SDXL-architecture model, random weights from a fixed seed",
        "seed": spec["seed"],
        "unet_in_channels": spec["unet"]["in_channels"],
    }
    (folder / "furlora_tiny.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
