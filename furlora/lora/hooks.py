"""Deprecated module name of :mod:`furlora.lora.adapters` (LoraAdapters installs no hooks).

Kept for one release: importing from here works and warns; the next release removes it.
"""

from __future__ import annotations

import warnings
from typing import Any

from furlora.lora import adapters

warnings.warn("furlora.lora.hooks is now furlora.lora.adapters; the old module name will be removed in the "
              "next release", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(adapters, name)  # LoraHookManager: adapters' own deprecated alias (warns too)
