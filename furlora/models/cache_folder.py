"""Generated model folders in the cache: where they go, and publishing them atomically.

Tiny models, real-size models and the assembled pretrained base are written once into
``<cache>/models/<name>-<key>`` (:func:`model_folder`).
Writing happens in a temporary sibling folder that is renamed into place, so a concurrent
reader (parallel test workers, two trainings) never sees a half-written model, and a crash
leaves only a hidden temporary folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from furlora.atomic import give_umask_modes, make_temp_folder

COMPLETE_MARKER = "model_index.json"


def default_cache_dir() -> Path:
    """``$FURLORA_CACHE`` or ``~/.cache/furlora``."""
    return Path(os.environ.get("FURLORA_CACHE") or Path.home() / ".cache" / "furlora")


def model_folder(name: str, spec: Any, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/models/<name>-<key>`` (``cache_dir`` or :func:`default_cache_dir`), ``key`` a hash of
    ``spec`` (anything JSON-able that determines the files), so a changed spec never serves stale files."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "models" / f"{name}-{key}"


def publish_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first building it with ``build(tmp_folder)`` if it is not complete."""
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_folder(target)  # the umask's folder mode, not mkdtemp's 0700 (a shared cache)
    try:
        build(tmp)
        give_umask_modes(tmp)  # safetensors writes 0600 files; other users share this cache
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / COMPLETE_MARKER).is_file():  # lost a race to a complete folder: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
