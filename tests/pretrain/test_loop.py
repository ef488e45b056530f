"""Pretraining loop pieces: thread adaptation, the shared UNet input, batch layout, repeatability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from furlora.pretrain.corpus import ProceduralCorpus
from furlora.pretrain.loop import DualConvIn, Stage, ThreadAdapter, prepare_unet_batch, train_vae, vae_loss


def test_thread_adapter_uses_idle_cores_only(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
        assert ThreadAdapter(max_threads=4)() == 4 == torch.get_num_threads()
        monkeypatch.setattr("os.getloadavg", lambda: (3.2, 0.0, 0.0))  # others keep ~3 cores busy
        assert ThreadAdapter(max_threads=4)() == 1
        monkeypatch.setattr("os.getloadavg", lambda: (9.0, 0.0, 0.0))
        assert ThreadAdapter(max_threads=2)() == 1  # never fewer than one
    finally:
        torch.set_num_threads(before)


def test_dual_conv_in_routes_base_rows_to_the_four_channel_convolution() -> None:
    torch.manual_seed(0)
    conv9, conv4 = nn.Conv2d(9, 8, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
    dual = DualConvIn(conv9, conv4)
    x = torch.randn(3, 9, 5, 5)
    assert torch.equal(dual(x), conv9(x))
    dual.base_rows = torch.tensor([True, False, True])
    out = dual(x)
    assert torch.allclose(out[0], conv4(x[:1, :4])[0], atol=1e-6)
    assert torch.allclose(out[2], conv4(x[2:, :4])[0], atol=1e-6)
    assert torch.allclose(out[1], conv9(x[1:2])[0], atol=1e-6)


@pytest.fixture(scope="module")
def parts(tiny_sdxl_inpaint: Path) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = tiny_sdxl_inpaint
    return {
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", variant="fp16", torch_dtype=torch.float32).eval(),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", variant="fp16", dtype=torch.float32).eval(),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", variant="fp16", dtype=torch.float32).eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        "noise_scheduler": DDPMScheduler.from_config(
            json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        ),
    }


def test_unet_batch_follows_the_sdxl_inpainting_layout(parts: dict) -> None:
    corpus = ProceduralCorpus(3, 32)
    batch = prepare_unet_batch(parts, corpus, list(range(6)), torch.Generator().manual_seed(1), base_fraction=0.5)
    assert batch.model_input.shape == (6, 9, 4, 4)
    assert batch.embeds.shape == (6, 77, 96) and batch.pooled.shape == (6, 64) and batch.time_ids.shape == (6, 6)
    base, inpaint = batch.base_rows, ~batch.base_rows
    assert base.any() and inpaint.any()
    assert (batch.model_input[base, 4:] == 0).all()  # base rows: only the noisy latents count
    masks = torch.nn.functional.interpolate(corpus.batch(list(range(6)))["inpaint_mask"], size=(4, 4))
    assert torch.equal(batch.model_input[inpaint, 4:5], masks[inpaint])  # channel 4 = latent-size mask
    assert (batch.latent_mask[base] == 1).all()
    again = prepare_unet_batch(parts, corpus, list(range(6)), torch.Generator().manual_seed(1), base_fraction=0.5)
    assert torch.equal(batch.model_input, again.model_input) and torch.equal(batch.noise, again.noise)


def test_vae_training_is_repeatable_and_learns(parts: dict) -> None:
    from diffusers import AutoencoderKL

    corpus = ProceduralCorpus(4, 32)
    runs = []
    for _ in range(2):
        vae = AutoencoderKL.from_config(parts["vae"].config)
        vae.load_state_dict(parts["vae"].state_dict())
        runs.append(train_vae(vae, corpus, Stage(steps=12, batch_size=2, lr=2e-3, seed=5)))
    assert runs[0].losses == runs[1].losses  # same seed: the same run, step for step
    assert runs[0].steps == 12
    pixels = corpus.batch([0, 1])["pixel_values"]
    with torch.no_grad():
        start = vae_loss(parts["vae"], pixels, torch.Generator().manual_seed(0))
        end = vae_loss(vae, pixels, torch.Generator().manual_seed(0))
    assert end < start


def test_decoder_only_training_keeps_the_latent_space(parts: dict) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(parts["vae"].config)
    vae.load_state_dict(parts["vae"].state_dict())
    stage = Stage(steps=10, batch_size=2, lr=1e-3, seed=1, stop_after=3)
    result = train_vae(vae, ProceduralCorpus(6, 32), stage, decoder_only=True)
    assert result.steps == 3  # stop_after ends early within the 10-step schedule
    before, after = parts["vae"].state_dict(), vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
