"""Learned-token embedding files in a comparison: checked, loaded into the pipeline, put in prompts.

A comparison given SDXL embedding files (``clip_l`` + ``clip_g``, as ``furlora train`` writes
them) adds a "token" twin of every LoRA variant: the same LoRA state, but with the learned
token(s) in the prompt. With one LoRA this gives the four columns base / LoRA / token /
LoRA + token.

Files are read and checked against the model's encoder widths before any weight loads
(:func:`check_embedding_files`), then loaded with diffusers' ``load_textual_inversion`` (once per
text encoder, :func:`furlora.tokens.files.load_into_pipeline`), and the pipeline's encoders
pool at the first end-of-text token as in training (:mod:`furlora.models.pooling`). The
prompt uses the *short form* (``<spitz-fur>``): diffusers' pipelines expand multi-vector
tokens themselves.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from furlora.errors import EvaluationError, FurloraError, format_problems
from furlora.eval.lora_variants import Variant, pipeline_modules
from furlora.models.pooling import pool_at_first_eos
from furlora.tokens.settings import vector_token_names

logger = logging.getLogger(__name__)

#: Suffix of the variant names that carry the learned tokens in their prompt (``fur@1+token``).
TOKEN_SUFFIX = "+token"
#: The name of the token variant without LoRA.
TOKEN_ONLY = "token"


@dataclass(frozen=True)
class EmbeddingInfo:
    """One checked embedding file: its prompt word and how many vectors it holds."""

    path: Path
    token: str
    """The prompt word (the name stored by furlora, else the file stem)."""
    num_vectors: int

    def token_names(self) -> list[str]:
        """Every token string the file adds: ``[token, token_1, ..., token_{N-1}]``."""
        return vector_token_names(self.token, self.num_vectors)


def embedding_widths(modules: dict[str, Any]) -> dict[str, int]:
    """``{"text_encoder": d1, "text_encoder_2": d2}`` of real or meta-device text encoders."""
    return {
        name: int(modules[name].get_input_embeddings().weight.shape[1])
        for name in ("text_encoder", "text_encoder_2")
        if modules.get(name) is not None
    }


def check_embedding_files(paths: Sequence[str | os.PathLike[str]], widths: dict[str, int]) -> list[EmbeddingInfo]:
    """Read every file (safetensors only) and check it against the model's widths; every problem
    of every file is reported together in one :class:`EvaluationError`."""
    from furlora.tokens.files import read_embedding_file

    problems: list[str] = []
    infos: list[EmbeddingInfo] = []
    for path in paths:
        try:
            data = read_embedding_file(path, widths)
        except FurloraError as exc:
            problems.append(str(exc))
            continue
        token = data.token or data.path.stem
        if re.search(r"\s", token):
            problems.append(f"embedding file {data.path}: its token {token!r} contains whitespace; rename the file")
            continue
        infos.append(EmbeddingInfo(data.path, token, data.num_vectors))
    seen: dict[str, Path] = {}
    for info in infos:
        if info.token.lower() in seen:
            problems.append(f"embedding files {seen[info.token.lower()]} and {info.path} both define the token {info.token!r}")
        seen[info.token.lower()] = info.path
    if problems:
        raise EvaluationError(problems[0] if len(problems) == 1 else format_problems("bad embedding files", problems))
    return infos


def load_embeddings(pipeline: Any, paths: Sequence[str | os.PathLike[str]]) -> list[EmbeddingInfo]:
    """Check the files, then load each into both text encoders of ``pipeline``.

    A token the pipeline already holds (a pipeline reused from an earlier comparison, or a
    trainer's components) is kept when its vectors equal the file's, and is an error otherwise:
    diffusers refuses to load a token twice, and silently using other vectors would mislead.
    Tokens stay loaded in the pipeline afterwards.
    """
    from furlora.tokens.files import load_into_pipeline, read_embedding_file

    infos = check_embedding_files(paths, embedding_widths(pipeline_modules(pipeline)))
    for info in infos:
        present = _present_rows(pipeline, info.token_names())
        if present is None:
            try:
                load_into_pipeline(pipeline, info.path, token=info.token)
            except (ValueError, RuntimeError) as exc:
                raise EvaluationError(f"{info.path}: diffusers could not load this embedding: {exc}") from None
            logger.info("loaded embedding %s as %r (%d vector(s))", info.path, info.token, info.num_vectors)
            continue
        data = read_embedding_file(info.path)
        for rows, wanted, encoder in ((present[0], data.clip_l, "text_encoder"), (present[1], data.clip_g, "text_encoder_2")):
            if rows.shape != wanted.shape or not torch.allclose(rows, wanted, rtol=0.0, atol=1e-6):
                raise EvaluationError(
                    f"{info.path}: the pipeline's {encoder} already has the token {info.token!r} with other vectors; "
                    "use a fresh model (pass the model folder or name instead of loaded components)"
                )
        logger.info("token %r of %s is already loaded in the pipeline with the same vectors", info.token, info.path)
    # With added tokens, pool where training (and ComfyUI/A1111) pool: at the first end token.
    pool_at_first_eos(pipeline.text_encoder, pipeline.tokenizer)
    pool_at_first_eos(pipeline.text_encoder_2, pipeline.tokenizer_2)
    return infos


def _present_rows(pipeline: Any, names: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The float32 CPU rows ``(clip_l [N, d1], clip_g [N, d2])`` of ``names`` if both tokenizers
    know all of them, None if neither knows any; a partial presence is an error."""
    rows = []
    for tokenizer, encoder in ((pipeline.tokenizer, pipeline.text_encoder), (pipeline.tokenizer_2, pipeline.text_encoder_2)):
        vocab = tokenizer.get_vocab()
        known = [n for n in names if n in vocab]
        if not known:
            rows.append(None)
            continue
        if len(known) != len(names):
            raise EvaluationError(
                f"the pipeline's tokenizers know only {known} of the embedding's tokens {names}; use a fresh model"
            )
        ids = [int(vocab[n]) for n in names]
        rows.append(encoder.get_input_embeddings().weight.detach()[ids].to("cpu", torch.float32))
    if rows[0] is None and rows[1] is None:
        return None
    if rows[0] is None or rows[1] is None:
        raise EvaluationError(f"only one of the pipeline's tokenizers knows the tokens {names}; use a fresh model")
    return rows[0], rows[1]


def token_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The token twin of each variant, in the same order: ``off`` -> ``token``, ``fur@1`` -> ``fur@1+token``."""
    return [replace(v, name=TOKEN_ONLY if v.is_off else v.name + TOKEN_SUFFIX, tokens=True) for v in variants]


def token_prompt(prompt: str | None, tokens: Sequence[str], token_settings: Any = None,
                 regions: Sequence[str] = ()) -> str:
    """The prompt of a token variant: ``prompt`` with the learned tokens (short form) in it.

    ``token_settings``: a :class:`~furlora.tokens.settings.TokenSettings` (the run's ``tokens:``
    section) whose ``caption`` rule inserts its concept names the way training did (``regions``:
    the sample's region names, for ``caption.mode: regions``). Without it, or when the rule
    leaves a token out, the missing tokens are put in front: ``"<spitz-fur>, white fur"``.
    """
    text = (prompt or "").strip()
    if token_settings is not None and token_settings.enabled and text:
        from furlora.tokens.captions import insert_tokens

        text = insert_tokens(text, token_settings, regions)
    lower = text.lower()
    missing = [t for t in tokens if t.lower() not in lower]
    if not missing:
        return text
    return ", ".join(p for p in (" ".join(missing), text) if p)
