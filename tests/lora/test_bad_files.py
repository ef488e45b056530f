"""Bad LoRA files are rejected with the keys and the reason; nothing is ever unpickled."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from furlora.errors import LoraFormatError
from furlora.lora.formats import load_lora_file
from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings

Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def unet_manager(tiny_sdxl, **unet) -> LoraAdapters:
    from furlora.models.sdxl import load_sdxl

    settings = {"preset": "attn", "rank": 4, "alpha": 2.0, **unet}
    manager = LoraAdapters({"unet": load_sdxl(tiny_sdxl).unet}, LoraSettings.model_validate({"unet": settings}), seed=0)
    manager.apply()
    return manager


@pytest.fixture(scope="module")
def good(tiny_sdxl, tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    manager = unet_manager(tiny_sdxl)
    with torch.no_grad():
        for p in manager.trainable_parameters():
            p.normal_(0, 0.1)
    return {"diffusers": manager.save(folder / "d.safetensors"),
            "kohya": manager.save(folder / "k.safetensors", format="kohya")}


def rewrite(source, target, change):
    """Copy a safetensors file, letting ``change(tensors)`` edit the tensors (metadata kept)."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    change(tensors)
    save_file(tensors, target, metadata=metadata)
    return target


class _Marker:
    """Unpickling this object creates a file: proof that something unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickles_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "was-unpickled"
    disguised = tmp_path / "lora.safetensors"
    disguised.write_bytes(pickle.dumps({"unet.x.lora_A.weight": _Marker(marker)}))
    with pytest.raises(LoraFormatError, match="pickle .* never unpickles"):
        load_lora_file(disguised)
    torch_file = tmp_path / "lora.pt"
    torch.save({"unet.x.lora_A.weight": torch.zeros(1)}, torch_file)
    with pytest.raises(LoraFormatError, match="only from safetensors files"):
        load_lora_file(torch_file)
    assert not marker.exists()


def test_damaged_and_foreign_files(tmp_path, good):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(LoraFormatError, match="not a readable safetensors file"):
        load_lora_file(junk)
    with pytest.raises(LoraFormatError, match="does not exist"):
        load_lora_file(tmp_path / "missing.safetensors")
    other = tmp_path / "model.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(LoraFormatError, match="not an SDXL LoRA file in diffusers or kohya format"):
        load_lora_file(other)


def test_unknown_keys_are_named(tmp_path, good, tiny_sdxl):
    bad = rewrite(good["diffusers"], tmp_path / "extra.safetensors",
                  lambda t: t.update({"unet.down_blocks.1.attentions.0.norm.weight": torch.zeros(3)}))
    with pytest.raises(LoraFormatError, match=r"1 unknown keys .*unet.down_blocks.1.attentions.0.norm.weight"):
        load_lora_file(bad)
    kohya = rewrite(good["kohya"], tmp_path / "extra-k.safetensors",
                    lambda t: t.update({"lora_unet_input_blocks_4_1_frobnicate.lora_down.weight": torch.zeros(4, 3)}))
    with pytest.raises(LoraFormatError, match="lora_unet_input_blocks_4_1_frobnicate.lora_down.weight: unknown SDXL module"):
        load_lora_file(kohya)
    # valid LoRA keys, but for modules this config does not hook
    manager = unet_manager(tiny_sdxl, blocks=["mid_block"])
    with pytest.raises(LoraFormatError) as info:
        manager.load(good["diffusers"])
    text = str(info.value)
    assert "unknown keys" in text and "unet.down_blocks.1.attentions.0" in text
    assert "hooked modules have no weights" not in text


def test_mismatched_shapes_are_named(tmp_path, good, tiny_sdxl):
    def widen(t):
        a = t[f"unet.{Q}.lora_A.weight"]
        t[f"unet.{Q}.lora_A.weight"] = torch.zeros(a.shape[0], a.shape[1] + 1)

    bad = rewrite(good["diffusers"], tmp_path / "shape.safetensors", widen)
    with pytest.raises(LoraFormatError, match=rf"mismatched shapes .*unet.{Q}.lora_A.weight: shape \(4, 65\) in the file, "
                                              r"the model needs \(4, 64\)"):
        unet_manager(tiny_sdxl).load(bad)
    half = rewrite(good["diffusers"], tmp_path / "half.safetensors", lambda t: t.pop(f"unet.{Q}.lora_B.weight"))
    with pytest.raises(LoraFormatError, match=rf"unet.{Q}: has lora_A but no lora_B \(up\) weight"):
        load_lora_file(half)


def test_rank_or_alpha_differing_from_config(good, tiny_sdxl):
    with pytest.raises(LoraFormatError, match=r"rank 4 in the file but lora.unet.rank is 8, for 136 modules"):
        unet_manager(tiny_sdxl, rank=8).load(good["kohya"])
    with pytest.raises(LoraFormatError, match=r"alpha 2 in the file but lora.unet.alpha is 4, for 136 modules"):
        unet_manager(tiny_sdxl, alpha=4.0).load(good["diffusers"])


def test_nan_values_are_rejected(tmp_path, good, tiny_sdxl):
    def poison(t):
        t[f"unet.{Q}.lora_B.weight"][0, 0] = float("nan")

    bad = rewrite(good["diffusers"], tmp_path / "nan.safetensors", poison)
    with pytest.raises(LoraFormatError, match=rf"NaN/inf values in 1 tensors: unet.{Q}.lora_B.weight"):
        load_lora_file(bad)
    manager = unet_manager(tiny_sdxl)
    with torch.no_grad():
        manager.trainable_parameters()[0][0, 0] = float("inf")
    with pytest.raises(LoraFormatError, match="refusing to save LoRA weights with NaN/inf"):
        manager.save(tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_kohya_dora_and_odd_alpha_are_rejected(tmp_path, good):
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    dora = rewrite(good["kohya"], tmp_path / "dora.safetensors", lambda t: t.update({f"{stem}.dora_scale": torch.ones(1, 32)}))
    with pytest.raises(LoraFormatError, match=f"{stem}.dora_scale: DoRA kohya files are not supported"):
        load_lora_file(dora)
    alpha = rewrite(good["kohya"], tmp_path / "alpha.safetensors", lambda t: t.update({f"{stem}.alpha": torch.ones(2)}))
    with pytest.raises(LoraFormatError, match=f"{stem}.alpha: alpha must be a single number"):
        load_lora_file(alpha)


def test_missing_alpha_means_alpha_equals_rank_and_is_flagged(tmp_path, good, tiny_sdxl):
    no_alpha = rewrite(good["kohya"], tmp_path / "noalpha.safetensors",
                       lambda t: [t.pop(k) for k in [k for k in t if k.endswith(".alpha")]])
    weights = load_lora_file(no_alpha)
    assert not weights.alpha_recorded and set(weights.alphas.values()) == {4.0}
    with pytest.raises(LoraFormatError, match=r"alpha 4 in the file \(no alpha recorded: alpha = rank assumed\) "
                                              r"but lora.unet.alpha is 2"):
        unet_manager(tiny_sdxl).load(no_alpha)
