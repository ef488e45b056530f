"""Lazy package exports: ``from furlora import Trainer`` without importing torch at ``import furlora``.

``furlora.config`` imports every settings module, and validating a config must not wait for
torch / diffusers / peft to import; so packages name their public objects here and import them
on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first access."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
