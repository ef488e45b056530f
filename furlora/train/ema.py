"""Exponential moving average of the adapter weights (kept on the CPU by default)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdapterEMA:
    """``ema = decay * ema + (1 - decay) * weight`` for each named trainable tensor, in float32.

    The copy lives on ``device`` (the CPU by default, so it costs no accelerator memory).
    ``state_dict()`` / ``load_state_dict()`` make it part of a checkpoint.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, torch.Tensor]], decay: float, device: str | torch.device = "cpu") -> None:
        self.decay = float(decay)
        self.device = torch.device(device)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().to(self.device, dtype=torch.float32, copy=True) for name, p in named_parameters
        }
        self.updates = 0

    @torch.no_grad()
    def update(self, named_parameters: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One EMA step towards the current weights."""
        for name, p in named_parameters:
            shadow = self.shadow[name]
            shadow.mul_(self.decay).add_(p.detach().to(self.device, dtype=torch.float32), alpha=1.0 - self.decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by name (the same names as the adapter's state dict)."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int = 0) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
        self.updates = updates
