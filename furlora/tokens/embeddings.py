"""New token rows in both SDXL text encoders, trained while every other row stays bit-identical.

How: both tokenizers get the new tokens as added tokens (as diffusers' loader adds them); each
encoder's ``token_embedding`` is replaced by a :class:`GrownEmbedding`: the old table, grown by
the new rows, is a *frozen* buffer-like parameter, and the new rows come from a separate
float32 parameter [N, width] spliced in at lookup. Only that parameter is handed to the
optimizer, so AdamW's weight decay and momentum can never reach another row (a masked gradient
on the whole table would not be enough: decoupled weight decay moves rows whose gradient is 0).

The trained parameters live in :class:`TokenEmbeddings`, outside the encoders' module trees:
``text_encoder.requires_grad_(False)``, peft's "mark only adapters trainable", and
``text_encoder.state_dict()`` never see them. After each optimizer step
:meth:`TokenEmbeddings.after_optimizer_step` copies them into the table rows, so the encoders
stay ordinary CLIP models (``get_input_embeddings().weight`` holds the trained values and
``save_pretrained`` writes them).

Pooling: the real text_encoder_2 config has ``eos_token_id: 2``, and transformers then pools
at the *highest token id* of a prompt, which is a new token's position when the prompt holds
one. kohya, ComfyUI and A1111 (where the embedding files are used) pool at the first
end-of-text token, so :func:`prepare_tokens` makes both encoders pool there
(:func:`furlora.models.pooling.pool_at_first_eos`); evaluation does the same when it loads
the files into a pipeline (:func:`furlora.eval.token_variants.load_embeddings`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from furlora.errors import CheckpointError, ConfigError
from furlora.models.pooling import pool_at_first_eos
from furlora.tokens.captions import CaptionCollate, expand_prompt, insert_tokens
from furlora.tokens.files import ENCODER_KEYS, save_embedding_file, widths_of
from furlora.tokens.settings import TokenSettings
from furlora.tokens.vocab import ENCODERS, TokenPlan, check_tokens

logger = logging.getLogger(__name__)


class GrownEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose rows ``[start, start + N)`` come from a trained parameter.

    ``weight`` [V', width] (frozen, the encoder's dtype) is the original table grown to hold the
    new ids; its new rows are refreshed by :meth:`sync`. ``rows_of`` returns the trained float32
    [N, width] parameter, which is deliberately not registered in this module (see the module doc).
    """

    def __init__(self, base: nn.Embedding, start: int, init_rows: torch.Tensor, rows_of: Any) -> None:
        n, width = init_rows.shape
        size = max(base.num_embeddings, start + n)
        weight = torch.empty(size, width, dtype=base.weight.dtype, device=base.weight.device)
        weight[: base.num_embeddings] = base.weight.detach()
        weight[start : start + n] = init_rows.to(weight.dtype)
        super().__init__(size, width, padding_idx=base.padding_idx, _weight=weight, _freeze=True)
        self.start = start
        self.count = n
        self._rows_of = rows_of

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [..., L] (int64) -> embeddings [..., L, width] in the table dtype."""
        out = F.embedding(input_ids, self.weight, self.padding_idx)
        rows = self._rows_of()
        local = input_ids - self.start
        hit = (local >= 0) & (local < self.count)
        if not bool(hit.any()):
            return out
        new = F.embedding(local.clamp(0, self.count - 1), rows.to(out.dtype))
        # torch.where takes each value unchanged, so a new row equals the trained value exactly
        # and the gradient reaches only the trained parameter.
        return torch.where(hit.unsqueeze(-1), new, out)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the trained rows into ``weight`` (other rows are not touched)."""
        self.weight[self.start : self.start + self.count] = self._rows_of().detach().to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, trained rows {self.start}..{self.start + self.count - 1}"


