"""Issue 12 defect 4: with learned tokens, text encoder 2 pools at the first end-of-text token.

The tiny models carry the real configs' ``eos_token_id: 2``, so transformers' legacy pooling
(at the highest token id = the added token) is what an unfixed encoder does here too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from furlora.models.sdxl import load_sdxl
from furlora.tokens.settings import TokenConcept, TokenSettings

TOKEN = "<pool-test>"
PROMPT = f"{TOKEN} white fur"


def _expected_pooled(te2, tokenizer_2, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled at the first end token, pooled at the highest id) computed by hand."""
    ids = tokenizer_2([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    eos = tokenizer_2.eos_token_id
    first_eos = int((ids[0] == eos).int().argmax())
    highest = int(ids[0].argmax())
    assert first_eos != highest  # the added token has the highest id: the two poolings differ
    with torch.no_grad():
        hidden = te2(ids).last_hidden_state[0]
        return te2.text_projection(hidden[first_eos])[None], te2.text_projection(hidden[highest])[None]


def _settings() -> TokenSettings:
    return TokenSettings(enabled=True, concepts=[TokenConcept(name=TOKEN, num_vectors=1, init_words=["fur"])])


def test_tiny_text_encoders_have_the_real_legacy_eos_config(tiny_sdxl_inpaint: Path) -> None:
    comps = load_sdxl(tiny_sdxl_inpaint)
    for encoder, tokenizer in ((comps.text_encoder, comps.tokenizer), (comps.text_encoder_2, comps.tokenizer_2)):
        assert encoder.config.eos_token_id == 2  # as stabilityai/stable-diffusion-xl-base-1.0
        assert tokenizer.eos_token_id == len(tokenizer) - 1  # the end token is the highest stock id


def test_training_encode_pools_te2_at_the_first_eos_not_at_the_added_token(tiny_sdxl_inpaint: Path) -> None:
    from furlora.tokens.embeddings import prepare_tokens
    from furlora.train.encode import BatchEncoder

    comps = load_sdxl(tiny_sdxl_inpaint)
    tokens = prepare_tokens(comps, _settings())
    assert tokens is not None
    want, legacy = _expected_pooled(comps.text_encoder_2, comps.tokenizer_2, PROMPT)
    assert torch.nn.functional.cosine_similarity(want, legacy).item() < 0.99

    _, pooled = BatchEncoder(comps, torch.device("cpu"), cache_text=False).text([PROMPT], trainable=False)
    torch.testing.assert_close(pooled, want, rtol=0, atol=1e-6)
    _, pooled_cached = BatchEncoder(comps, torch.device("cpu")).text([PROMPT], trainable=False)
    torch.testing.assert_close(pooled_cached, want, rtol=0, atol=1e-6)
    _, pooled_tokens = tokens.encode_prompt([PROMPT])
    torch.testing.assert_close(pooled_tokens, want, rtol=0, atol=1e-6)


def test_evaluation_pipeline_with_loaded_embedding_pools_at_the_first_eos(
    tiny_sdxl_inpaint: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionXLInpaintPipeline

    from furlora.eval.token_variants import load_embeddings
    from furlora.tokens.files import save_embedding_file

    gen = torch.Generator().manual_seed(0)
    file = save_embedding_file(tmp_path / "pool-test.safetensors", torch.randn(1, 32, generator=gen),
                               torch.randn(1, 64, generator=gen), token=TOKEN)
    comps = load_sdxl(tiny_sdxl_inpaint)
    pipe = StableDiffusionXLInpaintPipeline(**comps.pipeline_components())
    load_embeddings(pipe, [file])
    want, _ = _expected_pooled(pipe.text_encoder_2, pipe.tokenizer_2, PROMPT)
    with torch.no_grad():
        _, _, pooled, _ = pipe.encode_prompt(prompt=PROMPT, device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=False)
    torch.testing.assert_close(pooled, want, rtol=0, atol=1e-6)


def test_without_added_tokens_both_poolings_agree(tiny_sdxl_inpaint: Path) -> None:
    """Why the fix is only needed with added tokens: the stock end token is the highest id."""
    from furlora.models.pooling import pool_at_first_eos

    comps = load_sdxl(tiny_sdxl_inpaint)
    ids = comps.tokenizer_2(["white fur"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        legacy = comps.text_encoder_2(ids).text_embeds
        pool_at_first_eos(comps.text_encoder_2, comps.tokenizer_2)
        fixed = comps.text_encoder_2(ids).text_embeds
    torch.testing.assert_close(fixed, legacy, rtol=0, atol=0)
