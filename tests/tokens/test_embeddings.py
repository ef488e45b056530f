"""Training the new rows: only they change, with their own settings, and resume is exact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from furlora.tokens import GrownEmbedding, TokenSettings, prepare_tokens

ENCODERS = ("text_encoder", "text_encoder_2")
PROMPTS = ["<spitz-fur>, a white dog", "black <spitz-fur> chest"]


def _settings(**kw):
    base = {
        "enabled": True,
        "concepts": [{"name": "<spitz-fur>", "num_vectors": 2, "init_words": ["fur", "hair"]}],
        "caption": {"mode": "none"},
        "learning_rate": 1e-2,
    }
    base.update(kw)
    return TokenSettings(**base)


def _loss(tokens):
    embeds, pooled = tokens.encode_prompt(PROMPTS)
    # Any smooth function of both outputs that the new rows influence.
    return (embeds - 0.3).pow(2).mean() + (pooled + 0.1).pow(2).mean()


def _train(tokens, optimizer, steps, start=0, max_steps=None):
    for step in range(start, start + steps):
        tokens.set_training_step(step, max_steps or start + steps)
        optimizer.zero_grad(set_to_none=True)
        if tokens.training_rows:
            _loss(tokens).backward()
        optimizer.step()
        tokens.after_optimizer_step()


def _adamw(tokens, weight_decay=0.1):
    groups = tokens.parameter_groups(base_lr=1e-4)
    for g in groups:
        g["weight_decay"] = weight_decay
    return torch.optim.AdamW(groups)


def test_initial_rows_copy_the_initialiser_words(text_parts):
    tables = {e: getattr(text_parts, e).get_input_embeddings().weight.detach().clone() for e in ENCODERS}
    tokens = prepare_tokens(text_parts, _settings())
    for enc, tok in zip(ENCODERS, ("tokenizer", "tokenizer_2"), strict=True):
        tokenizer = getattr(text_parts, tok)
        fur, hair = tokenizer.convert_tokens_to_ids(["fur</w>", "hair</w>"])
        assert torch.equal(tokens.rows[enc][0], tables[enc][fur])
        assert torch.equal(tokens.rows[enc][1], tables[enc][hair])
        assert tokens.token_ids[enc] == [len(tables[enc]), len(tables[enc]) + 1]
        assert tokenizer.convert_tokens_to_ids(["<spitz-fur>", "<spitz-fur>_1"]) == tokens.token_ids[enc]
        assert isinstance(getattr(text_parts, enc).get_input_embeddings(), GrownEmbedding)


def test_random_init_is_seeded_and_scaled_to_the_table(make_text_parts):
    load_text_parts = make_text_parts
    settings = _settings(concepts=[{"name": "<r>", "num_vectors": 8, "init_words": []}])
    a = prepare_tokens(load_text_parts(), settings, seed=3)
    b = prepare_tokens(load_text_parts(), settings, seed=3)
    c = prepare_tokens(load_text_parts(), settings, seed=4)
    assert torch.equal(a.rows["text_encoder_2"], b.rows["text_encoder_2"])
    assert not torch.equal(a.rows["text_encoder_2"], c.rows["text_encoder_2"])
    table_std = a._components.text_encoder_2.get_input_embeddings().weight[:750].std()
    assert abs(float(a.rows["text_encoder_2"].detach().std()) / float(table_std) - 1) < 0.3


def test_only_the_new_rows_change_under_adamw_with_weight_decay(text_parts):
    before_params = {
        enc: {n: p.detach().clone() for n, p in getattr(text_parts, enc).named_parameters()} for enc in ENCODERS
    }
    tokens = prepare_tokens(text_parts, _settings())
    start_rows = {enc: tokens.rows[enc].detach().clone() for enc in ENCODERS}
    # A frozen "other" parameter in the same optimizer with weight decay, like a LoRA would be.
    optimizer = _adamw(tokens, weight_decay=0.1)
    _train(tokens, optimizer, steps=5)
    for enc in ENCODERS:
        encoder = getattr(text_parts, enc)
        table = encoder.get_input_embeddings().weight.detach()
        old = before_params[enc]
        vocab = old["embeddings.token_embedding.weight" if enc == "text_encoder" else "text_model.embeddings.token_embedding.weight"]
        n_old = vocab.shape[0]
        # Every original row is bit-identical ...
        assert torch.equal(table[:n_old], vocab)
        # ... as is every other parameter of the encoder.
        for name, param in encoder.named_parameters():
            if not name.endswith("token_embedding.weight"):
                assert torch.equal(param.detach(), old[name]), name
        # The new rows moved, and the table holds exactly the trained values.
        assert not torch.equal(tokens.rows[enc].detach(), start_rows[enc])
        assert torch.equal(table[n_old:], tokens.rows[enc].detach())


def test_the_vectors_stop_after_train_fraction(text_parts):
    tokens = prepare_tokens(text_parts, _settings(train_fraction=0.4))
    optimizer = _adamw(tokens)
    assert tokens.last_training_step(10) == 4
    _train(tokens, optimizer, steps=4, max_steps=10)
    frozen = {enc: tokens.rows[enc].detach().clone() for enc in ENCODERS}
    # Steps 4..9: Adam still holds momentum, yet the values do not move at all.
    _train(tokens, optimizer, steps=6, start=4, max_steps=10)
    assert not tokens.training_rows
    for enc in ENCODERS:
        assert torch.equal(tokens.rows[enc].detach(), frozen[enc])


def test_parameter_groups_use_token_settings(text_parts, make_text_parts):
    tokens = prepare_tokens(text_parts, _settings(learning_rate=None, weight_decay=0.05))
    (group,) = tokens.parameter_groups(base_lr=3e-4)
    assert group["lr"] == 3e-4 and group["weight_decay"] == 0.05
    assert [p.shape for p in group["params"]] == [torch.Size([2, 32]), torch.Size([2, 64])]
    (group,) = prepare_tokens(make_text_parts(), _settings()).parameter_groups(base_lr=1.0)
    assert group["lr"] == 1e-2


def test_resume_from_a_state_dict_is_bit_exact(make_text_parts, tmp_path):
    load_text_parts = make_text_parts
    # Reference: 6 uninterrupted steps.
    ref = prepare_tokens(load_text_parts(), _settings(concepts=[{"name": "<spitz-fur>", "num_vectors": 2, "init_words": []}]), seed=7)
    _train(ref, _adamw(ref), steps=6)

    # Interrupted: 3 steps, checkpoint to files, new process state, 3 more steps.
    first = prepare_tokens(load_text_parts(), _settings(concepts=[{"name": "<spitz-fur>", "num_vectors": 2, "init_words": []}]), seed=7)
    optimizer = _adamw(first)
    _train(first, optimizer, steps=3, max_steps=6)
    save_file(first.state_dict(), str(tmp_path / "tokens.safetensors"))
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")

    # A different seed: resume must not depend on the start values.
    second = prepare_tokens(load_text_parts(), _settings(concepts=[{"name": "<spitz-fur>", "num_vectors": 2, "init_words": []}]), seed=99)
    optimizer = _adamw(second)
    second.load_state_dict(load_file(str(tmp_path / "tokens.safetensors")))
    optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    _train(second, optimizer, steps=3, start=3, max_steps=6)
    for enc in ENCODERS:
        assert torch.equal(second.rows[enc].detach(), ref.rows[enc].detach())
        table = getattr(second._components, enc).get_input_embeddings().weight.detach()
        assert torch.equal(table[-2:], ref.rows[enc].detach())


def test_a_checkpoint_of_other_tokens_is_refused(text_parts):
    from furlora.errors import CheckpointError

    tokens = prepare_tokens(text_parts, _settings())
    with pytest.raises(CheckpointError, match="resume with the same tokens settings"):
        tokens.load_state_dict({"rows.text_encoder": torch.zeros(3, 32), "rows.text_encoder_2": torch.zeros(3, 64)})
