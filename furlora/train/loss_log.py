"""Loss figures that are logged, not trained on: summed on the device, read at logging steps.

Reading a tensor on the host (``float()``, ``.item()``, ``.tolist()``) waits for the device to
finish everything queued before it. Per-region sums read every micro-step would stall the
accelerator before each backward, so they are added up here as device tensors and read in one
transfer when the tracker logs (``train.log.every_n_steps``).
"""

from __future__ import annotations

import torch


class LossLog:
    """Per-region error sums and the share of loss weight inside the inpainting hole, since the last read.

    ``loss/region/<name>`` = (summed squared error over the region) / (summed region area) over
    every micro-batch added since the last :meth:`read`; ``loss/hole_weight_share`` = the mean
    over those samples of the share of their loss weight inside the hole (9-channel objective).
    """

    def __init__(self) -> None:
        self._regions: dict[str, torch.Tensor] = {}
        self._share_sum: torch.Tensor | None = None
        self._share_count = 0

    def add(self, regions: dict[str, torch.Tensor], hole_share: torch.Tensor | None = None) -> None:
        """Add one micro-batch: ``regions`` from ``region_error_sums``, ``hole_share`` [B] (or None). No host sync."""
        for name, pair in regions.items():
            pair = pair.detach()
            self._regions[name] = pair if name not in self._regions else self._regions[name] + pair
        if hole_share is not None:
            total = hole_share.detach().float().sum()
            self._share_sum = total if self._share_sum is None else self._share_sum + total
            self._share_count += hole_share.numel()

    def read(self) -> dict[str, float]:
        """The metrics of everything added since the last read (one host transfer), then start over."""
        names = list(self._regions)
        parts = [self._regions[name].float().reshape(2) for name in names]
        if self._share_sum is not None:
            parts.append(self._share_sum.reshape(1))
        metrics: dict[str, float] = {}
        if parts:
            values = torch.cat([p.to(parts[0].device) for p in parts]).tolist()
            for k, name in enumerate(names):
                error, area = values[2 * k], values[2 * k + 1]
                if area > 0:
                    metrics[f"loss/region/{name}"] = error / area
            if self._share_sum is not None and self._share_count:
                metrics["loss/hole_weight_share"] = values[-1] / self._share_count
        self._regions, self._share_sum, self._share_count = {}, None, 0
        return metrics
