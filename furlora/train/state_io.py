"""Nested training state (optimizer, LR scheduler, grad scaler, RNG) <-> safetensors + JSON.

``flatten_state`` splits a nested structure of dicts / lists / tuples / numbers / strings /
tensors into one tensor buffer per dtype (written with safetensors: fast, and nothing is ever
unpickled when reading) and a JSON skeleton that records the structure, with the key types of
dicts (optimizer state is keyed by int) and tuples kept. Python floats survive the
JSON round trip exactly (``repr`` is round-trip safe; NaN / inf are allowed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

_TENSOR, _DICT, _TUPLE, _TABLE, _RUN = "__tensor__", "__dict__", "__tuple__", "__table__", "__run__"
_PLAIN = (bool, int, float, str, type(None))


def _table_columns(value: dict[Any, Any]) -> list[Any] | None:
    """The shared keys if ``value`` maps keys to dicts with identical keys (optimizer state), else None."""
    rows = list(value.values())
    if len(rows) < 4 or not isinstance(rows[0], dict):
        return None
    columns = list(rows[0])
    return columns if all(isinstance(row, dict) and list(row) == columns for row in rows) else None


def flatten_state(
    obj: Any, stage: Callable[[str, list[torch.Tensor]], torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], Any]:
    """(one flat buffer per dtype, JSON-serialisable skeleton) of a nested state.

    ``stage(dtype name, flat tensors)`` makes the CPU buffer of one dtype (default: a new
    ``torch.cat`` moved to the CPU); the checkpoint writer passes one that copies into reused
    (pinned) buffers.

    Tensors are packed into one 1-D buffer per dtype (``torch.cat``: a single copy, and a
    safetensors file of a few tensors instead of thousands of small ones); the skeleton node of
    a tensor is ``{"__tensor__": [dtype, offset, numel, shape]}``. A dict of dicts with the same
    keys (optimizer state: param index -> {step, exp_avg, exp_avg_sq}) is stored column-wise,
    ``{"__table__": [row keys, [[column, node], ...]]}``, a tensor column as one run
    ``{"__tensor__": [dtype, offset, [shape, ...]]}``; a dict of tensors (LoRA weights) as
    ``{"__run__": [keys, run]}``.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    sizes: dict[str, int] = {}

    def add(tensors: list[torch.Tensor]) -> tuple[str, int]:
        """Append tensors of one dtype to that dtype's buffer; returns (dtype name, their offset)."""
        name = str(tensors[0].dtype).removeprefix("torch.")
        offset = sizes.get(name, 0)
        parts.setdefault(name, []).extend(t.reshape(-1) for t in tensors)
        sizes[name] = offset + sum(t.numel() for t in tensors)
        return name, offset

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            name, offset = add([value])
            return {_TENSOR: [name, offset, value.numel(), list(value.shape)]}
        if isinstance(value, dict):
            if len(value) >= 4 and all(isinstance(v, torch.Tensor) for v in value.values()):
                # e.g. LoRA weights by name: one run of the buffer per dtype
                return {_RUN: [list(value), column(list(value.values()), path)]}
            columns = _table_columns(value)
            if columns is not None:
                return {_TABLE: [list(value), [[c, column([row[c] for row in value.values()], f"{path}.{c}")] for c in columns]]}
            return {_DICT: [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            if all(isinstance(v, _PLAIN) for v in value):  # e.g. an optimizer group's parameter indices
                return list(value)
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, _PLAIN):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} at {path} in a checkpoint")

    def column(values: list[Any], path: str) -> Any:
        """Tensors of one dtype in a column go into the buffer as one run: far fewer Python steps."""
        if not all(isinstance(v, torch.Tensor) for v in values) or len({v.dtype for v in values}) != 1:
            return [walk(v, f"{path}.{i}") for i, v in enumerate(values)]
        name, offset = add(values)
        return {_TENSOR: [name, offset, [list(v.shape) for v in values]]}

    with torch.no_grad():  # LoRA parameters require grad; the copy must not
        skeleton = walk(obj, "state")
        # One copy per dtype, on the tensors' device, then one transfer: a private CPU copy.
        stage = stage or (lambda _name, tensors: torch.cat(tensors).to("cpu"))
        buffers = {name: stage(name, tensors) for name, tensors in parts.items()}
    return buffers, skeleton


def unflatten_state(skeleton: Any, buffers: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state` (tensors are views into the buffers)."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            name, offset, numel, shape = skeleton[_TENSOR]
            return buffers[name][offset : offset + numel].view(shape)
        if _DICT in skeleton:
            return {k: unflatten_state(v, buffers) for k, v in skeleton[_DICT]}
        if _RUN in skeleton:
            keys, node = skeleton[_RUN]
            return dict(zip(keys, _column_values(node, buffers, len(keys)), strict=True))
        if _TABLE in skeleton:
            keys, columns = skeleton[_TABLE]
            cells = {c: _column_values(node, buffers, len(keys)) for c, node in columns}
            return {k: {c: cells[c][i] for c in cells} for i, k in enumerate(keys)}
        if _TUPLE in skeleton:
            return tuple(unflatten_state(v, buffers) for v in skeleton[_TUPLE])
        raise ValueError(f"unknown checkpoint skeleton node {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, buffers) for v in skeleton]
    return skeleton


def _column_values(node: Any, buffers: dict[str, torch.Tensor], count: int) -> list[Any]:
    if isinstance(node, dict) and _TENSOR in node and len(node[_TENSOR]) == 3:
        name, offset, shapes = node[_TENSOR]
        numels = [math.prod(shape) for shape in shapes]
        chunks = buffers[name][offset : offset + sum(numels)].split(numels)
        return [chunk.view(shape) for chunk, shape in zip(chunks, shapes)]
    values = unflatten_state(node, buffers)
    if len(values) != count:
        raise ValueError("checkpoint table column has the wrong length")
    return values
