"""The typed run configuration: YAML in, validated :class:`RunConfig` out.

All validation problems are collected and reported together in one :class:`ConfigError`,
each naming its key path (``lora.unet.rank``), the bad value and what is allowed; unknown keys
come with the closest valid names. Nothing here loads weights, so a bad config fails in
milliseconds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError

from furlora.data.settings import DataSettings
from furlora.errors import ConfigError, format_problems
from furlora.eval.settings import EvalSettings
from furlora.lora.settings import LoraSettings
from furlora.models.settings import ModelSettings
from furlora.settings_base import Settings
from furlora.tokens.settings import TokenSettings
from furlora.train.settings import TrainSettings


class RunConfig(Settings):
    """One training / evaluation run. YAML keys equal these field names."""

    name: str = Field("furlora-run", description="Run name, used in logs and file metadata.")
    seed: int = Field(42, description="Master seed; every random draw derives from it.")
    output_dir: str = Field("runs/furlora-run", description="Where checkpoints, LoRA files and reports go.")
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict of every setting (defaults included)."""
        return self.model_dump(mode="json")

    def fingerprint(self, sections: tuple[str, ...] | None = None) -> str:
        """sha256 of the canonical JSON of the config (or of the given top-level sections)."""
        data = self.to_dict()
        if sections is not None:
            data = {k: data[k] for k in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply ``a.b=c`` overrides, validate, and return it.

    ``path=None`` starts from the defaults. Raises :class:`ConfigError` listing every problem.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (give a YAML file, e.g. configs/tiny-cpu.yaml)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    for item in overrides or []:
        apply_override(data, item)
    return validate_config(data, source=source)


def validate_config(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`, reporting every problem at once."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        raise ConfigError(format_problems(f"invalid config {source}", problems)) from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (``8``, ``true``, ``[1,2]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=100")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    where = ".".join(str(x) for x in loc) or "<top level>"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        valid = _valid_keys(RunConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{where}: unknown key{hint} (valid keys here: {', '.join(valid)})"
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{where}: {err.get('msg', 'invalid')} (got {shown})"


def _valid_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Field names of the settings model found by walking ``path`` from ``model``."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            current = _inner_model(current)
            continue
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None or get_args(annotation):
        for arg in get_args(annotation):
            inner = _inner_model(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation
