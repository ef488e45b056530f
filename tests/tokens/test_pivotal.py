"""LoRA on both text encoders plus learned tokens (pivotal tuning) with the real LoraAdapters.

The trainer wires the same pieces (see furlora.tokens.embeddings); this test drives them with a
minimal loop: tokens before or after LoRA injection, one AdamW over both, exact resume.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings
from furlora.tokens import TokenSettings, prepare_tokens

ENCODERS = ("text_encoder", "text_encoder_2")
CAPTIONS = [{"caption": "a white dog", "region_names": []}, {"caption": "black fur, chest", "region_names": []}]


def _setup(parts, tokens_first: bool, seed: int = 0):
    lora = LoraSettings(unet={"enabled": False}, text_encoder={"enabled": True}, text_encoder_2={"enabled": True})
    token_settings = TokenSettings(
        enabled=True,
        concepts=[{"name": "<spitz-fur>", "num_vectors": 2, "init_words": ["fur", "hair"], "replace_words": ["fur"]}],
        caption={"mode": "replace"},
        learning_rate=1e-2,
        train_fraction=0.5,
    )
    manager = LoraAdapters({e: getattr(parts, e) for e in ENCODERS}, lora, seed=seed)
    if tokens_first:
        tokens = prepare_tokens(parts, token_settings, seed=seed)
        manager.apply()
    else:
        manager.apply()
        tokens = prepare_tokens(parts, token_settings, seed=seed)
    groups = manager.parameter_groups(base_lr=1e-3) + tokens.parameter_groups(base_lr=1e-3)
    for g in groups:
        g["lr"] = g["lr"] if g["lr"] is not None else 1e-3
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    return manager, tokens, optimizer


def _steps(manager, tokens, optimizer, start, stop, max_steps):
    captions = tokens.wrap_collate(_collate)(CAPTIONS)["caption"]
    assert captions[1] == "black <spitz-fur> <spitz-fur>_1, chest"
    for step in range(start, stop):
        tokens.set_training_step(step, max_steps)
        optimizer.zero_grad(set_to_none=True)
        embeds, pooled = _encode(tokens, captions)  # captions are already expanded
        (embeds.pow(2).mean() + (pooled - 0.5).pow(2).mean()).backward()
        optimizer.step()
        tokens.after_optimizer_step()


def _collate(samples):
    return {"caption": [s["caption"] for s in samples]}


def _encode(tokens, expanded_captions):
    from furlora.models.conditioning import encode_prompt

    return encode_prompt(tokens._components, expanded_captions)


@pytest.mark.parametrize("tokens_first", [True, False])
def test_lora_and_tokens_train_together(text_parts, tokens_first):
    tables = {e: getattr(text_parts, e).get_input_embeddings().weight.detach().clone() for e in ENCODERS}
    manager, tokens, optimizer = _setup(text_parts, tokens_first)
    assert all(p.requires_grad for p in tokens.trainable_parameters())  # peft did not freeze them
    lora_before = {k: v.clone() for k, v in manager.lora_state_dict().items()}
    rows_before = {e: tokens.rows[e].detach().clone() for e in ENCODERS}
    _steps(manager, tokens, optimizer, 0, 4, max_steps=4)
    changed = [k for k, v in manager.lora_state_dict().items() if not torch.equal(v, lora_before[k])]
    assert changed, "the LoRA did not train"
    for enc in ENCODERS:
        n = tables[enc].shape[0]
        table = getattr(text_parts, enc).get_input_embeddings().weight.detach()
        assert torch.equal(table[:n], tables[enc])
        assert not torch.equal(tokens.rows[enc].detach(), rows_before[enc])


def test_lora_plus_tokens_resume_is_bit_exact(make_text_parts, tmp_path):
    ref = _setup(make_text_parts(), tokens_first=True)
    _steps(*ref, 0, 6, max_steps=6)

    manager, tokens, optimizer = _setup(make_text_parts(), tokens_first=True)
    _steps(manager, tokens, optimizer, 0, 2, max_steps=6)
    save_file({**manager.lora_state_dict(), **{f"tokens.{k}": v for k, v in tokens.state_dict().items()}},
              str(tmp_path / "state.safetensors"))
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")

    # A "new process": other start values (seed), then the checkpoint.
    manager, tokens, optimizer = _setup(make_text_parts(), tokens_first=True, seed=5)
    state = load_file(str(tmp_path / "state.safetensors"))
    tokens.load_state_dict({k[len("tokens."):]: v for k, v in state.items() if k.startswith("tokens.")})
    manager.load_lora_state_dict({k: v for k, v in state.items() if not k.startswith("tokens.")})
    optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    # Steps 2..5 cross the train_fraction cut-off (step 3).
    _steps(manager, tokens, optimizer, 2, 6, max_steps=6)

    ref_manager, ref_tokens, _ = ref
    for key, value in ref_manager.lora_state_dict().items():
        assert torch.equal(manager.lora_state_dict()[key], value), key
    for enc in ENCODERS:
        assert torch.equal(tokens.rows[enc].detach(), ref_tokens.rows[enc].detach())
