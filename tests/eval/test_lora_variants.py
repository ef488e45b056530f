"""LoRA variants: off is the plain pipeline, scale 0 is off, kohya = diffusers, wrong
architecture is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_helpers import box_mask, fast_settings, textured_image
from furlora.errors import EvaluationError
from furlora.eval.inpaint import MultiPassInpainter
from furlora.eval.lora_variants import (
    OFF,
    Variant,
    apply_variant,
    build_variants,
    check_lora_files,
    load_loras,
    unload_loras,
)
from furlora.eval.settings import EvalSettings, PassSettings

PASSES = (PassSettings(strength=1.0, steps=2, feather=4), PassSettings(strength=0.6, steps=2, feather=6))


@pytest.fixture(scope="module")
def own_components(tiny_sdxl):
    """A private copy of the tiny base model (LoRA layers get attached to it)."""
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(tiny_sdxl)


@pytest.fixture
def loaded(own_components, lora_files):
    inpainter = MultiPassInpainter(own_components, fast_settings(*PASSES))
    infos = load_loras(inpainter.pipeline, [lora_files["diffusers"], lora_files["kohya"]])
    yield inpainter, infos
    unload_loras(inpainter.pipeline)


def run(inpainter, seed=0):
    return inpainter.inpaint(textured_image(64, 64), box_mask(64, 64, 16, 12, 48, 52), seed=seed).image


def test_off_equals_the_plain_pipeline_and_scale_zero_equals_off(own_components, loaded):
    inpainter, infos = loaded
    assert [i.format for i in infos] == ["diffusers", "kohya"]
    assert [i.adapter for i in infos] == ["fur_diffusers", "fur_kohya"]
    apply_variant(inpainter.pipeline, OFF)
    off = run(inpainter)
    unload_loras(inpainter.pipeline)
    plain = run(MultiPassInpainter(own_components, fast_settings(*PASSES)))  # no LoRA ever loaded
    assert np.array_equal(off, plain)
    load_loras(inpainter.pipeline, [infos[0].path, infos[1].path])
    apply_variant(inpainter.pipeline, Variant("zero", {"fur_diffusers": 0.0}))
    assert np.array_equal(run(inpainter), off)
    apply_variant(inpainter.pipeline, Variant("on", {"fur_diffusers": 1.0}))
    on = run(inpainter)
    assert not np.array_equal(on, off)
    # The kohya file is the same LoRA: identical output.
    apply_variant(inpainter.pipeline, Variant("kohya", {"fur_kohya": 1.0}))
    assert np.array_equal(run(inpainter), on)
    # Half the scale lies in between; switching the text-encoder part off changes the result.
    apply_variant(inpainter.pipeline, Variant("half", {"fur_diffusers": 0.5}))
    half = run(inpainter).astype(int)
    assert 0 < np.abs(half - off).sum() < np.abs(on.astype(int) - off).sum() * 1.5
    apply_variant(inpainter.pipeline, Variant("on", {"fur_diffusers": 1.0}), {"text_encoder": 0.0})
    unet_only = run(inpainter)
    assert not np.array_equal(unet_only, on) and not np.array_equal(unet_only, off)


def test_build_variants():
    from furlora.eval.lora_variants import LoraFile

    a = LoraFile(path=None, adapter="a", format="diffusers", components=("unet",), modules=1)
    b = LoraFile(path=None, adapter="b", format="kohya", components=("unet",), modules=1)
    names = [v.name for v in build_variants([a, b], EvalSettings(lora_scales=[0.5, 1.0], combine_loras=True))]
    assert names == ["off", "a@0.5", "a@1", "b@0.5", "b@1", "all@0.5", "all@1"]
    assert [v.name for v in build_variants([], EvalSettings())] == ["off"]
    assert [v.name for v in build_variants([a], EvalSettings(include_off=False))] == ["a@1"]


def test_a_lora_for_another_architecture_names_the_mismatched_keys(own_components, tmp_path):
    from furlora.lora.formats import save_diffusers_lora
    from furlora.lora.weights import LoraWeights

    g = torch.Generator().manual_seed(0)
    tensors = {
        # SD 1.5-style: attention in down_blocks.0 (SDXL has none there) ...
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 32, generator=g),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(32, 4, generator=g),
        # ... and a cross-attention fed by a 768-wide text encoder (this model's is 96).
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.randn(4, 768, generator=g),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.randn(64, 4, generator=g),
    }
    weights = LoraWeights(tensors, {k.rsplit(".lora_", 1)[0]: 4.0 for k in tensors})
    path = save_diffusers_lora(tmp_path / "sd15.safetensors", weights)
    inpainter = MultiPassInpainter(own_components, fast_settings())
    with pytest.raises(EvaluationError) as info:
        load_loras(inpainter.pipeline, [path])
    message = str(info.value)
    assert "sd15.safetensors is a LoRA for another architecture" in message
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in message
    assert "attn2.to_k: LoRA maps 768 -> 64 features but the model's layer is 96 -> 64" in message
    assert not inpainter.pipeline.get_list_adapters() or not any(inpainter.pipeline.get_list_adapters().values())


def test_lora_files_are_checked_before_any_weight_loads(tiny_sdxl, tmp_path, lora_files):
    from furlora.models.architecture import build_meta_sdxl

    modules = build_meta_sdxl(str(tiny_sdxl), ("unet", "text_encoder", "text_encoder_2"))
    assert next(modules["unet"].parameters()).device.type == "meta"
    infos = [info for info, _ in check_lora_files([lora_files["diffusers"], lora_files["kohya"]], modules)]
    assert [i.modules for i in infos] == [infos[0].modules] * 2 and infos[0].modules > 10
    pickle = tmp_path / "lora.ckpt"
    pickle.write_bytes(b"\x80\x04fake pickle")
    with pytest.raises(EvaluationError, match="never unpickles"):
        check_lora_files([pickle], modules)
    with pytest.raises(EvaluationError, match="does not exist"):
        check_lora_files([tmp_path / "missing.safetensors"], modules)
