"""Settings of the ``tokens:`` section: learned placeholder tokens (textual inversion / pivotal tuning).

Naming rule (the one diffusers uses for multi-vector embeddings, so saved files load there
unchanged): a concept ``<spitz-fur>`` with ``num_vectors: 3`` becomes the three tokens
``<spitz-fur>``, ``<spitz-fur>_1``, ``<spitz-fur>_2``. Captions and prompts name only the concept
(``<spitz-fur>``); the expansion to all of its tokens happens right before tokenization
(furlora.tokens.captions.expand_prompt, and diffusers' pipelines do the same on their own).

Checks here need no tokenizer; the checks against the model's tokenizers (known token,
initialiser word that is not a single token, embedding file width) live in
furlora.tokens.vocab and furlora.tokens.files and run before any weight loads.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from furlora.settings_base import Settings

#: CLIP's text encoders read 77 positions, two of which are the start and end tokens.
MAX_TOTAL_VECTORS = 75


def vector_token_names(name: str, num_vectors: int) -> list[str]:
    """The token strings of a concept with ``num_vectors`` vectors: ``[name, name_1, ..., name_{N-1}]``."""
    return [name] + [f"{name}_{i}" for i in range(1, num_vectors)]


class TokenConcept(Settings):
    """One learned concept: a placeholder name, its vectors and where they start from."""

    name: str = Field(
        "<spitz-fur>",
        description=(
            "Placeholder written in captions and prompts, e.g. '<spitz-fur>'. Must be new to both "
            "tokenizers and contain no whitespace. CLIP lower-cases text, so names are case-insensitive."
        ),
    )
    num_vectors: int = Field(
        1,
        ge=1,
        le=MAX_TOTAL_VECTORS,
        description=(
            "Embedding vectors (tokens) of this concept. More than 1 adds the tokens <name>_1 ... "
            "<name>_{N-1} (diffusers' multi-vector convention); a prompt names only <name>."
        ),
    )
    init_words: list[str] = Field(
        default_factory=lambda: ["fur"],
        description=(
            "Initialise vector i from the embedding of init_words[i % len(init_words)] (each must be "
            "a single token in both tokenizers, e.g. 'fur', 'hair'). Empty list = random normal init "
            "with the standard deviation of the existing embedding table."
        ),
    )
    init_file: str | None = Field(
        None,
        description=(
            "Start from a saved SDXL embedding file (safetensors with clip_l and clip_g, e.g. one "
            "furlora wrote) to continue training it; overrides init_words. It must hold num_vectors rows."
        ),
    )
    replace_words: list[str] = Field(
        default_factory=lambda: ["fur"],
        description="caption.mode 'replace': whole words (case-insensitive) replaced by this concept's name.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or value != value.strip() or re.search(r"\s", value):
            raise ValueError(f"token name {value!r} must be non-empty and contain no whitespace, e.g. '<spitz-fur>'")
        return value

    @field_validator("init_words", "replace_words")
    @classmethod
    def _check_words(cls, value: list[str]) -> list[str]:
        bad = [w for w in value if not w or re.search(r"\s", w)]
        if bad:
            raise ValueError(f"each entry must be one word without whitespace, got {bad}")
        return value

    def token_names(self) -> list[str]:
        """All token strings of this concept (:func:`vector_token_names`)."""
        return vector_token_names(self.name, self.num_vectors)

    def file_stem(self) -> str:
        """File name stem of this concept's embedding file: the name without characters that are
        invalid in Windows file names (``<spitz-fur>`` -> ``spitz-fur``). A1111 / ComfyUI use the
        stem as the prompt word."""
        stem = re.sub(r'[<>:"/\\|?*]', "", self.name).strip(". ")
        return stem or "embedding"


class TokenCaptionSettings(Settings):
    """How the concept names get into the training captions (``tokens.caption``; where captions
    come from is ``data.captions``, :class:`furlora.data.settings.CaptionSettings`)."""

    mode: Literal["none", "prefix", "replace", "regions"] = Field(
        "prefix",
        description=(
            "none: captions are used as written (write the names in them yourself). prefix: "
            "'<a> <b>, ' + caption (every concept). replace: each concept's replace_words become its "
            "name. regions: append the phrase of every region present in the sample (region_phrases)."
        ),
    )
    replace_fallback: Literal["prefix", "keep"] = Field(
        "prefix",
        description="mode 'replace': a caption with none of the words gets the prefix ('prefix') or stays as it is ('keep').",
    )
    region_phrases: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "mode 'regions': region name -> phrase appended to the caption when the sample has that "
            "region, e.g. {chest: '{token} chest', face: '{token} face'}. '{token}' is the first "
            "concept's name; other names may be written literally."
        ),
    )
    separator: str = Field(", ", description="Text placed between the caption and inserted phrases.")


class TokenSettings(Settings):
    """New tokens trained in both SDXL text encoders, alone or next to the LoRA (pivotal tuning)."""

    enabled: bool = Field(False, description="Train placeholder token embeddings.")
    concepts: list[TokenConcept] = Field(
        default_factory=lambda: [TokenConcept()],
        description="The concepts to learn (each one name, expanded to num_vectors tokens).",
    )
    learning_rate: float | None = Field(
        5e-4, gt=0, description="Learning rate of the embedding vectors (None = train.learning_rate)."
    )
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Decoupled weight decay of the embedding vectors only (it pulls them towards 0, i.e. "
            "shrinks their norm; the rest of both embedding tables is never touched)."
        ),
    )
    train_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Train the vectors during the first fraction of optimizer steps only (pivotal tuning "
            "commonly stops them early and lets the LoRA continue); 1.0 = the whole run."
        ),
    )
    caption: TokenCaptionSettings = Field(default_factory=TokenCaptionSettings)

    @model_validator(mode="after")
    def _check(self) -> TokenSettings:
        problems: list[str] = []
        if self.enabled and not self.concepts:
            problems.append("enabled is true but concepts is empty; add e.g. {name: '<spitz-fur>', init_words: [fur]}")
        total = sum(c.num_vectors for c in self.concepts)
        if total > MAX_TOTAL_VECTORS:
            problems.append(
                f"the concepts have {total} vectors in all; a CLIP prompt holds at most {MAX_TOTAL_VECTORS} tokens"
            )
        seen: dict[str, str] = {}
        for concept in self.concepts:
            for token in concept.token_names():
                key = token.lower()
                if key in seen:
                    problems.append(f"token {token!r} is defined twice (by {seen[key]!r} and {concept.name!r})")
                seen[key] = concept.name
        names = [c.name.lower() for c in self.concepts]
        for a in names:
            for b in names:
                # diffusers expands a multi-vector name with str.replace: a name inside another
                # name would be expanded inside it and corrupt the prompt.
                if a != b and a in b:
                    problems.append(f"concept name {a!r} is part of {b!r}; choose names that do not contain each other")
        stems = [c.file_stem().lower() for c in self.concepts]
        if len(set(stems)) != len(stems):
            problems.append(f"concept names give clashing embedding file names {stems}")
        if self.caption.mode == "replace" and not any(c.replace_words for c in self.concepts):
            problems.append("caption.mode 'replace' needs replace_words in at least one concept")
        if self.caption.mode == "regions":
            if not self.caption.region_phrases:
                problems.append("caption.mode 'regions' needs caption.region_phrases, e.g. {chest: '{token} chest'}")
            for region, phrase in self.caption.region_phrases.items():
                if "{token}" not in phrase and not any(n in phrase.lower() for n in names):
                    problems.append(
                        f"caption.region_phrases.{region} {phrase!r} names no concept; write '{{token}}' or a concept name in it"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def all_token_names(self) -> list[str]:
        """Every token string of every concept, in table order (concept by concept)."""
        return [t for c in self.concepts for t in c.token_names()]
