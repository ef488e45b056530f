"""Each bad token input is a clear error before anything changes (and before weights load)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from furlora.errors import ConfigError, LoraFormatError
from furlora.tokens import TokenSettings, check_before_loading, prepare_tokens, read_embedding_file


def _settings(**concept):
    return TokenSettings(enabled=True, concepts=[{"name": "<spitz-fur>", **concept}], caption={"mode": "none"})


@pytest.mark.parametrize("name", ["fur", "Spitz", "<|endoftext|>", "x"])
def test_a_token_the_tokenizer_knows_is_rejected(text_parts, name):
    sizes = (len(text_parts.tokenizer), len(text_parts.tokenizer_2))
    with pytest.raises(ConfigError) as info:
        prepare_tokens(text_parts, _settings(name=name))
    message = str(info.value)
    assert f"token {name!r} is already known to tokenizer" in message
    assert "tokens.concepts.0.name" in message
    # Nothing was added before the error.
    assert (len(text_parts.tokenizer), len(text_parts.tokenizer_2)) == sizes
    assert text_parts.text_encoder.get_input_embeddings().num_embeddings == sizes[0]


def test_a_token_added_earlier_is_rejected(text_parts):
    prepare_tokens(text_parts, _settings())
    with pytest.raises(ConfigError, match="'<spitz-fur>' is already known to tokenizer"):
        prepare_tokens(text_parts, _settings())


def test_an_initialiser_word_that_splits_names_word_and_pieces(text_parts):
    with pytest.raises(ConfigError) as info:
        prepare_tokens(text_parts, _settings(init_words=["fur", "furry"]))
    message = str(info.value)
    assert "initialiser word 'furry' is not a single token in tokenizer" in message
    assert "tokens.concepts.0.init_words.1" in message
    # The pieces are named.
    assert "['fu', 'r', 'r', 'y</w>']" in message
    assert "initialiser word 'fur' " not in message  # the good word is not reported


def _write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("tensors", "expected"),
    [
        ({"clip_l": torch.zeros(1, 32)}, "has no clip_g tensor (found: clip_l)"),
        ({"clip_g": torch.zeros(1, 64)}, "has no clip_l tensor (found: clip_g)"),
        ({"emb_params": torch.zeros(1, 768)}, "SD 1.x/2.x embedding"),
        ({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, "was made for another model: clip_l is 768 wide but this model's text_encoder embeds 32; clip_g is 1280 wide"),
        ({"clip_l": torch.zeros(1, 32), "clip_g": torch.zeros(2, 64)}, "clip_l has 1 vectors but clip_g has 2"),
        ({"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(2, 64)}, "holds 2 vectors but num_vectors is 1; set num_vectors: 2"),
        ({"clip_l": torch.full((1, 32), float("nan")), "clip_g": torch.zeros(1, 64)}, "NaN or infinite"),
    ],
)
def test_bad_embedding_files_are_rejected(text_parts, tmp_path, tensors, expected):
    path = _write(tmp_path / "emb.safetensors", tensors)
    with pytest.raises((ConfigError, LoraFormatError)) as info:
        prepare_tokens(text_parts, _settings(init_file=str(path)))
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert "tokens.concepts.0.init_file" in str(info.value)


def test_pickle_and_missing_files_are_rejected(tmp_path):
    pt = tmp_path / "emb.pt"
    pt.write_bytes(b"not read")
    with pytest.raises(LoraFormatError, match="only .safetensors embedding files are read"):
        read_embedding_file(pt)
    with pytest.raises(LoraFormatError, match="does not exist"):
        read_embedding_file(tmp_path / "nope.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 3)
    with pytest.raises(LoraFormatError, match="not a readable safetensors file"):
        read_embedding_file(broken)


def test_all_problems_are_reported_together_before_loading(tiny_sdxl, tmp_path):
    settings = TokenSettings(
        enabled=True,
        concepts=[{"name": "fur", "init_words": ["furry"]}, {"name": "<b>", "init_file": str(tmp_path / "x.safetensors")}],
    )
    with pytest.raises(ConfigError) as info:
        check_before_loading(settings, tiny_sdxl)
    message = str(info.value)
    assert "problems" in message
    for part in ("'fur' is already known", "'furry' is not a single token", "x.safetensors does not exist"):
        assert part in message
    assert check_before_loading(TokenSettings(enabled=False), tiny_sdxl) is None
    plan = check_before_loading(TokenSettings(enabled=True), tiny_sdxl)
    assert plan is not None and plan.tokens == ["<spitz-fur>"]
