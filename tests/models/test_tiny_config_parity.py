"""The tiny models carry every behaviour-changing key of the real SDXL configs (issue 12).

Each written tiny config is compared key by key with the public configs in
``furlora/models/sdxl_configs``; the only allowed differences are sizes (listed here, not
imported, so widening them takes a visible test change) and file metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from furlora.models.architecture import real_sdxl_config
from furlora.models.pretrained import PRETRAINED_MODELS, pretrained_model_path

ALLOWED_SIZE_DIFFERENCES = {
    "unet": {"sample_size", "block_out_channels", "transformer_layers_per_block", "attention_head_dim",
             "cross_attention_dim", "addition_time_embed_dim", "projection_class_embeddings_input_dim"},
    "vae": {"block_out_channels", "layers_per_block", "sample_size"},
    "text_encoder": {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "projection_dim"},
    "text_encoder_2": {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "projection_dim"},
    "scheduler": set(),
}
#: Library versions and the saved dtype: no behaviour (the dtype on disk is checked below).
METADATA = {"_class_name", "_diffusers_version", "transformers_version", "torch_dtype", "dtype"}
WEIGHTED = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model",
            "text_encoder_2": "model"}


def _differences(folder: Path, unet_real: str) -> dict[str, set[str]]:
    out = {}
    for component in ALLOWED_SIZE_DIFFERENCES:
        real = real_sdxl_config(unet_real if component == "unet" else component)
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        tiny = json.loads((folder / component / name).read_text())
        out[component] = {k for k in real if k not in METADATA and tiny.get(k, "<missing>") != real[k]}
    return out


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sdxl-inpaint"])
def test_tiny_configs_differ_from_the_real_ones_in_sizes_only(name: str, model_cache: Path) -> None:
    from furlora.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model(name, model_cache)
    unet_real = "unet_inpainting" if name.endswith("inpaint") else "unet"
    differences = _differences(folder, unet_real)
    for component, allowed in ALLOWED_SIZE_DIFFERENCES.items():
        assert differences[component] <= allowed, (component, differences[component] - allowed)
        assert differences[component] == allowed, f"{component}: a size key equals the real one; update the list"
    # The quirks that change behaviour, spelled out.
    for encoder in ("text_encoder", "text_encoder_2"):
        config = json.loads((folder / encoder / "config.json").read_text())
        assert (config["bos_token_id"], config["eos_token_id"]) == (0, 2)  # legacy argmax pooling
    index = json.loads((folder / "model_index.json").read_text())
    real_index = real_sdxl_config("model_index")
    assert index["force_zeros_for_empty_prompt"] is True
    assert {k: v for k, v in index.items() if k != "_class_name"} == {
        k: v for k, v in real_index.items() if k != "_class_name"
    }
    tok1 = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    tok2 = json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert (tok1["pad_token"], tok2["pad_token"]) == ("<|endoftext|>", "!")


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sdxl-inpaint"])
def test_tiny_weights_are_fp16_files_with_the_variant_name(name: str, model_cache: Path) -> None:
    from furlora.models.sdxl import inspect_model_folder
    from furlora.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model(name, model_cache)
    for component, stem in WEIGHTED.items():
        files = sorted(p.name for p in (folder / component).glob("*.safetensors"))
        assert files == [f"{stem}.fp16.safetensors"], component
        with safe_open(str(folder / component / files[0]), framework="pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}, component
    assert inspect_model_folder(folder)["variant"] == "fp16"


def test_pretrained_tiny_configs_differ_in_sizes_and_the_trained_vae_scale_only(model_cache: Path) -> None:
    allowed = {**ALLOWED_SIZE_DIFFERENCES, "vae": ALLOWED_SIZE_DIFFERENCES["vae"] | {"scaling_factor"}}
    for name in PRETRAINED_MODELS:
        folder = pretrained_model_path(name, model_cache)
        unet_real = "unet" if name == "tiny-sdxl-pretrained" else "unet_inpainting"
        for component, found in _differences(folder, unet_real).items():
            assert found <= allowed[component], (name, component, found - allowed[component])


def test_tiny_model_loads_fp32_from_fp16_files(tiny_sdxl: Path) -> None:
    from furlora.models.sdxl import load_sdxl

    comps = load_sdxl(tiny_sdxl)
    assert comps.unet.dtype == torch.float32 and comps.text_encoder_2.dtype == torch.float32
    weight = comps.unet.conv_in.weight
    assert torch.equal(weight, weight.half().float())  # values come from the fp16 file
