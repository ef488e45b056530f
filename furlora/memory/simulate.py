"""Run a model on the meta device and follow every byte it would allocate.

Meta tensors have shapes, dtypes and storage lifetimes but no data, so a real-size SDXL
training step runs in about a second on a CPU. :class:`LiveBytes` (a dispatch mode) sees each
storage an op creates and each one freed (when its last tensor dies), and records the live
total over time: autograd's saved tensors, gradient checkpointing's recomputation, transient
buffers of backward and the casts of mixed precision all show up because they really happen.

Two function modes make the meta run behave like a GPU run:

* :class:`FusedAttention`: ``scaled_dot_product_attention`` runs the fused (flash) kernel, which
  keeps q, k, v, the output and a log-sum-exp for backward, never the N x N attention matrix.
  (On meta PyTorch would otherwise pick the math path.)
* :class:`AutocastEmulation`: CUDA autocast's casting rules at the function level (above
  autograd, where autocast lives): matmuls and convolutions run in the low precision on cast
  copies, normalisations and softmax in fp32. Meta tensors cannot use real CUDA autocast.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class LiveBytes(TorchDispatchMode):
    """Track the bytes of storages created while active, and their peak.

    Storages of tensors passed in ``existing`` (weights, inputs) and their views are not counted.
    ``events`` is the ordered list of ``(storage serial number, +bytes | -bytes)``; :meth:`peak_excluding`
    replays it without some storages (e.g. gradients that the planner counts elsewhere).
    """

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._known = {_storage_key(t) for t in existing}
        self._serial: dict[int, int] = {}  # storage address -> serial of the live storage there
        self._next = 0
        self.events: list[tuple[int, int]] = []
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        address = storage._cdata
        if address in self._known or address in self._serial:
            return
        # A freed storage's address is reused by later ones: events use a serial number instead.
        serial = self._next
        self._next += 1
        size = storage.nbytes()
        self._serial[address] = serial
        self.events.append((serial, size))
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, address, serial, size)

    def _release(self, address: int, serial: int, size: int) -> None:
        if self._serial.get(address) == serial:
            del self._serial[address]
        self.events.append((serial, -size))
        self.live -= size

    def allocated(self, start: int = 0, stop: int | None = None) -> int:
        """Bytes allocated (not net: frees ignored) between two :meth:`mark` positions."""
        return sum(delta for _, delta in self.events[start:stop] if delta > 0)

    def mark(self) -> int:
        """Current position in ``events`` (to measure a phase with :meth:`allocated`)."""
        return len(self.events)

    def peak_excluding(self, keys: set[int]) -> tuple[int, int]:
        """(peak, live at the end) of the tracked bytes, ignoring storages in ``keys``."""
        live = peak = 0
        for key, delta in self.events:
            if key not in keys:
                live += delta
                peak = max(peak, live)
        return peak, live

    def keys_of(self, tensors: Iterable[torch.Tensor]) -> set[int]:
        """Event keys of the storages of live tracked tensors (for :meth:`peak_excluding`)."""
        return {self._serial[k] for k in (_storage_key(t) for t in tensors) if k in self._serial}


class FusedAttention(TorchFunctionMode):
    """Route ``F.scaled_dot_product_attention`` to the fused flash kernel (meta-capable)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _flash_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):  # noqa: ANN001, ANN202
    if attn_mask is not None:  # no fused kernel takes an arbitrary mask: the math path it is
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, scale=scale
    )
    return out[0]


class AutocastEmulation(TorchFunctionMode):
    """CUDA autocast's casting rules for the ops an SDXL UNet / CLIP / VAE uses, on any device."""

    LOW_PRECISION = {
        F.linear, F.conv2d, F.conv1d, F.scaled_dot_product_attention, torch.matmul, torch.Tensor.matmul,
        torch.Tensor.__matmul__, torch.bmm, torch.baddbmm, torch.mm, torch.addmm, torch.Tensor.bmm,
        torch.Tensor.mm,
    }
    FULL_PRECISION = {
        F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax,
        F.mse_loss,
    }

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in self.LOW_PRECISION:
            args, kwargs = _cast((args, kwargs), self.dtype)
        elif func in self.FULL_PRECISION:
            args, kwargs = _cast((args, kwargs), torch.float32)
        return func(*args, **kwargs)


def _cast(tree, dtype: torch.dtype):  # noqa: ANN001, ANN202
    return tree_map_only(torch.Tensor, lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t, tree)