class TokenEmbeddings(nn.Module):
    """The learned token vectors of both encoders, and what the trainer needs to train them.

    ``rows["text_encoder"]`` float32 [N, width_1] and ``rows["text_encoder_2"]`` float32
    [N, width_2], N = every vector of every concept (order: :attr:`tokens`). ``state_dict()``
    is ``{"rows.text_encoder": ..., "rows.text_encoder_2": ...}`` (tensors only, fit for safetensors).
    """

    def __init__(self, settings: TokenSettings, components: Any, plan: TokenPlan, init: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.settings = settings
        self.tokens: list[str] = list(plan.tokens)
        self.rows = nn.ParameterDict({enc: nn.Parameter(init[enc].clone()) for enc, _ in ENCODERS})
        self.token_ids: dict[str, list[int]] = {}
        self._components = components
        for enc, tok_name in ENCODERS:
            tokenizer = getattr(components, tok_name)
            encoder = getattr(components, enc)
            # Added as plain (non-special) added tokens, exactly as diffusers' loader adds them, so
            # a prompt tokenizes the same here and in a pipeline that loaded the saved file.
            tokenizer.add_tokens(self.tokens)
            ids = [int(i) for i in tokenizer.convert_tokens_to_ids(self.tokens)]
            if ids != list(range(ids[0], ids[0] + len(ids))):
                raise ConfigError(f"{tok_name} gave the new tokens non-consecutive ids {ids}")
            self.token_ids[enc] = ids
            base = encoder.get_input_embeddings()
            grown = GrownEmbedding(base, ids[0], init[enc], rows_of=lambda enc=enc: self.rows[enc])
            encoder.set_input_embeddings(grown)
            encoder.config.vocab_size = grown.num_embeddings

    # ------------------------------------------------------------------ training surface

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The two row parameters (float32 [N, width_1] and [N, width_2])."""
        return [self.rows[enc] for enc, _ in ENCODERS]

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """One optimizer group: both row parameters, ``tokens.learning_rate`` (or ``base_lr``)
        and ``tokens.weight_decay``."""
        lr = self.settings.learning_rate if self.settings.learning_rate is not None else base_lr
        return [
            {"params": self.trainable_parameters(), "lr": lr, "weight_decay": self.settings.weight_decay, "name": "tokens"}
        ]

    def last_training_step(self, max_steps: int) -> int:
        """Number of optimizer steps that update the vectors: ``ceil(train_fraction * max_steps)``, >= 1."""
        return max(1, math.ceil(self.settings.train_fraction * max_steps - 1e-9))

    def set_training_step(self, step: int, max_steps: int) -> bool:
        """Before optimizer step ``step`` (0-based): train the vectors only while
        ``step < last_training_step(max_steps)``. Returns whether they train.

        When they stop, ``requires_grad`` goes off and the gradients are dropped, so the
        optimizer skips them (AdamW skips parameters whose ``grad`` is None) and their values
        stay exactly as they are. Call it before each step, also right after a resume.
        """
        training = step < self.last_training_step(max_steps)
        for param in self.trainable_parameters():
            param.requires_grad_(training)
            if not training:
                param.grad = None
        return training

    @property
    def training_rows(self) -> bool:
        """True while the vectors receive gradients (text must then be encoded with grad, uncached)."""
        return any(p.requires_grad for p in self.trainable_parameters())

    def after_optimizer_step(self) -> None:
        """Copy the updated vectors into both tables' new rows (other rows are never written)."""
        for enc, _ in ENCODERS:
            self._grown(enc).sync()

    # ------------------------------------------------------------------ captions

    def caption_transform(self, caption: str, regions: Sequence[str] = ()) -> str:
        """Insert the concept names into a caption per ``tokens.caption`` (short form, e.g.
        ``"<spitz-fur>, a dog"``). ``regions``: region names present in the sample."""
        return insert_tokens(caption, self.settings, regions)

    def wrap_collate(self, collate: Any) -> CaptionCollate:
        """``collate`` with :meth:`caption_transform` + the multi-vector expansion applied to every
        sample's caption first: use it for the training and the validation batches alike."""
        return CaptionCollate(collate, self.settings, expand=True)

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``furlora.models.conditioning.encode_prompt`` after expanding each concept name to all of
        its tokens (diffusers pipelines do this themselves: give them the short form):
        ``prompt_embeds`` [B, 77, w1 + w2] and ``pooled`` [B, proj_2]."""
        from furlora.models.conditioning import encode_prompt

        return encode_prompt(self._components, [expand_prompt(p, self.settings.concepts) for p in prompts])

    # ------------------------------------------------------------------ files and state

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> list[Path]:
        """Write one SDXL embedding file (``clip_l`` + ``clip_g``) per concept.

        ``path``: a folder (files ``<folder>/<stem>.safetensors``, stem = the name without
        ``<>``), or a ``.safetensors`` file when there is exactly one concept.
        """
        path = Path(path)
        concepts = self.settings.concepts
        if path.suffix == ".safetensors":
            if len(concepts) != 1:
                raise ConfigError(f"{path}: {len(concepts)} concepts need a folder (one file each), not one file name")
            targets = [path]
        else:
            targets = [path / f"{c.file_stem()}.safetensors" for c in concepts]
        written, start = [], 0
        for concept, target in zip(concepts, targets, strict=True):  # the concepts' rows follow each other
            clip_l, clip_g = (self.rows[enc][start : start + concept.num_vectors] for enc, _ in ENCODERS)
            written.append(save_embedding_file(target, clip_l, clip_g, token=concept.name, metadata=metadata))
            start += concept.num_vectors
        return written

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Restore the vectors exactly (and the tables' new rows). Shapes must match this config."""
        expected = {f"rows.{enc}": tuple(self.rows[enc].shape) for enc, _ in ENCODERS}
        got = {k: tuple(v.shape) for k, v in state_dict.items()}
        if got != expected:
            raise CheckpointError(
                f"token embeddings in the checkpoint have shapes {got}, this run's tokens need {expected} "
                f"(tokens {self.tokens}); resume with the same tokens settings"
            )
        with torch.no_grad():
            for enc, _ in ENCODERS:
                self.rows[enc].copy_(state_dict[f"rows.{enc}"])
        self.after_optimizer_step()
        return None

    # ------------------------------------------------------------------ helpers

    def _grown(self, enc: str) -> GrownEmbedding:
        module = getattr(self._components, enc).get_input_embeddings()
        if not isinstance(module, GrownEmbedding):
            raise RuntimeError(f"{enc}'s input embedding was replaced after the tokens were added")
        return module


def initial_rows(components: Any, plan: TokenPlan, settings: TokenSettings, seed: int) -> dict[str, torch.Tensor]:
    """Float32 [N, width] start values per encoder: the initialiser word's row, the init file's
    rows, or N(0, std of the existing table) drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for enc, _ in ENCODERS:
        table = getattr(components, enc).get_input_embeddings().weight.detach()
        std = float(table.float().std())
        rows = []
        word_ids = iter(plan.init_ids[enc])  # one per new token, concept by concept
        for concept in settings.concepts:
            file = plan.init_files.get(concept.name)
            for i in range(concept.num_vectors):
                word_id = next(word_ids)
                if file is not None:
                    row = getattr(file, ENCODER_KEYS[enc])[i]
                elif word_id is not None:
                    row = table[word_id].float().cpu()
                else:
                    row = torch.randn(table.shape[1], generator=generator) * std
                rows.append(row.to(torch.float32))
        out[enc] = torch.stack(rows).to(table.device)
    return out


def prepare_tokens(components: Any, settings: TokenSettings, seed: int = 0) -> TokenEmbeddings | None:
    """Add the configured tokens to both tokenizers and encoders; None when ``tokens.enabled`` is off.

    ``components``: an :class:`~furlora.models.sdxl.SDXLComponents` (or any object with
    text_encoder, text_encoder_2, tokenizer, tokenizer_2). Call it once after loading and before
    LoRA injection. Raises :class:`ConfigError` / :class:`LoraFormatError` on bad tokens, words
    or files before changing anything.
    """
    if not settings.enabled:
        return None
    tokenizers = {tok: getattr(components, tok) for _, tok in ENCODERS}
    plan = check_tokens(settings, tokenizers, widths_of(components))
    init = initial_rows(components, plan, settings, seed)
    tokens = TokenEmbeddings(settings, components, plan, init)
    for enc, tok in ENCODERS:
        pool_at_first_eos(getattr(components, enc), getattr(components, tok))
    logger.info(
        "added %d learned token(s) %s to both text encoders (ids %s / %s)",
        len(tokens.tokens), tokens.tokens, tokens.token_ids["text_encoder"], tokens.token_ids["text_encoder_2"],
    )
    return tokens

