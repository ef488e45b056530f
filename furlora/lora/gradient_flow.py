"""Gradient-flow check: one backward pass proves every LoRA weight gets a gradient and no base weight does.

Catches the silent failures of LoRA training: a hooked module that is not on the loss path (so
its weights never change), base weights that were not frozen, and non-finite gradients.
Note that with peft's default initialisation (``lora_B`` = 0) the gradient of ``lora_A`` is
exactly zero at step 0; it still *exists*, which is what this check asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from furlora.errors import TrainingError, format_problems, listed

_EXAMPLES = 6


@dataclass
class GradientFlowReport:
    """Result of :func:`check_gradient_flow`."""

    lora_parameters: int
    lora_with_grad: int
    lora_without_grad: list[str] = field(default_factory=list)
    """LoRA parameters that got no gradient (not on the loss path)."""
    lora_nonfinite_grad: list[str] = field(default_factory=list)
    base_with_grad: list[str] = field(default_factory=list)
    """Base (frozen) parameters that got a gradient: they are not frozen."""
    loss: float = float("nan")

    @property
    def ok(self) -> bool:
        return not (self.lora_without_grad or self.lora_nonfinite_grad or self.base_with_grad) and self.lora_parameters > 0

    def problems(self) -> list[str]:
        out = []
        if self.lora_parameters == 0:
            out.append("there are no LoRA parameters (was apply() called?)")
        if self.lora_without_grad:
            out.append(f"{len(self.lora_without_grad)} LoRA weights got no gradient (their module is not on the "
                       f"loss path): {listed(self.lora_without_grad, _EXAMPLES)}")
        if self.lora_nonfinite_grad:
            out.append(f"{len(self.lora_nonfinite_grad)} LoRA weights got NaN/inf gradients: "
                       f"{listed(self.lora_nonfinite_grad, _EXAMPLES)}")
        if self.base_with_grad:
            out.append(f"{len(self.base_with_grad)} base weights got a gradient (not frozen): "
                       f"{listed(self.base_with_grad, _EXAMPLES)}")
        return out

    def raise_for_problems(self) -> None:
        """Raise :class:`TrainingError` describing every problem (no-op when :attr:`ok`)."""
        if not self.ok:
            raise TrainingError(format_problems("gradient-flow check failed", self.problems()))


def check_gradient_flow(
    lora: dict[str, torch.nn.Parameter],
    base: dict[str, torch.nn.Parameter],
    loss: torch.Tensor | Callable[[], torch.Tensor],
) -> GradientFlowReport:
    """Clear all gradients, run one backward pass of ``loss`` and inspect who got a gradient.

    ``lora`` / ``base``: named LoRA and base parameters. ``loss``: a scalar tensor, or a callable
    computing one (called after the gradients are cleared). Gradients are left in place for the
    caller to inspect and cleared again by the next optimizer ``zero_grad``.
    """
    for p in list(lora.values()) + list(base.values()):
        p.grad = None
    value = loss() if callable(loss) else loss
    value.backward()
    report = GradientFlowReport(lora_parameters=len(lora), lora_with_grad=0, loss=float(value.detach()))
    for name, p in lora.items():
        if p.grad is None:
            report.lora_without_grad.append(name)
        elif not bool(torch.isfinite(p.grad).all()):
            report.lora_nonfinite_grad.append(name)
        else:
            report.lora_with_grad += 1
    report.base_with_grad = [name for name, p in base.items() if p.grad is not None]
    return report
