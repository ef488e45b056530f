"""Caption insertion modes and the multi-vector expansion diffusers applies to prompts."""

from __future__ import annotations


from furlora.tokens.captions import expand_prompt, insert_tokens
from furlora.tokens.settings import TokenSettings


def _settings(**caption):
    return TokenSettings(
        enabled=True,
        concepts=[{"name": "<spitz-fur>", "num_vectors": 3, "replace_words": ["fur", "coat"]}],
        caption=caption,
    )


def test_prefix_mode_adds_the_name_once():
    s = _settings(mode="prefix")
    assert insert_tokens("a white dog", s) == "<spitz-fur>, a white dog"
    # Caption dropout's empty caption stays unconditional.
    assert insert_tokens("", s) == ""
    assert insert_tokens("a <spitz-fur> dog", s) == "a <spitz-fur> dog"


def test_replace_mode_replaces_whole_words_only():
    s = _settings(mode="replace")
    assert insert_tokens("white Fur, fluffy coat, furry", s) == "white <spitz-fur>, fluffy <spitz-fur>, furry"
    assert insert_tokens("a dog", s) == "<spitz-fur>, a dog"
    keep = _settings(mode="replace", replace_fallback="keep")
    assert insert_tokens("a dog", keep) == "a dog"


def test_regions_mode_appends_phrases_of_present_regions():
    s = _settings(mode="regions", region_phrases={"chest": "{token} chest", "face": "<spitz-fur> face"})
    assert insert_tokens("a dog", s, ["face", "back", "chest", "face"]) == "a dog, <spitz-fur> face, <spitz-fur> chest"
    assert insert_tokens("a dog", s, ["back"]) == "a dog"


def test_none_mode_keeps_captions():
    assert insert_tokens("a dog", _settings(mode="none"), ["chest"]) == "a dog"


def test_expansion_matches_diffusers_and_is_idempotent(text_parts):
    from diffusers.loaders.textual_inversion import TextualInversionLoaderMixin

    s = _settings()
    prompt = "<spitz-fur>, a dog, <spitz-fur> chest"
    ours = expand_prompt(prompt, s.concepts)
    assert ours == "<spitz-fur> <spitz-fur>_1 <spitz-fur>_2, a dog, <spitz-fur> <spitz-fur>_1 <spitz-fur>_2 chest"
    assert expand_prompt(ours, s.concepts) == ours

    # diffusers' own expansion, with a tokenizer that knows the three tokens.
    tokenizer = text_parts.tokenizer
    tokenizer.add_tokens(s.all_token_names())
    assert TextualInversionLoaderMixin().maybe_convert_prompt(prompt, tokenizer) == ours


def test_single_vector_names_are_not_expanded():
    s = TokenSettings(enabled=True, concepts=[{"name": "<a>"}])
    assert expand_prompt("<a> dog", s.concepts) == "<a> dog"


def test_caption_collate_inserts_per_sample_present_regions():
    import pickle

    import torch

    from furlora.tokens.captions import CaptionCollate

    s = _settings(mode="regions", region_phrases={"chest": "{token} chest", "face": "{token} face"})
    samples = [
        {"caption": "a dog", "region_names": ["face", "chest"], "region_masks": torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])},
        {"caption": "", "region_names": ["face"], "region_masks": torch.ones(1, 4, 4)},
    ]
    batch = CaptionCollate(_join_captions, s)(samples)
    assert batch["caption"] == ["a dog, <spitz-fur> <spitz-fur>_1 <spitz-fur>_2 chest", ""]
    assert samples[0]["caption"] == "a dog"  # the samples are not modified
    short = CaptionCollate(_join_captions, s, expand=False)
    assert pickle.loads(pickle.dumps(short))(samples)["caption"] == ["a dog, <spitz-fur> chest", ""]


def _join_captions(items):
    return {"caption": [i["caption"] for i in items]}
