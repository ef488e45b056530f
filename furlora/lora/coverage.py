"""Coverage report: exactly what a LoRA selection hooks, per component and per block.

Built from :class:`~furlora.lora.targets.TargetSelection` objects, so it needs no weights and
works on the real SDXL architecture on the meta device (``furlora targets --model sdxl-meta``).
Shown as a plain-text table (:meth:`CoverageReport.format_table`) or JSON
(:meth:`CoverageReport.to_json`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from furlora.lora.targets import SKIP_REASONS, TargetSelection, natural_key

BYTES = {"fp16": 2, "fp32": 4}
_TRANSFORMER_BLOCK = re.compile(r"^(.*?\.transformer_blocks\.\d+|encoder\.layers\.\d+)\.")


@dataclass
class BlockCoverage:
    """The hooked modules of one block (``down_blocks.1.attentions.0``, ``encoder.layers.3`` ...)."""

    block: str
    hooked: int
    kinds: dict[str, int]
    """Role (self-attn, cross-attn, ff, proj, resnet-conv ...) -> hooked count."""
    layers: dict[str, int]
    """Layer type (Linear, Conv2d) -> hooked count."""
    parameters: int


@dataclass
class ComponentCoverage:
    """Everything hooked (and deliberately skipped) on one component."""

    component: str
    model_class: str
    presets: list[str]
    blocks_selected: list[str]
    include: list[str]
    exclude: list[str]
    rank: int
    alpha: float
    dropout: float
    use_dora: bool
    learning_rate: float | None
    hooked: int
    transformer_blocks: int
    """Distinct transformer blocks (UNet) / encoder layers (text encoders) with a hooked module."""
    kinds: dict[str, int]
    layers: dict[str, int]
    parameters: int
    bytes_fp16: int
    """Size of the LoRA tensors saved in fp16 (the file adds a small header)."""
    bytes_fp32: int
    blocks: list[BlockCoverage]
    skipped: dict[str, dict[str, Any]]
    """Reason -> {"count", "kinds" (role counts), "names"}; reasons as in targets.SKIP_REASONS."""
    targets: list[str]
    """The exact hooked module names (display names)."""
    notes: list[str] = field(default_factory=list)
    """Warnings about the selection (e.g. modules SDXL never uses)."""


@dataclass
class CoverageReport:
    """Coverage of every component a :class:`~furlora.lora.adapters.LoraAdapters` hooks."""

    model: str
    components: dict[str, ComponentCoverage] = field(default_factory=dict)

    @property
    def hooked(self) -> int:
        return sum(c.hooked for c in self.components.values())

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (totals included)."""
        return {
            "model": self.model,
            "total": {
                "hooked": self.hooked,
                "parameters": self.parameters,
                "bytes_fp16": sum(c.bytes_fp16 for c in self.components.values()),
                "bytes_fp32": sum(c.bytes_fp32 for c in self.components.values()),
            },
            "components": {name: asdict(c) for name, c in self.components.items()},
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self, max_names: int = 8) -> str:
        """A human-readable table: components, then blocks, then what was skipped and why."""
        lines = [f"LoRA coverage of {self.model}"]
        header = f"{'component':<16}{'hooked':>7}{'Linear':>8}{'Conv2d':>8}{'rank':>6}{'alpha':>8}{'dora':>6}" \
                 f"{'lr':>10}{'params':>13}{'fp16':>11}{'fp32':>11}"
        lines += ["", header, "-" * len(header)]
        for c in self.components.values():
            lr = "base" if c.learning_rate is None else f"{c.learning_rate:g}"
            lines.append(
                f"{c.component:<16}{c.hooked:>7}{c.layers.get('Linear', 0):>8}{c.layers.get('Conv2d', 0):>8}"
                f"{c.rank:>6}{c.alpha:>8g}{('yes' if c.use_dora else 'no'):>6}{lr:>10}{c.parameters:>13,}"
                f"{_size(c.bytes_fp16):>11}{_size(c.bytes_fp32):>11}"
            )
        total16 = sum(c.bytes_fp16 for c in self.components.values())
        total32 = sum(c.bytes_fp32 for c in self.components.values())
        lines.append(f"{'total':<16}{self.hooked:>7}{'':>52}{self.parameters:>13,}{_size(total16):>11}{_size(total32):>11}")
        for c in self.components.values():
            what = ", ".join(c.presets) or "none"
            lines += ["", f"{c.component} ({c.model_class}): preset {what}"
                      + (f", blocks {', '.join(c.blocks_selected)}" if c.blocks_selected else "")
                      + (f", include {', '.join(c.include)}" if c.include else "")
                      + (f", exclude {', '.join(c.exclude)}" if c.exclude else "")
                      + f"; {c.hooked} modules in {len(c.blocks)} blocks, {c.transformer_blocks} transformer blocks / layers"]
            width = max([len(b.block) for b in c.blocks] + [5]) + 2
            lines.append(f"  {'block':<{width}}{'hooked':>7}{'params':>12}  kinds")
            for b in c.blocks:
                kinds = ", ".join(f"{k} {n}" for k, n in b.kinds.items())
                lines.append(f"  {b.block:<{width}}{b.hooked:>7}{b.parameters:>12,}  {kinds}")
            lines += [f"  note: {note}" for note in c.notes]
            for reason, info in c.skipped.items():
                kinds = ", ".join(f"{k} {n}" for k, n in info["kinds"].items())
                lines.append(f"  skipped, {reason} ({SKIP_REASONS[reason]}): {info['count']}"
                             + (f" [{kinds}]" if kinds else ""))
                if reason != "not_in_preset":
                    names = info["names"][:max_names]
                    more = f" ... and {info['count'] - len(names)} more" if info["count"] > len(names) else ""
                    lines.append(f"    {', '.join(names)}{more}")
        return "\n".join(lines)


