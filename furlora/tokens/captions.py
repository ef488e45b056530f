"""Put the learned concept names into captions, and expand multi-vector names before tokenizing.

Two steps, kept apart on purpose:

1. :func:`insert_tokens` writes the *short form* a person would type (``"<spitz-fur>, a dog"``),
   per ``tokens.caption.mode``. This is also what a diffusers pipeline takes as a prompt.
2. :func:`expand_prompt` turns each name of a concept with N vectors into its N tokens
   (``"<spitz-fur> <spitz-fur>_1"``), the same expansion diffusers' pipelines apply to prompts
   once the embedding is loaded. Apply it only right before tokenizing; a pipeline given an
   already expanded prompt would expand it a second time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from furlora.tokens.settings import TokenConcept, TokenSettings


def insert_tokens(caption: str, settings: TokenSettings, regions: Sequence[str] = ()) -> str:
    """The caption with the concept names inserted per ``settings.caption`` (short form).

    - ``none``: unchanged.
    - ``prefix``: ``"<a> <b>" + separator + caption``; a concept already named in the caption
      is not added again.
    - ``replace``: every whole-word, case-insensitive match of a concept's ``replace_words``
      becomes its name; a caption with no match gets the prefix (``replace_fallback: prefix``)
      or stays unchanged (``keep``).
    - ``regions``: for each region in ``regions`` (order kept, duplicates dropped) that has a
      phrase in ``region_phrases``, the phrase is appended (``{token}`` = the first concept's
      name). Regions without a phrase add nothing.

    An empty caption (caption dropout: the unconditional sample) stays empty in every mode.
    """
    mode = settings.caption.mode
    if mode == "none" or not caption.strip():
        return caption
    if mode == "prefix":
        return _prefix(caption, settings)
    if mode == "replace":
        text = caption
        replaced = False
        for concept in settings.concepts:
            if not concept.replace_words:
                continue
            pattern = r"\b(?:" + "|".join(re.escape(w) for w in concept.replace_words) + r")\b"
            # A callable replacement: the name is inserted literally (no backslash escapes).
            text, count = re.subn(pattern, lambda _m, name=concept.name: name, text, flags=re.IGNORECASE)
            replaced = replaced or count > 0
        if not replaced and settings.caption.replace_fallback == "prefix":
            return _prefix(caption, settings)
        return text
    # regions
    first = settings.concepts[0].name if settings.concepts else ""
    phrases = []
    for region in dict.fromkeys(regions):
        phrase = settings.caption.region_phrases.get(region)
        if phrase is not None:
            phrases.append(phrase.replace("{token}", first))
    return _join([caption, *phrases], settings.caption.separator)


def _prefix(caption: str, settings: TokenSettings) -> str:
    lower = caption.lower()
    names = [c.name for c in settings.concepts if c.name.lower() not in lower]
    if not names:
        return caption
    return _join([" ".join(names), caption], settings.caption.separator)


def _join(parts: Iterable[str], separator: str) -> str:
    return separator.join(p for p in (p.strip() for p in parts) if p)


def expand_prompt(prompt: str, concepts: Sequence[TokenConcept]) -> str:
    """Replace each concept name by all of its tokens (``<a>`` -> ``<a> <a>_1 <a>_2``).

    Matches diffusers' ``maybe_convert_prompt`` on short-form prompts; unlike it, a token that is
    already expanded (``<a>_1``) is left alone, so applying this twice changes nothing.
    """
    for concept in concepts:
        if concept.num_vectors == 1:
            continue
        expanded = " ".join(concept.token_names())
        # The full expansion is tried first at each position, so an expanded name maps to itself;
        # a bare name not followed by "_<digit>" gets expanded.
        pattern = re.escape(expanded) + "|" + re.escape(concept.name) + r"(?!_\d)"
        prompt = re.sub(pattern, lambda _m, text=expanded: text, prompt)
    return prompt


def present_regions(sample: dict[str, Any]) -> list[str]:
    """Region names of a dataset sample whose mask has a positive pixel after the crop
    (all named regions when the sample carries no ``region_masks``)."""
    names = [str(n) for n in sample.get("region_names") or []]
    masks = sample.get("region_masks")
    if masks is None or len(masks) != len(names):
        return [n for n in names if n]
    return [n for n, m in zip(names, masks) if n and float(m.max()) > 0]


class CaptionCollate:
    """Wrap a collate function (list of samples -> batch): each sample's caption first gets the
    concept names (:func:`insert_tokens`, with the sample's present regions) and, with
    ``expand=True``, the multi-vector expansion, so the batch is ready for the tokenizers.

    Picklable (it holds only settings and the wrapped function), so data-loading workers can use it.
    The samples themselves are not modified (shallow copies get the new caption).
    """

    def __init__(
        self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]], settings: TokenSettings, expand: bool = True
    ) -> None:
        self.collate = collate
        self.settings = settings
        self.expand = expand

    def caption(self, sample: dict[str, Any]) -> str:
        text = insert_tokens(str(sample.get("caption", "")), self.settings, present_regions(sample))
        return expand_prompt(text, self.settings.concepts) if self.expand else text

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate([{**sample, "caption": self.caption(sample)} for sample in samples])
