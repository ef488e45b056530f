"""LoRA files in an inpainting pipeline, and the variants a comparison runs (off / on / scales).

Files (diffusers or kohya format, safetensors only) are read with
:func:`furlora.lora.formats.load_lora_file` and checked against the model's modules *before*
anything is loaded: a LoRA for another architecture (SD 1.5, a different UNet, another text
encoder width) is an :class:`~furlora.errors.EvaluationError` naming the mismatched keys.
They are then loaded with diffusers' ``load_lora_weights`` (one adapter per file) and switched
with ``set_adapters`` / ``disable_lora``: "off" is the base model exactly, and a scale of 0
equals off.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from furlora.errors import EvaluationError, FurloraError, format_problems
from furlora.eval.settings import EvalSettings

logger = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_LISTED = 6


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file checked against a model: its adapter name, format and components."""

    path: Path
    adapter: str
    format: str
    components: tuple[str, ...]
    modules: int


@dataclass(frozen=True)
class Variant:
    """One column of a comparison: adapter name -> scale (empty = every LoRA off); ``tokens``:
    the prompt carries the learned tokens of the comparison's embedding files."""

    name: str
    scales: dict[str, float] = field(default_factory=dict)
    tokens: bool = False

    @property
    def is_off(self) -> bool:
        return not self.scales


OFF = Variant("off")


def adapter_name(path: Path, taken: set[str]) -> str:
    """A unique, filename-safe adapter name from a file stem (``my lora.v2`` -> ``my_lora_v2``)."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "lora"
    name, n = base, 2
    while name in taken or name == OFF.name:
        name, n = f"{base}_{n}", n + 1
    return name


def _submodule(root: Any, path: str) -> Any | None:
    try:
        module = root.get_submodule(path)
    except AttributeError:
        return None
    return getattr(module, "base_layer", module)  # a module already wrapped by peft


def check_lora_fit(weights: Any, modules: dict[str, Any], source: str) -> None:
    """Raise :class:`EvaluationError` unless every LoRA module of ``weights`` exists in ``modules``
    (component name -> torch module, real or on the meta device) with matching in/out sizes.

    ``weights``: :class:`~furlora.lora.weights.LoraWeights` (canonical keys ``component.module``).
    """
    missing_component: list[str] = []
    no_module: list[str] = []
    bad_shape: list[str] = []
    for key in weights.module_keys():
        component, module_path = key.split(".", 1)
        root = modules.get(component)
        if root is None:
            missing_component.append(key)
            continue
        target = _submodule(root, module_path)
        if target is None and module_path.startswith("text_model."):
            target = _submodule(root, module_path[len("text_model."):])  # transformers 5 dropped the level
        weight = getattr(target, "weight", None)
        if target is None or weight is None:
            no_module.append(key)
            continue
        down = weights.tensors[f"{key}.lora_A.weight"]
        up = weights.tensors[f"{key}.lora_B.weight"]
        if int(down.shape[1]) != int(weight.shape[1]) or int(up.shape[0]) != int(weight.shape[0]):
            bad_shape.append(
                f"{key}: LoRA maps {int(down.shape[1])} -> {int(up.shape[0])} features but the model's "
                f"layer is {int(weight.shape[1])} -> {int(weight.shape[0])}"
            )
    problems = [f"{len(items)} modules {what}: {_examples(items)}" for what, items in (
        ("of a component this model lacks", missing_component), ("that do not exist in this model", no_module),
        ("with mismatched sizes", bad_shape),
    ) if items]
    if problems:
        raise EvaluationError(format_problems(
            f"{source} is a LoRA for another architecture (it does not fit this SDXL model)", problems
        ))


def _examples(items: list[str]) -> str:
    shown = "; ".join(items[:_LISTED])
    return shown + (f"; ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def read_lora_file(path: str | os.PathLike[str], modules: dict[str, Any], taken: set[str]) -> tuple[LoraFile, Any]:
    """Read and check one LoRA file against ``modules``; returns its :class:`LoraFile` (adapter
    name not in ``taken``) and weights."""
    from furlora.lora.formats import load_lora_file

    file = Path(path).expanduser()
    if file.is_dir():
        candidates = sorted(file.glob("*.safetensors"))
        if len(candidates) != 1:
            raise EvaluationError(f"LoRA folder {file} must hold exactly one .safetensors file, found {len(candidates)}")
        file = candidates[0]
    if not file.is_file():
        raise EvaluationError(f"LoRA file {file} does not exist")
    try:
        weights = load_lora_file(file)
    except FurloraError as exc:
        raise EvaluationError(str(exc)) from None
    check_lora_fit(weights, modules, str(file))
    info = LoraFile(file, adapter_name(file, taken), weights.format, tuple(weights.components()),
                    len(weights.module_keys()))
    return info, weights


def check_lora_files(paths: list[str | os.PathLike[str]], modules: dict[str, Any],
                     taken: Iterable[str] = ()) -> list[tuple[LoraFile, Any]]:
    """Read and check every file (all problems reported together) before anything loads; returns
    each file's :class:`LoraFile` and weights (adapter names unique, and not in ``taken``)."""
    problems: list[str] = []
    checked: list[tuple[LoraFile, Any]] = []
    taken = set(taken)
    for path in paths:
        try:
            info, weights = read_lora_file(path, modules, taken)
        except FurloraError as exc:
            problems.append(str(exc))
            continue
        taken.add(info.adapter)
        checked.append((info, weights))
    if problems:
        raise EvaluationError(problems[0] if len(problems) == 1 else format_problems("bad LoRA files", problems))
    return checked


