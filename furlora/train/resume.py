"""Choosing the checkpoint to resume from, and refusing one whose config changes training.

``--resume auto``: the newest checkpoint that verifies in the run's checkpoint folder (a damaged
newest one is skipped and reported); none -> start fresh. ``--resume never``: start fresh (the
folder must hold no checkpoint, so old ones are never silently mixed with a new run).
``--resume PATH``: exactly that checkpoint folder (or the newest verifying one in that folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from furlora.errors import CheckpointError, ConfigError
from furlora.train.checkpoint import CheckpointState, find_resumable, list_checkpoints, read_checkpoint
from furlora.train.settings import NON_TRAINING_KEYS

logger = logging.getLogger(__name__)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: data}


def _ignored(key: str, config: dict[str, Any]) -> bool:
    if key == "train.max_steps":
        # A constant schedule does not depend on the run length; warmup + decay schedules do, and
        # so does the step at which learned tokens stop training (tokens.train_fraction < 1).
        tokens = config.get("tokens", {})
        if tokens.get("enabled") and float(tokens.get("train_fraction", 1.0)) < 1.0:
            return False
        return config.get("train", {}).get("lr_scheduler", "constant") == "constant"
    return any(key == k or key.startswith(k + ".") for k in NON_TRAINING_KEYS if k != "train.max_steps")


def training_items(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings that change what is trained."""
    return {k: v for k, v in flatten(config).items() if not _ignored(k, config)}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of :func:`training_items`."""
    return hashlib.sha256(json.dumps(training_items(config), sort_keys=True, default=str).encode()).hexdigest()


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences in training-relevant keys: ``key: checkpoint X, now Y``."""
    a, b = training_items(saved), training_items(current)
    pairs = {key: (a.get(key, "<unset>"), b.get(key, "<unset>")) for key in sorted(set(a) | set(b))}
    return [f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in pairs.items() if old != new]


def check_compatible(state: CheckpointState, config: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming every differing key if ``state`` came from another setup."""
    saved = state.meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{state.path}: the checkpoint holds no config; it was not written by furlora train")
    differences = config_differences(saved, config)
    if differences:
        lines = "\n".join(f"  - {d}" for d in differences)
        raise CheckpointError(
            f"refusing to resume from {state.path}: its config differs in settings that change training:\n{lines}\n"
            "Resume with the checkpoint's settings, or start a new run (another output_dir, or --resume never "
            "in an empty folder)."
        )


def select_checkpoint(mode: str, directory: Path) -> tuple[CheckpointState | None, list[str]]:
    """Resolve ``--resume auto|never|PATH`` to a verified checkpoint (or None) and skip notes."""
    if mode == "never":
        existing = list_checkpoints(directory)
        if existing:
            raise CheckpointError(
                f"{directory} already holds checkpoints (newest {existing[-1].name}) and --resume never was given. "
                "Use --resume auto to continue that run, or set another output_dir to start a new one."
            )
        return None, []
    if mode == "auto":
        state, skipped = find_resumable(directory)
        if state is None and skipped:
            raise CheckpointError(
                f"no usable checkpoint in {directory}; every one is damaged:\n  - " + "\n  - ".join(skipped)
                + "\nDelete the folder to start over, or restore a copy."
            )
        return state, skipped
    path = Path(mode)
    if not path.exists():
        raise ConfigError(f"--resume {mode}: no such checkpoint folder (give auto, never, or a step-NNNNNNNN folder)")
    if list_checkpoints(path):
        return select_checkpoint("auto", path)
    try:
        return read_checkpoint(path), []
    except CheckpointError as exc:
        raise CheckpointError(f"--resume {mode}: {exc}") from None
