"""Fixtures of the evaluation tests: tiny models loaded once, small images, LoRA files, a tiny refiner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from eval_helpers import random_lora_weights


@pytest.fixture(scope="session")
def base_components(tiny_sdxl):
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl)


@pytest.fixture(scope="session")
def inpaint_components(tiny_sdxl_inpaint):
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl_inpaint)


@pytest.fixture(scope="session")
def lora_files(base_components, tmp_path_factory) -> dict[str, Path]:
    """The same random LoRA saved in the diffusers and the kohya format, plus a second LoRA."""
    from furlora.lora.formats import save_diffusers_lora, save_kohya_lora

    folder = tmp_path_factory.mktemp("loras")
    weights = random_lora_weights(base_components)
    return {
        "diffusers": save_diffusers_lora(folder / "fur_diffusers.safetensors", weights),
        "kohya": save_kohya_lora(folder / "fur_kohya.safetensors", weights),
        "other": save_diffusers_lora(folder / "other.safetensors", random_lora_weights(base_components, seed=1)),
    }


@pytest.fixture(scope="session")
def tiny_refiner(tiny_sdxl, tmp_path_factory) -> Path:
    """A tiny SDXL-refiner-architecture folder: UNet conditioned on text encoder 2 only, with an
    aesthetic score (5 time ids), sharing the tiny model's VAE, text encoder 2 and scheduler."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path_factory.mktemp("tiny-refiner")
    config = json.loads((tiny_sdxl / "unet" / "config.json").read_text())
    te2 = json.loads((tiny_sdxl / "text_encoder_2" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["cross_attention_dim"] = te2["hidden_size"]
    config["projection_class_embeddings_input_dim"] = 5 * config["addition_time_embed_dim"] + te2["projection_dim"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        UNet2DConditionModel(**config).save_pretrained(folder / "unet", safe_serialization=True)
    for name in ("vae", "text_encoder_2", "tokenizer_2", "scheduler"):
        shutil.copytree(tiny_sdxl / name, folder / name)
    index = {"_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": True,
             "text_encoder": [None, None], "tokenizer": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