def pipeline_modules(pipeline: Any) -> dict[str, Any]:
    """Component name -> module of a pipeline (components that are None are left out)."""
    return {name: getattr(pipeline, name) for name in COMPONENTS if getattr(pipeline, name, None) is not None}


def load_loras(pipeline: Any, paths: list[str | os.PathLike[str]]) -> list[LoraFile]:
    """Check, then load each file as its own adapter (named after the file); all LoRAs start off.

    Every file goes to diffusers' loader in one form: its canonical weights re-written as a
    diffusers-format file with the real alphas in the adapter metadata. (diffusers' own kohya
    path fails on some valid files, e.g. text-encoder LoRAs without ``out_proj``.)
    """
    import tempfile

    from furlora.lora.formats import save_diffusers_lora

    checked = check_lora_files(paths, pipeline_modules(pipeline), _loaded_adapters(pipeline))  # every problem first
    with tempfile.TemporaryDirectory(prefix="furlora-lora-") as tmp:
        for info, weights in checked:
            converted = save_diffusers_lora(Path(tmp) / f"{info.adapter}.safetensors", weights)
            try:
                pipeline.load_lora_weights(str(converted), adapter_name=info.adapter, use_safetensors=True)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise EvaluationError(f"{info.path}: diffusers could not load this LoRA: {exc}") from None
            _check_loaded(pipeline, info)
            logger.info("loaded LoRA %s (%s format, %d modules, %s) as adapter %r", info.path, info.format,
                        info.modules, "+".join(info.components), info.adapter)
    if checked:
        pipeline.disable_lora()
    return [info for info, _ in checked]


def _check_loaded(pipeline: Any, info: LoraFile) -> None:
    """Every module of the file must have received the adapter (diffusers only warns on misses)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = pipeline_modules(pipeline)
    found = sum(1 for name in info.components if name in modules for m in modules[name].modules()
                if isinstance(m, BaseTunerLayer) and info.adapter in getattr(m, "lora_A", {}))
    if found != info.modules:
        raise EvaluationError(
            f"{info.path}: {info.modules} LoRA modules in the file but {found} were attached by diffusers' "
            "loader; the file's module names do not match this model"
        )


def build_variants(loras: list[LoraFile], settings: EvalSettings) -> list[Variant]:
    """The comparison columns: off (if ``include_off``), each file at each scale, and all files
    together at each scale (``combine_loras``). Without LoRA files: just the base model."""
    if not loras:
        return [OFF]
    variants = [OFF] if settings.include_off else []
    for lora in loras:
        for scale in settings.lora_scales:
            variants.append(Variant(f"{lora.adapter}@{scale:g}", {lora.adapter: float(scale)}))
    if settings.combine_loras and len(loras) > 1:
        for scale in settings.lora_scales:
            variants.append(Variant(f"all@{scale:g}", {lora.adapter: float(scale) for lora in loras}))
    return variants


def apply_variant(pipeline: Any, variant: Variant, component_scales: dict[str, float] | None = None) -> None:
    """Switch the pipeline's adapters to ``variant`` (``component_scales`` multiply per component)."""
    listed = _listed_adapters(pipeline)
    loaded = {name for names in listed.values() for name in names}
    if variant.is_off:
        if loaded:
            pipeline.disable_lora()
        return
    unknown = sorted(set(variant.scales) - loaded)
    if unknown:
        raise EvaluationError(f"variant {variant.name}: adapters {unknown} are not loaded (loaded: {sorted(loaded)})")
    names = list(variant.scales)
    if component_scales:
        # Only the components an adapter has (diffusers warns about the others).
        weights: list[Any] = [
            {c: scale * component_scales.get(c, 1.0) for c in COMPONENTS if name in listed.get(c, [])}
            for name, scale in variant.scales.items()
        ]
    else:
        weights = list(variant.scales.values())
    pipeline.enable_lora()
    pipeline.set_adapters(names, weights)


def _listed_adapters(pipeline: Any) -> dict[str, list[str]]:
    """Component -> names of the adapters loaded into it ({} when none)."""
    try:
        return dict(pipeline.get_list_adapters())
    except (ValueError, AttributeError):
        return {}


def _loaded_adapters(pipeline: Any) -> set[str]:
    return {name for names in _listed_adapters(pipeline).values() for name in names}


def unload_loras(pipeline: Any) -> None:
    """Remove every loaded LoRA adapter from the pipeline (its modules are the base model again)."""
    if _loaded_adapters(pipeline):
        pipeline.unload_lora_weights()
