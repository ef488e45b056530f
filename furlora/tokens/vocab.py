"""Check the ``tokens:`` settings against the model's two tokenizers, before any weight loads.

Problems found (all reported together in one :class:`ConfigError`):

- a token name one of the tokenizers already knows (a vocabulary word such as ``fur``, or an
  added token such as one loaded earlier): its embedding row would be shared with that word;
- an initialiser word that is not exactly one token in both tokenizers (named with its pieces);
- an ``init_file`` that is unreadable, lacks ``clip_l`` / ``clip_g``, has another width than
  the model (another base model) or another number of vectors than ``num_vectors``.

A new placeholder is added as an added token, so it never splits, whatever its characters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from furlora.errors import ConfigError, FurloraError, format_problems
from furlora.tokens.files import EmbeddingFile, read_embedding_file
from furlora.tokens.settings import TokenSettings

#: The two SDXL encoders and their tokenizers, in table order.
ENCODERS: tuple[tuple[str, str], ...] = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))


@dataclass
class TokenPlan:
    """What :func:`furlora.tokens.embeddings.prepare_tokens` will add, once the checks passed."""

    tokens: list[str]
    """Every new token string, concept by concept (``<a>, <a>_1, <b>``)."""
    init_ids: dict[str, list[int | None]]
    """Per encoder: the initialiser word's token id of each new token (None = random / file)."""
    init_files: dict[str, EmbeddingFile] = field(default_factory=dict)
    """Concept name -> its embedding file (for concepts with ``init_file``)."""


def word_pieces(tokenizer: Any, word: str) -> list[str]:
    """The pieces ``tokenizer`` splits ``word`` into (CLIP marks a word end with ``</w>``)."""
    return list(tokenizer.tokenize(word))


def known_token_id(tokenizer: Any, name: str) -> int | None:
    """The id of ``name`` if the tokenizer already has it as one token (vocabulary word or added token)."""
    vocab = tokenizer.get_vocab()
    for candidate in (name, name.lower()):
        if candidate in vocab:
            return int(vocab[candidate])
    added = {k.lower(): v for k, v in tokenizer.added_tokens_encoder.items()}
    if name.lower() in added:
        return int(added[name.lower()])
    pieces = word_pieces(tokenizer, name)
    if len(pieces) == 1 and pieces[0] in vocab:
        return int(vocab[pieces[0]])
    return None


def check_tokens(settings: TokenSettings, tokenizers: dict[str, Any], widths: dict[str, int]) -> TokenPlan:
    """Check token names, initialiser words and init files against the model; return the plan.

    ``tokenizers``: ``{"tokenizer": ..., "tokenizer_2": ...}``; ``widths``: the embedding widths
    ``{"text_encoder": d1, "text_encoder_2": d2}``.
    """
    problems: list[str] = []
    init_ids: dict[str, list[int | None]] = {enc: [] for enc, _ in ENCODERS}
    init_files: dict[str, EmbeddingFile] = {}
    for c_index, concept in enumerate(settings.concepts):
        where = f"tokens.concepts.{c_index}"
        for token in concept.token_names():
            for _, tok_name in ENCODERS:
                known = known_token_id(tokenizers[tok_name], token)
                if known is not None:
                    problems.append(
                        f"{where}.name: token {token!r} is already known to {tok_name} (id {known}); a learned "
                        "token must be new, e.g. a name in angle brackets such as '<spitz-fur>'"
                    )
        if concept.init_file is not None:
            try:
                data = read_embedding_file(concept.init_file, widths, what=f"{where}.init_file")
            except FurloraError as exc:
                problems.append(str(exc))
            else:
                if data.num_vectors != concept.num_vectors:
                    problems.append(
                        f"{where}.init_file {data.path} holds {data.num_vectors} vectors but num_vectors is "
                        f"{concept.num_vectors}; set num_vectors: {data.num_vectors}"
                    )
                init_files[concept.name] = data
            for enc, _ in ENCODERS:
                init_ids[enc] += [None] * concept.num_vectors
            continue
        word_ids: dict[str, list[int | None]] = {enc: [] for enc, _ in ENCODERS}
        for w_index, word in enumerate(concept.init_words):
            for enc, tok_name in ENCODERS:
                pieces = word_pieces(tokenizers[tok_name], word)
                if len(pieces) != 1:
                    problems.append(
                        f"{where}.init_words.{w_index}: initialiser word {word!r} is not a single token in "
                        f"{tok_name}: it splits into {len(pieces)} pieces {pieces}; use a word that is one "
                        "token in both tokenizers (e.g. 'fur', 'hair') or an empty list for random init"
                    )
                word_ids[enc].append(int(tokenizers[tok_name].convert_tokens_to_ids(pieces)[0]) if len(pieces) == 1 else None)
        for enc, ids in word_ids.items():  # vector i starts from init_words[i % len(init_words)]
            init_ids[enc] += [ids[i % len(ids)] if ids else None for i in range(concept.num_vectors)]
    if problems:
        raise ConfigError(format_problems("the learned tokens cannot be added to this model", problems))
    return TokenPlan(tokens=settings.all_token_names(), init_ids=init_ids, init_files=init_files)


def check_before_loading(settings: TokenSettings, model_folder: str | os.PathLike[str]) -> TokenPlan | None:
    """Run :func:`check_tokens` with only the tokenizers and encoder configs of a model folder.

    Cheap (no weights are read): call it right after the config is loaded, before
    ``load_sdxl``. ``model_folder``: a diffusers SDXL folder (``resolve_model_path`` gives one).
    Returns None when tokens are disabled.
    """
    if not settings.enabled:
        return None
    from transformers import CLIPTokenizer

    folder = Path(model_folder)
    tokenizers: dict[str, Any] = {}
    widths: dict[str, int] = {}
    for enc, tok_name in ENCODERS:
        try:
            tokenizers[tok_name] = CLIPTokenizer.from_pretrained(str(folder / tok_name))
            config = json.loads((folder / enc / "config.json").read_text(encoding="utf-8"))
            widths[enc] = int(config["hidden_size"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read {folder / tok_name} or {folder / enc / 'config.json'}: {exc}") from None
    return check_tokens(settings, tokenizers, widths)
