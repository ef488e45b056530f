"""SDXL textual-inversion files: one safetensors file per concept with ``clip_l`` and ``clip_g``.

Layout (the one diffusers' advanced SDXL script, A1111 and ComfyUI use):

- ``clip_l``: float32 [N, 768 for SDXL] rows for text_encoder (CLIP ViT-L),
- ``clip_g``: float32 [N, 1280 for SDXL] rows for text_encoder_2 (OpenCLIP bigG),

with N = the concept's vectors. furlora adds string metadata (``furlora.token``: the concept
name, ``furlora.tokens``: JSON list of its token strings) so the file can be loaded without
naming the token. Loading into a diffusers pipeline takes two calls, one per encoder
(:func:`load_into_pipeline`); A1111 / ComfyUI use the file stem as the prompt word.

Only safetensors files are read (no pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from furlora.atomic import atomic_file
from furlora.errors import LoraFormatError
from furlora.models.pooling import pool_at_first_eos
from furlora.tokens.settings import vector_token_names

CLIP_L = "clip_l"
CLIP_G = "clip_g"
#: Which file key belongs to which SDXL text encoder.
ENCODER_KEYS: dict[str, str] = {"text_encoder": CLIP_L, "text_encoder_2": CLIP_G}
FORMAT_TAG = "sdxl-textual-inversion"


@dataclass
class EmbeddingFile:
    """The content of one SDXL embedding file (tensors float32 on the CPU)."""

    path: Path
    clip_l: torch.Tensor
    """float32 [N, width of text_encoder]."""
    clip_g: torch.Tensor
    """float32 [N, width of text_encoder_2]."""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return int(self.clip_l.shape[0])

    @property
    def token(self) -> str | None:
        """The concept name stored by furlora, or None for files from other tools."""
        return self.metadata.get("furlora.token")


def save_embedding_file(
    path: str | os.PathLike[str],
    clip_l: torch.Tensor,
    clip_g: torch.Tensor,
    token: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``clip_l`` [N, d1] and ``clip_g`` [N, d2] (stored as float32) atomically to ``path``.

    ``token``: the concept name, stored with its token strings in the metadata.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoraFormatError(f"embedding file {path}: the name must end in .safetensors")
    if clip_l.ndim != 2 or clip_g.ndim != 2 or clip_l.shape[0] != clip_g.shape[0]:
        raise LoraFormatError(
            f"embedding file {path}: clip_l {tuple(clip_l.shape)} and clip_g {tuple(clip_g.shape)} must be [N, width] with the same N"
        )
    meta = {"format": "pt", "furlora.format": FORMAT_TAG}
    if token is not None:
        meta["furlora.token"] = token
        meta["furlora.tokens"] = json.dumps(vector_token_names(token, clip_l.shape[0]))
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tensors = {
        CLIP_L: clip_l.detach().to("cpu", torch.float32).contiguous(),
        CLIP_G: clip_g.detach().to("cpu", torch.float32).contiguous(),
    }
    # Written beside the target and renamed: a crash never leaves a half-written file under the real
    # name; published with the umask's mode (safetensors writes 0600; ComfyUI / A1111 may run as another user).
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_embedding_file(
    path: str | os.PathLike[str], widths: dict[str, int] | None = None, what: str = "embedding file"
) -> EmbeddingFile:
    """Read and check an SDXL embedding file.

    ``widths``: the model's embedding widths ``{"text_encoder": d1, "text_encoder_2": d2}``; a
    file of another width (another model) is an error. ``what`` names the file's origin in
    messages (e.g. the config key). Raises :class:`LoraFormatError` naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraFormatError(f"{what} {path} does not exist")
    if path.suffix != ".safetensors":
        raise LoraFormatError(
            f"{what} {path}: only .safetensors embedding files are read (pickle files such as .pt/.bin can run "
            "code when loaded); re-save it as safetensors with clip_l and clip_g tensors"
        )
    tensors, metadata = _read_safetensors(path, what)
    missing = [k for k in (CLIP_L, CLIP_G) if k not in tensors]
    if missing:
        found = ", ".join(sorted(tensors)) or "no tensors"
        hint = ""
        if {"emb_params", "string_to_param"} & set(tensors) or len(tensors) == 1:
            hint = " It looks like an SD 1.x/2.x embedding (one text encoder); SDXL needs one for each encoder."
        raise LoraFormatError(
            f"{what} {path} has no {' and no '.join(missing)} tensor (found: {found}). An SDXL embedding file holds "
            f"clip_l (rows for text_encoder) and clip_g (rows for text_encoder_2).{hint}"
        )
    rows: dict[str, torch.Tensor] = {}
    for key in (CLIP_L, CLIP_G):
        tensor = tensors[key]
        if tensor.ndim == 1:  # a single vector saved without its row axis
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 2 or tensor.shape[0] == 0:
            raise LoraFormatError(f"{what} {path}: {key} has shape {tuple(tensor.shape)}; expected [N, width] with N >= 1")
        if not tensor.is_floating_point():
            raise LoraFormatError(f"{what} {path}: {key} has dtype {tensor.dtype}; expected floating point")
        tensor = tensor.to(torch.float32)
        if not torch.isfinite(tensor).all():
            raise LoraFormatError(f"{what} {path}: {key} holds NaN or infinite values")
        rows[key] = tensor
    if rows[CLIP_L].shape[0] != rows[CLIP_G].shape[0]:
        raise LoraFormatError(
            f"{what} {path}: clip_l has {rows[CLIP_L].shape[0]} vectors but clip_g has {rows[CLIP_G].shape[0]}; both must have the same number"
        )
    if widths is not None:
        problems = []
        for encoder, key in ENCODER_KEYS.items():
            expected = widths.get(encoder)
            if expected is not None and rows[key].shape[1] != expected:
                problems.append(f"{key} is {rows[key].shape[1]} wide but this model's {encoder} embeds {expected}")
        if problems:
            raise LoraFormatError(
                f"{what} {path} was made for another model: {'; '.join(problems)}. Use an embedding trained on this "
                "base model (SDXL: clip_l 768, clip_g 1280)."
            )
    return EmbeddingFile(path=path, clip_l=rows[CLIP_L], clip_g=rows[CLIP_G], metadata=metadata)


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for each kind of damage
        raise LoraFormatError(f"{what} {path}: not a readable safetensors file ({exc})") from None
    return tensors, metadata


