"""Trained LoRA files load in diffusers' SDXL pipeline at the trained strength (both formats),
and back into the hook manager with the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from lora_helpers import max_diff, sdxl_forward, tiny_inputs
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings

# alpha != rank everywhere, different per component; conv LoRA included (kohya's LoCon naming)
CONFIG = {
    "unet": {"preset": ["attn-ff", "conv"], "rank": 4, "alpha": 2.0},
    "text_encoder": {"enabled": True, "preset": "attn-mlp", "rank": 2, "alpha": 5.0},
    "text_encoder_2": {"enabled": True, "preset": "attn", "rank": 3, "alpha": 1.5},
}


@pytest.fixture(scope="module")
def trained(tiny_sdxl, tmp_path_factory):
    """A few AdamW steps with LoRA on all three components; both files written."""
    from furlora.models.sdxl import load_sdxl

    tiny = load_sdxl(tiny_sdxl)
    inputs = tiny_inputs(seed=3)
    with torch.no_grad():
        base = sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, inputs)
    manager = LoraAdapters({"unet": tiny.unet, "text_encoder": tiny.text_encoder,
                               "text_encoder_2": tiny.text_encoder_2}, LoraSettings.model_validate(CONFIG), seed=0)
    manager.apply()
    optimizer = torch.optim.AdamW(manager.parameter_groups(), lr=2e-2)
    for step in range(3):
        out = sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, tiny_inputs(seed=10 + step))
        loss = (out["unet"] - 1).pow(2).mean() + out["text_encoder"].pow(2).mean() + out["pooled"].pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        result = sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, inputs)
    folder = tmp_path_factory.mktemp("lora-files")
    files = {fmt: manager.save(folder / f"fur-{fmt}.safetensors", format=fmt, metadata={"ss_steps": "3"})
             for fmt in ("diffusers", "kohya")}
    return {"manager": manager, "inputs": inputs, "base": base, "result": result, "files": files}


def pipeline_outputs(tiny_sdxl, file, inputs):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, variant="fp16", torch_dtype=torch.float32)
    pipe.load_lora_weights(str(file.parent), weight_name=file.name)
    with torch.no_grad():
        return sdxl_forward(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, inputs)


def test_training_changed_every_component(trained):
    diffs = max_diff(trained["result"], trained["base"])
    assert all(d > 1e-3 for d in diffs.values()), diffs


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_diffusers_pipeline_loads_the_file_at_the_trained_strength(trained, tiny_sdxl, fmt):
    loaded = pipeline_outputs(tiny_sdxl, trained["files"][fmt], trained["inputs"])
    diffs = max_diff(loaded, trained["result"])
    assert all(d < 1e-5 for d in diffs.values()), diffs


def test_without_the_alpha_metadata_diffusers_loads_the_wrong_strength(trained, tiny_sdxl, tmp_path):
    # The failure of diffusers' own scripts: no adapter metadata -> alpha = rank assumed.
    source = trained["files"]["diffusers"]
    stripped = tmp_path / "no-alpha.safetensors"
    save_file(load_file(source), stripped, metadata={"format": "pt"})
    loaded = pipeline_outputs(tiny_sdxl, stripped, trained["inputs"])
    assert max_diff(loaded, trained["result"])["unet"] > 1e-3


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_file_loads_back_into_the_manager_with_the_same_weights(trained, tiny_sdxl, fmt):
    from furlora.models.sdxl import load_sdxl

    tiny = load_sdxl(tiny_sdxl)
    manager = LoraAdapters({"unet": tiny.unet, "text_encoder": tiny.text_encoder,
                               "text_encoder_2": tiny.text_encoder_2}, LoraSettings.model_validate(CONFIG), seed=7)
    manager.apply()
    weights = manager.load(trained["files"][fmt])
    assert weights.format == fmt
    original = trained["manager"].lora_state_dict()
    restored = manager.lora_state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[k], original[k]) for k in original)
    with torch.no_grad():
        out = sdxl_forward(tiny.unet, tiny.text_encoder, tiny.text_encoder_2, trained["inputs"])
    assert max(max_diff(out, trained["result"]).values()) == 0.0


def test_kohya_file_layout(trained):
    file = trained["files"]["kohya"]
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
        alphas = {k: float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_steps"] == "3"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2"}
    assert all(k.startswith(("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_")) for k in keys)
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in keys)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight" in keys  # conv in the first stage
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in keys
    modules = {k.rsplit(".", 2)[0] for k in keys if k.endswith(".lora_down.weight")}
    assert set(alphas) == {m + ".alpha" for m in modules}
    expected = {"lora_unet_": 2.0, "lora_te1_": 5.0, "lora_te2_": 1.5}
    assert all(alphas[k] == next(v for p, v in expected.items() if k.startswith(p)) for k in alphas)


def test_diffusers_file_records_rank_and_alpha(trained):
    with safe_open(str(trained["files"]["diffusers"]), framework="pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    config = json.loads(meta["lora_adapter_metadata"])
    assert (config["unet.r"], config["unet.lora_alpha"]) == (4, 2.0)
    assert (config["text_encoder.r"], config["text_encoder.lora_alpha"]) == (2, 5.0)
    assert (config["text_encoder_2.r"], config["text_encoder_2.lora_alpha"]) == (3, 1.5)
    # text_model. kept in the keys (ComfyUI / A1111 / older diffusers expect it)
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert json.loads(meta["furlora.lora_settings"])["unet"]["preset"] == ["attn-ff", "conv"]
