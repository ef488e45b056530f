"""The committed pretrained tiny models: recorded hashes, size budget, and that they learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from furlora.models.pretrained import (
    MANIFEST_FILE,
    PRETRAINED_DIR,
    PRETRAINED_MODELS,
    pretrained_model_path,
    verify_pretrained_files,
)
from furlora.pretrain.corpus import ProceduralCorpus

# Pictures of a corpus seed that pretraining never drew from (training used 1234, validation 1235).
UNSEEN_SEED = 99


def test_recorded_hashes_match_and_weights_fit_the_budget() -> None:
    manifest = json.loads(MANIFEST_FILE.read_text())
    for name in PRETRAINED_MODELS:
        checked = verify_pretrained_files(name)
        assert any(p.name.endswith(".safetensors") for p in checked)
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    assert total <= 25 * 1024 * 1024
    on_disk = {p.relative_to(PRETRAINED_DIR).as_posix() for p in PRETRAINED_DIR.rglob("*") if p.is_file()}
    weights_on_disk = {p for p in on_disk if p.endswith(".safetensors")}
    assert weights_on_disk == {p for p in manifest["files"] if p.endswith(".safetensors")}  # nothing unrecorded


@pytest.fixture(scope="module")
def loaded(model_cache: Path) -> dict:
    from furlora.models.sdxl import load_sdxl

    return {name: load_sdxl(pretrained_model_path(name, model_cache)) for name in PRETRAINED_MODELS}


def test_both_models_load_with_the_tiny_architecture(loaded: dict, tiny_sdxl: Path, tiny_sdxl_inpaint: Path) -> None:
    base, inpaint = loaded["tiny-sdxl-pretrained"], loaded["tiny-sdxl-inpaint-pretrained"]
    assert inpaint.is_inpainting and not base.is_inpainting
    for comp, random_folder in ((base, tiny_sdxl), (inpaint, tiny_sdxl_inpaint)):
        random_cfg = json.loads((random_folder / "unet" / "config.json").read_text())
        loaded_cfg = json.loads(json.dumps(dict(comp.unet.config), default=str))  # tuples -> lists, as in the file
        for key, value in random_cfg.items():
            if not key.startswith("_"):
                assert loaded_cfg[key] == value, key
        state = comp.unet.state_dict()
        assert all(t.dtype == torch.float32 for t in state.values())  # fp16 on disk, fp32 when asked


def test_pretrained_vae_reconstructs_unseen_pictures(loaded: dict, tiny_sdxl_inpaint: Path) -> None:
    from diffusers import AutoencoderKL

    from furlora.pretrain.loop import reconstruction_psnr

    corpus = ProceduralCorpus(UNSEEN_SEED, 128)
    trained = reconstruction_psnr(loaded["tiny-sdxl-inpaint-pretrained"].vae, corpus, count=8)
    random = reconstruction_psnr(AutoencoderKL.from_pretrained(tiny_sdxl_inpaint, subfolder="vae", variant="fp16", torch_dtype=torch.float32), corpus, count=8)
    assert trained > 15.0 and trained > random + 4.0, (trained, random)


def test_pretrained_unets_denoise_better_than_random(loaded: dict, tiny_sdxl_inpaint: Path) -> None:
    from diffusers import UNet2DConditionModel

    from furlora.pretrain.loop import DualConvIn, unet_validation_loss

    base, inpaint = loaded["tiny-sdxl-pretrained"], loaded["tiny-sdxl-inpaint-pretrained"]
    parts = {
        "vae": inpaint.vae, "text_encoder": inpaint.text_encoder, "text_encoder_2": inpaint.text_encoder_2,
        "tokenizer": inpaint.tokenizer, "tokenizer_2": inpaint.tokenizer_2, "noise_scheduler": inpaint.noise_scheduler,
    }
    corpus = ProceduralCorpus(UNSEEN_SEED, 128)

    def losses(unet9, conv4) -> dict:
        # The base model's own conv_in on the 9-channel model's body: equal to the base model,
        # since both share every weight after the input convolution.
        unet9.conv_in = DualConvIn(unet9.conv_in, conv4)
        try:
            return unet_validation_loss(unet9, parts, corpus, count=8, batch_size=8, seed=3)
        finally:
            unet9.conv_in = unet9.conv_in.conv9

    trained = losses(inpaint.unet, base.unet.conv_in)
    random_unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_inpaint, subfolder="unet", variant="fp16", torch_dtype=torch.float32).eval()
    random = losses(random_unet, torch.nn.Conv2d(4, 32, 3, padding=1))
    for key in ("base", "inpaint", "inpaint_masked"):
        assert trained[key] < 0.6 * random[key], (key, trained, random)
