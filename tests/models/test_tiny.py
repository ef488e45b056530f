"""The embedded tiny models: SDXL architecture, deterministic, loadable through the normal loader."""

from __future__ import annotations

import json

import torch

from furlora.models.architecture import count_parameters
from furlora.models.conditioning import batch_micro_conditioning, encode_prompt, tokenize
from furlora.models.sdxl import load_sdxl
from furlora.models.tokenizer import DOMAIN_WORDS


def test_tiny_inpaint_loads_and_runs_forward(tiny_sdxl_inpaint):
    comps = load_sdxl(tiny_sdxl_inpaint)
    assert comps.is_inpainting
    assert comps.unet.config.in_channels == 9
    # SDXL architecture facts.
    te1, te2 = comps.text_encoder.config.hidden_size, comps.text_encoder_2.config.hidden_size
    assert te1 != te2
    assert comps.unet.config.cross_attention_dim == te1 + te2
    assert comps.unet.config.addition_embed_type == "text_time"
    assert type(comps.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert not hasattr(comps.unet.down_blocks[0], "attentions")
    assert not hasattr(comps.unet.up_blocks[2], "attentions")
    assert len(comps.vae.config.block_out_channels) == 4  # three downsamplings: 8x

    embeds, pooled = encode_prompt(comps, ["a photo of a spitz dog", "white fur"])
    assert embeds.shape == (2, 77, te1 + te2)
    assert pooled.shape == (2, comps.text_encoder_2.config.projection_dim)
    time_ids = batch_micro_conditioning([(300, 200)] * 2, [(0, 10)] * 2, [(256, 256)] * 2)
    assert time_ids[0].tolist() == [300.0, 200.0, 0.0, 10.0, 256.0, 256.0]
    latents = torch.randn(2, 9, 16, 16, generator=torch.Generator().manual_seed(0))
    out = comps.unet(latents, torch.tensor([10, 900]), embeds,
                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert out.shape == (2, 4, 16, 16)
    assert torch.isfinite(out).all()
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    latent = comps.vae.encode(image).latent_dist.mean
    assert latent.shape == (1, 4, 8, 8)


def test_tiny_base_has_four_channel_unet(tiny_sdxl):
    comps = load_sdxl(tiny_sdxl)
    assert not comps.is_inpainting
    assert comps.unet.config.in_channels == 4
    assert comps.noise_scheduler.config.num_train_timesteps == 1000
    assert type(comps.scheduler).__name__ == "EulerDiscreteScheduler"


def test_loading_twice_is_bit_identical_and_rebuild_is_deterministic(tiny_sdxl, tmp_path):
    from furlora.models.tiny import ensure_tiny_model

    a = load_sdxl(tiny_sdxl)
    rebuilt = ensure_tiny_model("tiny-sdxl", tmp_path)  # a fresh build in another cache
    assert rebuilt != tiny_sdxl
    b = load_sdxl(rebuilt)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_tiny_model_by_name_uses_cache(model_cache):
    comps = load_sdxl("tiny-sdxl-inpaint")
    assert str(comps.source).startswith(str(model_cache))
    card = json.loads((comps.source / "furlora_tiny.json").read_text())
    assert card["unet_in_channels"] == 9


def test_dtypes_keep_vae_fp32(tiny_sdxl):
    comps = load_sdxl(tiny_sdxl, dtype="bf16")
    assert comps.unet.dtype == torch.bfloat16
    assert comps.text_encoder.dtype == torch.bfloat16
    assert comps.vae.dtype == torch.float32
    assert not any(p.requires_grad for p in comps.unet.parameters())


def test_parameter_counts_are_small(tiny_sdxl_inpaint):
    comps = load_sdxl(tiny_sdxl_inpaint)
    counts = {n: count_parameters(getattr(comps, n)) for n in ("unet", "vae", "text_encoder", "text_encoder_2")}
    assert counts["unet"] < 20_000_000
    assert counts["text_encoder"] < counts["text_encoder_2"]


def test_offline_tokenizer_domain_words_are_single_tokens(tiny_sdxl):
    comps = load_sdxl(tiny_sdxl)
    for tok in (comps.tokenizer, comps.tokenizer_2):
        for word in DOMAIN_WORDS:
            assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tokenize(comps.tokenizer, ["Spitz fur, ünïcode & 123!"])
    assert ids.shape == (1, 77)
    assert comps.tokenizer.decode(ids[0], skip_special_tokens=True).replace(" ", "") == "spitzfur,ünïcode&123!"
    # SDXL's tokenizer_2 pads with "!", tokenizer 1 with the end token.
    assert comps.tokenizer_2.pad_token == "!"
    assert comps.tokenizer.pad_token == "<|endoftext|>"
