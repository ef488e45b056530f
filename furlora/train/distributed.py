"""Averaging across processes without DDP wrappers: one flat all-reduce per optimizer step.

The LoRA gradients of every trained component (UNet and text encoders alike) are concatenated
in a fixed order, summed with one collective and divided by the world size, so the result is the
same on every process and the same from run to run (gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def average_gradients(parameters: Sequence[torch.Tensor], world_size: int) -> None:
    """Replace each parameter's ``.grad`` by its mean over the processes (missing grads count as 0).

    Parameters with ``requires_grad`` off are left alone (their ``.grad`` stays None): learned
    token vectors that stopped training (``tokens.train_fraction``) would otherwise get a zero
    gradient, and AdamW would keep moving them by momentum and weight decay.
    """
    import torch.distributed as dist

    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p, g in zip(parameters, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(p.dtype)
        offset += n


def sum_over_processes(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of Python floats over the processes, in one all-reduce."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
