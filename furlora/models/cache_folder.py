"""Publish a generated model folder into the cache atomically.

Tiny models and the assembled pretrained base are written once into ``<cache>/models/<name>-<key>``.
Writing happens in a temporary sibling folder that is renamed into place, so a concurrent
reader (parallel test workers, two trainings) never sees a half-written model, and a crash
leaves only a hidden temporary folder behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from furlora.atomic import give_umask_modes, make_temp_folder

COMPLETE_MARKER = "model_index.json"


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
