"""The saved SDXL embedding file: diffusers loads it and encodes prompts exactly as training did."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from furlora.errors import ConfigError
from furlora.tokens import TokenSettings, load_into_pipeline, prepare_tokens, read_embedding_file

PROMPTS = ["<spitz-fur>, a white dog", "black <spitz-fur> chest <spitz-fur>"]


def _settings(**kw):
    concept = {"name": "<spitz-fur>", "num_vectors": 3, "init_words": ["fur", "hair", "white"]}
    concept.update(kw)
    return TokenSettings(enabled=True, concepts=[concept], caption={"mode": "none"}, learning_rate=5e-2)


def _trained(parts, steps=3):
    tokens = prepare_tokens(parts, _settings())
    optimizer = torch.optim.AdamW(tokens.parameter_groups(1e-4))
    for step in range(steps):
        tokens.set_training_step(step, steps)
        optimizer.zero_grad()
        embeds, pooled = tokens.encode_prompt(PROMPTS)
        ((embeds - 1).pow(2).mean() + pooled.pow(2).mean()).backward()
        optimizer.step()
        tokens.after_optimizer_step()
    return tokens


def _pipeline(folder):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float32)


def _pipeline_embeds(pipe, prompts):
    embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


def test_file_layout(text_parts, tmp_path):
    tokens = _trained(text_parts, steps=1)
    (path,) = tokens.save(tmp_path / "emb", metadata={"base_model": "tiny-sdxl"})
    assert path.name == "spitz-fur.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["clip_g", "clip_l"]
        assert handle.get_tensor("clip_l").shape == (3, 32) and handle.get_tensor("clip_g").shape == (3, 64)
        assert handle.get_tensor("clip_l").dtype == torch.float32
        meta = handle.metadata()
    assert meta["furlora.token"] == "<spitz-fur>"
    assert json.loads(meta["furlora.tokens"]) == ["<spitz-fur>", "<spitz-fur>_1", "<spitz-fur>_2"]
    assert meta["base_model"] == "tiny-sdxl"
    assert tokens.save(tmp_path / "one.safetensors") == [tmp_path / "one.safetensors"]


def test_diffusers_load_textual_inversion_gives_the_trained_embeddings(text_parts, tiny_sdxl, tmp_path):
    from safetensors.torch import load_file

    tokens = _trained(text_parts)
    (path,) = tokens.save(tmp_path)
    ours_embeds, ours_pooled = tokens.encode_prompt(PROMPTS)

    # diffusers' documented SDXL route: one call per encoder with its tensor.
    pipe = _pipeline(tiny_sdxl)
    state = load_file(str(path))
    pipe.load_textual_inversion(state["clip_l"], token="<spitz-fur>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="<spitz-fur>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    embeds, pooled = _pipeline_embeds(pipe, PROMPTS)  # short-form prompts: diffusers expands them
    assert (embeds - ours_embeds).abs().max() < 1e-5
    # With the hub config's eos_token_id 2, plain diffusers pools text encoder 2 at the added
    # token; furlora (like kohya/ComfyUI/A1111) pools at the first end token. The README's line
    # for diffusers users makes the pipeline pool there too:
    assert (pooled - ours_pooled).abs().max() > 1e-3
    pipe.text_encoder_2.text_model.eos_token_id = pipe.tokenizer_2.eos_token_id
    embeds, pooled = _pipeline_embeds(pipe, PROMPTS)
    assert (embeds - ours_embeds).abs().max() < 1e-5
    assert (pooled - ours_pooled).abs().max() < 1e-5
    # The token really matters: without it the prompt encodes differently.
    plain, _ = _pipeline_embeds(pipe, ["fur, a white dog"])
    assert (plain - ours_embeds[:1]).abs().max() > 1e-3

    # Our helper does the same two calls.
    other = _pipeline(tiny_sdxl)
    assert load_into_pipeline(other, path) == ["<spitz-fur>", "<spitz-fur>_1", "<spitz-fur>_2"]
    embeds2, pooled2 = _pipeline_embeds(other, PROMPTS)
    assert torch.equal(embeds2, embeds) and torch.equal(pooled2, pooled)


def test_in_memory_encoders_work_in_a_pipeline(text_parts, tiny_sdxl):
    """The trained encoders and tokenizers can be handed to a diffusers pipeline as they are."""
    from diffusers import StableDiffusionXLPipeline

    tokens = _trained(text_parts, steps=1)
    base = _pipeline(tiny_sdxl)
    pipe = StableDiffusionXLPipeline(
        vae=base.vae, unet=base.unet, scheduler=base.scheduler, text_encoder=text_parts.text_encoder,
        text_encoder_2=text_parts.text_encoder_2, tokenizer=text_parts.tokenizer, tokenizer_2=text_parts.tokenizer_2,
    )
    with torch.no_grad():
        embeds, pooled = _pipeline_embeds(pipe, PROMPTS)
        ours_embeds, ours_pooled = tokens.encode_prompt(PROMPTS)
    assert torch.equal(embeds, ours_embeds) and torch.equal(pooled, ours_pooled)


def test_a_saved_file_continues_training(text_parts, make_text_parts, tmp_path):
    tokens = _trained(text_parts)
    (path,) = tokens.save(tmp_path)
    resumed = prepare_tokens(make_text_parts(), _settings(init_file=str(path)))
    for enc in ("text_encoder", "text_encoder_2"):
        assert torch.equal(resumed.rows[enc].detach(), tokens.rows[enc].detach())
    with torch.no_grad():
        assert torch.equal(resumed.encode_prompt(PROMPTS)[0], tokens.encode_prompt(PROMPTS)[0])
    data = read_embedding_file(path, {"text_encoder": 32, "text_encoder_2": 64})
    assert data.token == "<spitz-fur>" and data.num_vectors == 3


def test_several_concepts_need_a_folder(text_parts, tmp_path):
    settings = TokenSettings(enabled=True, concepts=[{"name": "<a>"}, {"name": "<b>", "init_words": ["hair"]}])
    tokens = prepare_tokens(text_parts, settings)
    paths = tokens.save(tmp_path)
    assert [p.name for p in paths] == ["a.safetensors", "b.safetensors"]
    with pytest.raises(ConfigError, match="need a folder"):
        tokens.save(tmp_path / "both.safetensors")
