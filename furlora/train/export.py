"""Writing the trained LoRA (and its EMA copy) in every configured file format."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_lora(
    manager: Any, ema: Any | None, formats: list[str], lora_dir: Path, name: str, metadata: dict[str, str]
) -> dict[str, str]:
    """Save ``<lora_dir>/<name>.<format>.safetensors`` per format (+ ``<name>-ema.*`` with EMA).

    ``manager``: the LoraAdapters (its ``save`` writes real alphas and the metadata).
    Returns {format (or "format-ema"): path}.
    """
    lora_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in formats:
        path = lora_dir / f"{name}.{fmt}.safetensors"
        manager.save(path, format=fmt, metadata=metadata)
        files[fmt] = str(path)
    if ema is not None:
        raw = manager.lora_state_dict()  # detached copies
        manager.load_lora_state_dict(ema.state_dict())
        try:
            for fmt in formats:
                path = lora_dir / f"{name}-ema.{fmt}.safetensors"
                manager.save(path, format=fmt, metadata={**metadata, "furlora_ema_decay": str(ema.decay)})
                files[f"{fmt}-ema"] = str(path)
        finally:
            manager.load_lora_state_dict(raw)  # training weights back in place
    return files
