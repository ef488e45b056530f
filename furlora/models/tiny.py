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

import json
import logging
from pathlib import Path
from typing import Any

import torch

from furlora.models.cache_folder import model_folder, publish_folder
from furlora.models.public_configs import real_sdxl_config
from furlora.models.tokenizer import build_vocab_and_merges, write_tokenizer

logger = logging.getLogger(__name__)

TINY_SEED = 20260101

TE1_HIDDEN = 32  # CLIP ViT-L stand-in (real: 768)
TE2_HIDDEN = 64  # OpenCLIP bigG stand-in (real: 1280), with projection
ADDITION_TIME_EMBED_DIM = 8

_VOCAB_SIZE = len(build_vocab_and_merges()[0])


#: Config keys that are file metadata, not model behaviour (library versions, the dtype the
#: weights were saved in: the tiny weights are fp16 on disk like the real ones).
CONFIG_METADATA_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "architectures", "model_type",
                        "torch_dtype", "dtype", "transformers_version")


def _real(component: str) -> dict[str, Any]:
    """A real SDXL config without its metadata keys (constructor keyword arguments).

    A tiny model changes sizes only (tests/models/test_tiny_config_parity.py lists them). Every
    other key, including the quirks that change behaviour (``eos_token_id: 2`` on both text
    encoders, so transformers pools at the highest token id; the scheduler; the VAE's
    ``force_upcast``), is the real value, so the tiny models take the code paths real SDXL takes.
    """
    return {k: v for k, v in real_sdxl_config(component).items() if k not in CONFIG_METADATA_KEYS}


def _text_encoder_config(real: str, hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        **_real(real),
        "vocab_size": _VOCAB_SIZE,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "projection_dim": hidden,
    }


def _unet_config(in_channels: int) -> dict[str, Any]:
    return {
        **_real("unet_inpainting" if in_channels == 9 else "unet"),
        "sample_size": 32,
        "block_out_channels": [32, 64, 128],
        "transformer_layers_per_block": [1, 1, 2],
        "attention_head_dim": [1, 2, 4],
        "cross_attention_dim": TE1_HIDDEN + TE2_HIDDEN,
        "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
        # 6 micro-conditioning numbers (original size, crop top-left, target size) + pooled TE2.
        "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + TE2_HIDDEN,
    }


def _vae_config() -> dict[str, Any]:
    return {
        **_real("vae"),
        "block_out_channels": [32, 32, 64, 64],  # four blocks, three downsamplings: 8x, as SDXL
        "layers_per_block": 1,
        "sample_size": 256,
    }


#: The weight-file variant the tiny models are written in (fp16, named as on the hub). Loading
#: them directly with diffusers/transformers takes ``variant=TINY_VARIANT`` and an explicit
#: float32 dtype; :func:`furlora.models.sdxl.load_sdxl` finds the variant by itself.
TINY_VARIANT = "fp16"

#: name -> UNet input channels.
TINY_MODELS: dict[str, int] = {"tiny-sdxl": 4, "tiny-sdxl-inpaint": 9}


def tiny_spec(name: str) -> dict[str, Any]:
    """Everything that determines a tiny model's files (its cache key is a hash of this)."""
    return {
        "name": name,
        "seed": TINY_SEED,
        "unet": _unet_config(TINY_MODELS[name]),
        "vae": _vae_config(),
        "text_encoder": _text_encoder_config("text_encoder", TE1_HIDDEN, 2, 2),
        "text_encoder_2": _text_encoder_config("text_encoder_2", TE2_HIDDEN, 2, 4),
        "weights_dtype": "fp16",
        "format": 2,
    }


def ensure_tiny_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the diffusers-format folder of tiny model ``name``, building it once if needed.

    The folder name carries a hash of the spec, so a changed spec never serves stale files.
    Building writes into a temporary folder and renames it into place, so concurrent callers
    (parallel test workers) never see a half-written model.
    """
    spec = tiny_spec(name)
    target = model_folder(name, spec, cache_dir)
    if (target / "model_index.json").is_file():
        return target
    publish_folder(target, lambda tmp: _write_tiny_model(spec, tmp))
    logger.info("built tiny model %s at %s", name, target)
    return target


def _write_tiny_model(spec: dict[str, Any], folder: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        unet = UNet2DConditionModel(**spec["unet"])
        torch.manual_seed(spec["seed"] + 1)
        vae = AutoencoderKL(**spec["vae"])
        torch.manual_seed(spec["seed"] + 2)
        te1 = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"]))
        torch.manual_seed(spec["seed"] + 3)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"]))
    # fp16 on disk with the hub's variant file names (``*.fp16.safetensors``), as SDXL is
    # downloaded: loading then upcasts, and the variant lookup is exercised.
    for module, sub in ((unet, "unet"), (vae, "vae"), (te1, "text_encoder"), (te2, "text_encoder_2")):
        module.to(torch.float16).save_pretrained(folder / sub, safe_serialization=True, variant=TINY_VARIANT)
    write_weightless_parts(folder, inpainting=spec["unet"]["in_channels"] == 9)
    card = {
        "name": spec["name"],
        "what": "furlora embedded tiny SDXL-architecture model, random weights from a fixed seed",
        "seed": spec["seed"],
        "unet_in_channels": spec["unet"]["in_channels"],
    }
    (folder / "furlora_tiny.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def scheduler_config() -> dict[str, Any]:
    """SDXL's scheduler config without its metadata keys."""
    return {k: v for k, v in real_sdxl_config("scheduler").items() if not k.startswith("_")}


def write_weightless_parts(folder: Path, inpainting: bool, vocab_size: int | None = None) -> None:
    """Both tokenizers, the scheduler and ``model_index.json`` of a diffusers SDXL folder (tiny and
    real-size models alike); ``vocab_size`` pads the tokenizers' vocabulary (see ``write_tokenizer``)."""
    from diffusers import EulerDiscreteScheduler

    write_tokenizer(folder / "tokenizer", pad_token="<|endoftext|>", vocab_size=vocab_size)
    write_tokenizer(folder / "tokenizer_2", pad_token="!", vocab_size=vocab_size)
    EulerDiscreteScheduler.from_config(scheduler_config()).save_pretrained(folder / "scheduler")
    index = dict(real_sdxl_config("model_index"))
    index["_class_name"] = "StableDiffusionXLInpaintPipeline" if inpainting else "StableDiffusionXLPipeline"
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
