"""The validation report: every problem of a dataset, each naming its file, listed together."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from furlora.errors import DatasetError, format_problems

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem with one file.

    ``image`` is the image of the sample the problem belongs to (None for dataset-level
    problems and for files that belong to no sample, e.g. a mask without image): an ``error``
    on a sample makes it unusable (skipped or fatal, by ``data.bad_samples``); a ``warning``
    is reported and the sample is used.
    """

    path: Path
    message: str
    severity: Severity = "error"
    kind: str = "other"
    image: Path | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ValidationReport:
    """What :func:`furlora.data.validate.validate_dataset` found; printable with :meth:`summary`."""

    root: Path
    layout: str
    layout_reason: str
    images_found: int = 0
    samples_used: int = 0
    regions_found: dict[str, int] = field(default_factory=dict)  # region -> samples with a non-empty mask
    regions_used: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # e.g. missing_caption, full_mask_policy, bucket:HxW

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error-level problem (warnings allowed)."""
        return not self.errors

    def summary(self) -> str:
        """A human-readable multi-line report: counts first, then every problem with its path."""
        lines = [
            f"dataset {self.root}",
            f"  layout: {self.layout} ({self.layout_reason})",
            f"  images found: {self.images_found}; samples used: {self.samples_used}; skipped: {len(self.skipped)}",
        ]
        if self.regions_found:
            found = ", ".join(f"{name} ({n})" for name, n in sorted(self.regions_found.items()))
            lines.append(f"  regions found (samples with a non-empty mask): {found}")
        lines.append(f"  regions used: {', '.join(self.regions_used) if self.regions_used else 'none'}")
        for name, n in sorted(self.counts.items()):
            lines.append(f"  {name}: {n}")
        if self.problems:
            lines.append(f"  {len(self.errors)} error(s), {len(self.warnings)} warning(s):")
            for p in self.problems:
                lines.append(f"    [{p.severity}] {p}")
        else:
            lines.append("  no problems found")
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        """Raise one DatasetError listing every error-level problem (warnings are not raised)."""
        if self.errors:
            hint = "fix the files, or set data.bad_samples: skip to leave these samples out"
            raise DatasetError(format_problems(f"dataset {self.root} has problems ({hint})", [str(p) for p in self.errors]))
