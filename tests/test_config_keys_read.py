"""Every config key is read by some code path: a key that nothing reads is a setting that does nothing.

Static check: each leaf field of :class:`furlora.config.RunConfig` must be read outside the
settings modules, as an attribute (``.every_n_steps``), a ``getattr`` / dict key string, or a
keyword of a settings-to-call mapping. A field name shared by several sections (``enabled``)
passes once any of them is read, so the test catches keys with names of their own, which is how
dead keys looked (``eval.every_n_steps`` was read only by a callback nothing created).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from furlora.config import RunConfig

PACKAGE = Path(__file__).resolve().parents[1] / "furlora"

#: Keys read without their name in code, with the reason (keep this list short and explained).
READ_INDIRECTLY: dict[str, str] = {}


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, field name) of every leaf field; nested settings sections are walked."""
    out = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = [a for a in (getattr(annotation, "__args__", None) or (annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            for sub in nested:
                out += _leaf_keys(sub, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", name))
    return out


def _code_outside_settings() -> str:
    parts = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("settings.py", "settings_base.py", "config.py"):
            continue
        parts.append(path.read_text(encoding="utf-8"))
    return "\n".join(parts)


def test_every_config_key_is_read_somewhere():
    code = _code_outside_settings()
    unread = []
    for key, name in _leaf_keys(RunConfig):
        if key in READ_INDIRECTLY:
            continue
        pattern = rf"\.{re.escape(name)}\b|[\"']{re.escape(name)}[\"']|\b{re.escape(name)}="
        if not re.search(pattern, code):
            unread.append(key)
    assert not unread, f"config keys that no code reads (remove them or wire them): {unread}"


def test_the_check_finds_an_unread_key():
    class Section(BaseModel):
        a_key_nothing_reads_xyz: int = 0

    class Config(BaseModel):
        section: Section = Section()

    keys = _leaf_keys(Config)
    assert keys == [("section.a_key_nothing_reads_xyz", "a_key_nothing_reads_xyz")]
    assert not re.search(r"\.a_key_nothing_reads_xyz\b", _code_outside_settings())
