"""The typed run configuration: YAML in, validated :class:`RunConfig` out.

All validation problems are collected and reported together in one :class:`ConfigError`,
each naming its key path (``lora.unet.rank``), the bad value and what is allowed; unknown keys
come with the closest valid names. Nothing here loads weights, so a bad config fails in
milliseconds.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

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

    @model_validator(mode="after")
    def _precision_agrees(self) -> RunConfig:
        """Frozen bf16 / fp16 weights need autocast: without it the fp32 LoRA path meets bf16
        weights and the first UNet forward fails ("mat1 and mat2 must have the same dtype")
        after every weight loaded. An unset ``train.mixed_precision`` follows ``model.dtype``;
        an explicit ``no`` is an error naming both keys."""
        dtype = self.model.dtype
        if dtype == "fp32" or self.train.mixed_precision != "no":
            return self
        if "mixed_precision" in self.train.model_fields_set:
            raise ValueError(
                f"model.dtype: {dtype} with train.mixed_precision: no cannot train (the frozen {dtype} UNet "
                f"would meet fp32 inputs); set train.mixed_precision: {dtype} (LoRA weights stay fp32) "
                "or model.dtype: fp32"
            )
        self.train.mixed_precision = dtype
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict of every setting (defaults included)."""
        return self.model_dump(mode="json")


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
        data = {} if loaded is None else loaded
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    return validate_config(data, source=source)


#: Keys that were removed, with what to write instead (an old config gets this, not "unknown key").
REMOVED_KEYS: dict[tuple[str, ...], str] = {
    ("eval", "every_n_steps"): "train.validation.every_n_steps (how often the held-out split is validated)",
    ("eval", "validation_dataset"): "train.validation.path (the held-out dataset folder)",
    ("eval", "validation_images"): (
        "train.validation.num_images (images in the training sample grid) or eval.max_images "
        "(images in the demo's comparison)"
    ),
}


def validate_config(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`, reporting every problem at once."""
    removed = [path for path in REMOVED_KEYS if _has_key(data, path)]
    problems = [f"{'.'.join(path)} was removed; write {REMOVED_KEYS[path]}" for path in removed]
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems += [
            _describe(err) for err in exc.errors()
            if not (err.get("type") == "extra_forbidden" and tuple(err.get("loc", ())) in removed)
        ]
    else:
        if not problems:
            return config
    raise ConfigError(format_problems(f"invalid config {source}", problems)) from None


def _has_key(data: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


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
    if isinstance(value, bool) and raw.strip().lower() in _YAML_BOOL_WORDS and _takes_text(parts):
        # YAML 1.1 reads yes/no/on/off as booleans; a text field (train.mixed_precision=no) wants the word.
        value = raw.strip()
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


_YAML_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _takes_text(parts: list[str]) -> bool:
    """True when the field at ``parts`` accepts a string (str, a Literal of strings, or an optional of them)."""
    current: Any = RunConfig
    annotation: Any = None
    for part in parts:
        model = _inner_model(current)
        if not _is_model(model) or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        current = annotation
    return _admits_text(annotation)


def _admits_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(a, str) for a in get_args(annotation))
    if get_origin(annotation) in (Union, UnionType):
        return any(_admits_text(a) for a in get_args(annotation))
    return False


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    where = ".".join(str(x) for x in loc) or "<top level>"
    kind = err.get("type", "")
    if kind == "value_error" and not loc:  # a check across sections: its message names the keys
        return str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        valid = _valid_keys(RunConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{where}: unknown key{hint} (valid keys here: {', '.join(valid)})"
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if isinstance(value, bool) and _takes_text([str(x) for x in loc]):
        shown += "; YAML reads no / yes / on / off as booleans: quote the word, e.g. 'no'"
    return f"{where}: {err.get('msg', 'invalid')} (got {shown})"


def _valid_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Field names of the settings model found by walking ``path`` from ``model``."""
    current: Any = model
    for part in path:
        if isinstance(part, int):  # a list index
            continue
        if not _is_model(current):
            return []
        field = current.model_fields.get(str(part))
        if field is not None:  # else a key of a dict of models: the model stays
            current = _inner_model(field.annotation)
    return sorted(current.model_fields) if _is_model(current) else []


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``, else the annotation."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation):
        inner = _inner_model(arg)
        if _is_model(inner):
            return inner
    return annotation
