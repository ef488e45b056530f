"""The one error hierarchy of furlora.

Every error raised on bad user input is a :class:`FurloraError`. Each subclass also derives
from the builtin a caller would naturally catch (``ValueError``, ``FileNotFoundError`` ...),
so ``except ValueError`` keeps working for code that does not know furlora.

Messages name the file or config key, the bad value, and what is allowed or how to fix it.
The CLI prints ``str(error)`` without a traceback (unless ``--debug``).
"""

from __future__ import annotations


class FurloraError(Exception):
    """Base class for every error furlora raises on bad input or state."""


class ConfigError(FurloraError, ValueError):
    """A run configuration (YAML file, --set override or Python object) is invalid."""


class ModelLoadError(FurloraError, OSError):
    """An SDXL model folder, hub id or weight file cannot be used."""


class DatasetError(FurloraError, ValueError):
    """A dataset folder, image, mask or caption is unusable."""


class TargetError(FurloraError, ValueError):
    """A LoRA target selection (preset, block selector, pattern) is invalid or matches nothing."""


class LoraFormatError(FurloraError, ValueError):
    """A LoRA or embedding file is malformed, for another model, or unsafe."""


class CheckpointError(FurloraError, RuntimeError):
    """A training checkpoint is missing, damaged, or belongs to another run."""


class TrainingError(FurloraError, RuntimeError):
    """Training cannot continue (non-finite losses, out of memory, full disk ...)."""


class RunLockedError(FurloraError, RuntimeError):
    """Another live process holds the run folder's lock (its PID, host and start time are named)."""


class EvaluationError(FurloraError, ValueError):
    """An inpainting / comparison request is invalid (image and mask sizes, LoRA files ...)."""


def format_problems(title: str, problems: list[str]) -> str:
    """Join several problems into one message: a title line, then one bullet per problem."""
    lines = [f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def listed(keys: list[str], limit: int = 12) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are (for error messages)."""
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")