def widths_of(model: Any) -> dict[str, int]:
    """Embedding widths of both text encoders of ``model`` (SDXLComponents or a diffusers pipeline):
    ``{"text_encoder": d1, "text_encoder_2": d2}``."""
    return {enc: int(getattr(model, enc).get_input_embeddings().weight.shape[1]) for enc in ENCODER_KEYS}


def load_into_pipeline(pipeline: Any, path: str | os.PathLike[str], token: str | None = None) -> list[str]:
    """Load an SDXL embedding file into a diffusers SDXL pipeline (both encoders), diffusers' way.

    Two ``load_textual_inversion`` calls: ``clip_l`` into ``text_encoder``/``tokenizer`` and
    ``clip_g`` into ``text_encoder_2``/``tokenizer_2``; then both encoders pool at the first
    end-of-text token (:func:`furlora.models.pooling.pool_at_first_eos`), as in training.
    ``token``: the prompt word (default: the name stored in the file, else the file stem).
    Returns the token strings added (a name with N vectors adds ``name, name_1, ...
    name_{N-1}``; prompts write only ``name``).
    """
    data = read_embedding_file(path, widths_of(pipeline))
    name = token or data.token or data.path.stem
    pipeline.load_textual_inversion(
        data.clip_l, token=name, text_encoder=pipeline.text_encoder, tokenizer=pipeline.tokenizer
    )
    pipeline.load_textual_inversion(
        data.clip_g, token=name, text_encoder=pipeline.text_encoder_2, tokenizer=pipeline.tokenizer_2
    )
    # Pool at the first end token as training did, not at the new (highest) token id.
    pool_at_first_eos(pipeline.text_encoder, pipeline.tokenizer)
    pool_at_first_eos(pipeline.text_encoder_2, pipeline.tokenizer_2)
    return vector_token_names(name, data.num_vectors)