def _size(n: int) -> str:
    if n >= 1024 ** 2:
        return f"{n / 1024 ** 2:.2f} MiB"
    return f"{n / 1024:.1f} KiB"


def component_coverage(selection: TargetSelection, model_class: str = "") -> ComponentCoverage:
    """Summarise one selection."""
    s = selection.settings
    per_block: dict[str, list] = {}
    for t in selection.targets:
        per_block.setdefault(t.block, []).append(t)
    blocks = []
    for block in sorted(per_block, key=natural_key):
        items = per_block[block]
        blocks.append(BlockCoverage(
            block=block,
            hooked=len(items),
            kinds=dict(sorted(Counter(t.role for t in items).items())),
            layers=dict(sorted(Counter(t.layer for t in items).items())),
            parameters=sum(t.lora_parameters(s.rank, s.use_dora) for t in items),
        ))
    transformer_blocks = {m.group(1) for t in selection.targets if (m := _TRANSFORMER_BLOCK.match(t.name))}
    params = sum(b.parameters for b in blocks)
    skipped = {}
    for reason, names in selection.skipped.items():
        roles = Counter(selection.candidates[n].role for n in names if n in selection.candidates)
        skipped[reason] = {"count": len(names), "kinds": dict(sorted(roles.items())), "names": list(names)}
    return ComponentCoverage(
        component=selection.component,
        model_class=model_class,
        presets=s.presets,
        blocks_selected=list(s.blocks),
        include=list(s.include),
        exclude=list(s.exclude),
        rank=s.rank,
        alpha=s.alpha,
        dropout=s.dropout,
        use_dora=s.use_dora,
        learning_rate=s.learning_rate,
        hooked=len(selection.targets),
        transformer_blocks=len(transformer_blocks),
        kinds=dict(sorted(Counter(t.role for t in selection.targets).items())),
        layers=dict(sorted(Counter(t.layer for t in selection.targets).items())),
        parameters=params,
        bytes_fp16=params * BYTES["fp16"],
        bytes_fp32=params * BYTES["fp32"],
        blocks=blocks,
        skipped=skipped,
        targets=selection.names,
        notes=_notes(selection),
    )


def _notes(selection: TargetSelection) -> list[str]:
    if selection.component != "text_encoder":
        return []
    layers = [int(m.group(1)) for n in selection.candidates if (m := re.match(r"encoder\.layers\.(\d+)\.", n))]
    if not layers:
        return []
    last = f"encoder.layers.{max(layers)}"
    hooked = [n for n in selection.names if n.startswith(last + ".")]
    if not hooked:
        return []
    return [f"SDXL reads text encoder 1's penultimate hidden state, so LoRA on its last layer ({last}, "
            f"{len(hooked)} modules) never gets a gradient; add exclude: ['{last}.*'] to skip it"]
