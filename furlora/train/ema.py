"""Exponential moving average of the adapter weights (kept on the CPU by default)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdapterEMA:
    """``ema = decay * ema + (1 - decay) * weight`` for each named trainable tensor, in float32.

    The averages live in one flat float32 buffer on ``device`` (the CPU by default, so it costs
    no accelerator memory); ``shadow`` holds views into it by name. An update costs one
    ``torch.cat`` of the weights into a reused buffer on their device, and two vector operations.
    With CUDA weights and a CPU average the copy goes non-blocking into a reused pinned buffer and
    the CPU arithmetic is done at the next update (or when the state is read), when the copy has
    long landed: no per-parameter transfers and no host sync in the training loop.
    ``state_dict()`` / ``load_state_dict()`` make it part of a checkpoint.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, torch.Tensor]], decay: float, device: str | torch.device = "cpu") -> None:
        self.decay = float(decay)
        self.device = torch.device(device)
        named = list(named_parameters)
        self.names = [name for name, _ in named]
        self.flat = torch.cat([p.detach().reshape(-1).to(self.device, dtype=torch.float32) for _, p in named])
        views = self.flat.split([p.numel() for _, p in named])
        self.shadow = {name: view.view(p.shape) for (name, p), view in zip(named, views)}  # views into ``flat``
        self._gathered: torch.Tensor | None = None  # reused, on the weights' device
        self._staging: torch.Tensor | None = None  # reused pinned host copy (CUDA -> CPU)
        self._pending: object | None = None  # CUDA event of a staged copy not yet averaged in
        self.updates = 0

    def _gather(self, named_parameters: Iterable[tuple[str, torch.Tensor]]) -> torch.Tensor:
        """The current weights as one float32 vector on ``device`` (in ``names`` order)."""
        params = dict(named_parameters)
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"EMA update lacks {missing[:3]}")
        tensors = [params[n].detach().reshape(-1) for n in self.names]
        weights_device = tensors[0].device
        if self._gathered is None or self._gathered.device != weights_device:
            self._gathered = torch.empty(self.flat.numel(), dtype=torch.float32, device=weights_device)
        torch.cat([t.float() for t in tensors], out=self._gathered)
        if weights_device == self.device:
            return self._gathered
        if self._gathered.is_cuda and self.device.type == "cpu":
            if self._staging is None:
                self._staging = torch.empty(self.flat.numel(), dtype=torch.float32, pin_memory=True)
            self._staging.copy_(self._gathered, non_blocking=True)
            return self._staging
        return self._gathered.to(self.device)

    def _apply(self, current: torch.Tensor) -> None:
        self.flat.mul_(self.decay).add_(current, alpha=1.0 - self.decay)

    def _finish_pending(self) -> None:
        """Average in a staged CUDA -> CPU copy (its event has normally long completed)."""
        if self._pending is not None:
            self._pending.synchronize()
            self._pending = None
            self._apply(self._staging)

    @torch.no_grad()
    def update(self, named_parameters: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One EMA step towards the current weights."""
        self._finish_pending()
        current = self._gather(named_parameters)
        if current is self._staging:  # a non-blocking copy in flight: average it in later
            self._pending = torch.cuda.Event()
            self._pending.record()
        else:
            self._apply(current)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by name (the same names as the adapter's state dict)."""
        self._finish_pending()
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int = 0) -> None:
        self._pending = None
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
        self.updates = updates
