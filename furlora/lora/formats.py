"""LoRA files: the diffusers format and the kohya format, written and read with their real alphas.

* diffusers: peft keys prefixed by component (see furlora.lora.weights), plus the
  ``lora_adapter_metadata`` header entry (each component's LoraConfig: rank, alpha, target
  modules) that ``StableDiffusionXLPipeline.load_lora_weights()`` reads; without it the loader
  assumes alpha = rank and the LoRA loads at the wrong strength.
* kohya (ComfyUI, A1111, Forge): ``lora_unet_...`` keys in SDXL's original block naming,
  ``lora_te1_text_model_...`` / ``lora_te2_text_model_...``, ``lora_down`` / ``lora_up`` weights
  and a ``.alpha`` scalar per module holding the real alpha, and ``ss_base_model_version`` =
  ``sdxl_base_v1-0`` so A1111 lists the file as an SDXL LoRA.

Only safetensors are read or written; nothing is ever unpickled. Files are written to a
temporary name and renamed into place, so a crash never leaves half a file under the real name.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from furlora.atomic import atomic_file
from furlora.errors import LoraFormatError, format_problems, listed
from furlora.lora.kohya_names import KOHYA_PREFIX, check_sdxl_module, kohya_module_name, parse_kohya_module_name
from furlora.lora.settings import SaveFormat
from furlora.lora.weights import LoraWeights, split_key
from furlora.models.device import DTYPES

logger = logging.getLogger(__name__)

ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # the header entry diffusers' loader reads
SDXL_BASE_VERSION = "sdxl_base_v1-0"
FORMAT_VERSION = "1"


# ----------------------------------------------------------------------------- writing

def _header(weights: LoraWeights, metadata: dict[str, Any] | None, fmt: SaveFormat) -> dict[str, str]:
    """Metadata common to both formats; ``metadata`` (training info) overrides the defaults, not ``fmt``."""
    summary = weights.summary()
    header = {
        "ss_base_model_version": SDXL_BASE_VERSION,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "furlora.format_version": FORMAT_VERSION,
        "furlora.components": json.dumps(summary["components"], sort_keys=True),
    }
    for key, value in (metadata or {}).items():
        header[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    header["furlora.lora_format"] = fmt
    return header


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoraFormatError(f"{path}: LoRA files are written as safetensors; give a name ending in .safetensors")
    with atomic_file(path) as tmp:  # published with the umask's mode: ComfyUI may run as another user
        save_file(tensors, str(tmp), metadata=header)
    return path


def _prepare(weights: LoraWeights, dtype: str | torch.dtype | None) -> LoraWeights:
    bad = weights.nonfinite_keys()
    if bad:
        raise LoraFormatError(f"refusing to save LoRA weights with NaN/inf values in {len(bad)} tensors: {listed(bad)}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise LoraFormatError(f"save dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    return weights.to(dtype or torch.float32)


def adapter_metadata(weights: LoraWeights, component: str) -> dict[str, Any]:
    """The peft LoraConfig (as a JSON-able dict) that diffusers' loader rebuilds for ``component``.

    Target modules are exact module names; text-encoder names leave out ``text_model.`` so they
    match both transformers layouts (peft matches names by dotted suffix). Modules whose rank or
    alpha differ from the most common one go to rank_pattern / alpha_pattern.
    """
    from peft import LoraConfig

    keys = weights.module_keys(component)
    names = {k: k.split(".", 1)[1].removeprefix("text_model.") for k in keys}
    ranks = {names[k]: weights.rank(k) for k in keys}
    alphas = {names[k]: weights.alpha(k) for k in keys}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=sorted(names.values()),
        rank_pattern={n: v for n, v in ranks.items() if v != r},
        alpha_pattern={n: v for n, v in alphas.items() if v != alpha},
        use_dora=weights.uses_dora(component),
        init_lora_weights=True,
    )
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def save_diffusers_lora(path: str | Path, weights: LoraWeights, metadata: dict[str, Any] | None = None,
                        dtype: str | torch.dtype | None = None) -> Path:
    """Write a diffusers-format LoRA file that ``pipeline.load_lora_weights()`` loads at the trained strength."""
    weights = _prepare(weights, dtype)
    unknown = [k for k in weights.tensors if split_key(k) is None]
    if unknown:
        raise LoraFormatError(f"cannot save non-LoRA keys: {listed(unknown)}")
    config = {f"{c}.{key}": value for c in weights.components() for key, value in adapter_metadata(weights, c).items()}
    header = {"format": "pt", ADAPTER_METADATA_KEY: json.dumps(config, indent=2, sort_keys=True, default=str)}
    header.update(_header(weights, metadata, "diffusers"))
    return _write_atomic(Path(path), weights.tensors, header)


def save_kohya_lora(path: str | Path, weights: LoraWeights, metadata: dict[str, Any] | None = None,
                    dtype: str | torch.dtype | None = None, layers_per_block: int = 2) -> Path:
    """Write a kohya-format LoRA file (ComfyUI / A1111 / Forge) with a real ``.alpha`` per module."""
    weights = _prepare(weights, dtype)
    if weights.uses_dora():
        raise LoraFormatError(
            "DoRA weights cannot be written in the kohya format (its DoRA layout differs between "
            "loaders); save them in the diffusers format instead"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key in weights.module_keys():
        component, module = key.split(".", 1)
        stem = kohya_module_name(component, module, layers_per_block)
        down = weights.tensors[f"{key}.lora_A.weight"]
        tensors[f"{stem}.lora_down.weight"] = down
        tensors[f"{stem}.lora_up.weight"] = weights.tensors[f"{key}.lora_B.weight"]
        tensors[f"{stem}.alpha"] = torch.tensor(weights.alpha(key), dtype=down.dtype)
    main = "unet" if "unet" in weights.components() else weights.components()[0]
    first = weights.module_keys(main)[0]
    header = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(weights.rank(first)),
        "ss_network_alpha": f"{weights.alpha(first):g}",
        "ss_v2": "False",
        "ss_training_comment": "trained with furlora",
    }
    convs = [k for k in weights.module_keys() if weights.tensors[f"{k}.lora_A.weight"].ndim == 4]
    if convs:
        conv = convs[0]
        header["ss_network_args"] = json.dumps({"conv_dim": str(weights.rank(conv)), "conv_alpha": f"{weights.alpha(conv):g}"})
    header.update(_header(weights, metadata, "kohya"))
    return _write_atomic(Path(path), tensors, header)


def save_lora_file(path: str | Path, weights: LoraWeights, format: SaveFormat = "diffusers",
                   metadata: dict[str, Any] | None = None, dtype: str | torch.dtype | None = None,
                   layers_per_block: int = 2) -> Path:
    """Write ``weights`` in ``format`` (diffusers or kohya)."""
    if format == "diffusers":
        return save_diffusers_lora(path, weights, metadata, dtype)
    if format == "kohya":
        return save_kohya_lora(path, weights, metadata, dtype, layers_per_block)
    raise LoraFormatError(f"unknown LoRA file format {format!r}; use diffusers or kohya")


# ----------------------------------------------------------------------------- reading

def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and header metadata of a safetensors file; anything else is a LoraFormatError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LoraFormatError(f"LoRA file {path} does not exist")
    with path.open("rb") as fh:
        head = fh.read(8)
    # A safetensors file starts with its header length, so these bytes only hint at what a file
    # that failed to parse is; the parse itself never runs pickle code.
    looks_pickled = head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"
    refuse = (f"{path}: {{}}. furlora reads LoRA weights only from safetensors files and never unpickles "
              "(a pickle can run code); convert it with a tool you trust, or ask for a .safetensors file")
    if path.suffix != ".safetensors":
        raise LoraFormatError(refuse.format("a pickle / PyTorch checkpoint" if looks_pickled else "not a .safetensors file"))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        if looks_pickled:
            raise LoraFormatError(refuse.format("a pickle / PyTorch checkpoint named .safetensors")) from None
        raise LoraFormatError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return tensors, metadata


def detect_format(tensors: dict[str, torch.Tensor]) -> str | None:
    """``kohya`` when every key starts with lora_unet_/lora_te1_/lora_te2_, ``diffusers`` when every key
    starts with a component name, else None."""
    keys = list(tensors)
    if keys and all(k.startswith(tuple(KOHYA_PREFIX.values())) for k in keys):
        return "kohya"
    if keys and all(k.split(".", 1)[0] in KOHYA_PREFIX for k in keys):
        return "diffusers"
    return None


def load_lora_file(path: str | Path, layers_per_block: int = 2) -> LoraWeights:
    """Read a diffusers- or kohya-format SDXL LoRA file into canonical :class:`LoraWeights`.

    Raises :class:`LoraFormatError` naming the keys and the reason for: a non-safetensors file,
    keys of neither format, modules missing their down/up half, inconsistent shapes, NaN / inf
    values, and DoRA in a kohya file.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    fmt = detect_format(tensors)
    if fmt is None:
        prefixes = Counter(k.split(".", 1)[0].split("_")[0] for k in tensors)
        raise LoraFormatError(
            f"{path}: not an SDXL LoRA file in diffusers or kohya format (keys must all start with "
            f"unet./text_encoder./text_encoder_2. or lora_unet_/lora_te1_/lora_te2_; found key prefixes "
            f"{dict(prefixes.most_common(5))}, e.g. {listed(sorted(tensors)[:3])})"
        )
    weights = (_from_kohya if fmt == "kohya" else _from_diffusers)(path, tensors, metadata, layers_per_block)
    problems = check_consistency(weights)
    if problems:
        raise LoraFormatError(format_problems(f"{path}: invalid LoRA file", problems))
    return weights


def _from_diffusers(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                    layers_per_block: int) -> LoraWeights:
    canonical: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in tensors.items():
        component, _, rest = key.partition(".")
        if component != "unet" and not rest.startswith(("text_model.", "text_projection")):
            rest = "text_model." + rest  # transformers-5 CLIPTextModel keys lack the level; restore it
        new = f"{component}.{rest}"
        parts = split_key(new)
        if parts is None:
            unknown.append(f"{key} (not a LoRA tensor name)")
            continue
        try:
            check_sdxl_module(parts[0], parts[1], layers_per_block)
        except ValueError as exc:
            unknown.append(f"{key} ({exc})")
        canonical[new] = value
    if unknown:
        raise LoraFormatError(
            f"{path}: {len(unknown)} unknown keys (a diffusers LoRA key is <component>.<SDXL module>.lora_A.weight, "
            f".lora_B.weight or .lora_magnitude_vector): {listed(sorted(unknown))}"
        )
    weights = LoraWeights(canonical, {}, metadata, "diffusers")
    config = _adapter_config(path, metadata)
    for component in weights.components():
        if not any(k.startswith(component + ".") for k in config):
            weights.alpha_recorded = False
            logger.warning("%s: no alpha recorded for %s; using alpha = rank as diffusers does", path, component)
        for key in weights.module_keys(component):
            weights.alphas[key] = _alpha_from_config(config, component, key.split(".", 1)[1], weights.rank(key))
    return weights


def _adapter_config(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LoraFormatError(f"{path}: header entry {ADAPTER_METADATA_KEY} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise LoraFormatError(f"{path}: header entry {ADAPTER_METADATA_KEY} must be a JSON object")
    return config


def _alpha_from_config(config: dict[str, Any], component: str, module: str, rank: int) -> float:
    """Alpha of one module under peft's rules: an alpha_pattern entry matching the name's dotted
    suffix wins over lora_alpha; no config at all means alpha = rank."""
    if f"{component}.lora_alpha" not in config:
        return float(rank)
    target = module.removeprefix("text_model.")  # as adapter_metadata names the targets
    for pattern, value in (config.get(f"{component}.alpha_pattern") or {}).items():
        if target == pattern or target.endswith("." + pattern):
            return float(value)
    return float(config[f"{component}.lora_alpha"])


def _from_kohya(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                layers_per_block: int) -> LoraWeights:
    canonical: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    problems: list[str] = []
    stems: dict[str, str] = {}
    for key in sorted(tensors):
        stem, _, kind = key.partition(".")
        if kind == "dora_scale":
            problems.append(f"{key}: DoRA kohya files are not supported (dora_scale)")
            continue
        if kind not in ("lora_down.weight", "lora_up.weight", "alpha"):
            problems.append(f"{key}: unknown kohya key (expected <module>.lora_down.weight, .lora_up.weight or .alpha)")
            continue
        if stem not in stems:
            try:
                component, module = parse_kohya_module_name(stem, layers_per_block)
            except ValueError as exc:
                problems.append(f"{key}: unknown SDXL module ({exc})")
                stems[stem] = ""
                continue
            stems[stem] = f"{component}.{module}"
        module_key = stems[stem]
        if not module_key:
            continue
        if kind == "alpha":
            if tensors[key].numel() != 1:
                problems.append(f"{key}: alpha must be a single number, got shape {tuple(tensors[key].shape)}")
                continue
            alphas[module_key] = float(tensors[key].float().reshape(()))
        else:
            suffix = ".lora_A.weight" if kind == "lora_down.weight" else ".lora_B.weight"
            canonical[module_key + suffix] = tensors[key]
    if problems:
        raise LoraFormatError(format_problems(f"{path}: invalid kohya LoRA file", problems))
    weights = LoraWeights(canonical, {}, metadata, "kohya")
    missing_alpha = [k for k in weights.module_keys() if k not in alphas]
    weights.alphas.update({k: alphas.get(k, float(weights.rank(k))) for k in weights.module_keys()})
    nonfinite_alpha = [k for k, v in weights.alphas.items() if not math.isfinite(v)]
    if nonfinite_alpha:
        raise LoraFormatError(f"{path}: NaN/inf alpha for {listed(nonfinite_alpha)}")
    if missing_alpha:
        weights.alpha_recorded = False
        logger.warning("%s: %d modules have no .alpha; using alpha = rank (kohya's rule)", path, len(missing_alpha))
    return weights


def check_consistency(weights: LoraWeights) -> list[str]:
    """File-level checks (no model needed): complete down/up pairs, matching ranks, sane dims, finite values."""
    problems: list[str] = []
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.tensors.items():
        component, module, suffix = split_key(key)  # type: ignore[misc]  # keys were validated
        modules.setdefault(f"{component}.{module}", {})[suffix] = value
    for module, parts in sorted(modules.items()):
        a, b = parts.get(".lora_A.weight"), parts.get(".lora_B.weight")
        if a is None or b is None:
            problems.append(f"{module}: has {'lora_B' if a is None else 'lora_A'} but no "
                            f"{'lora_A (down)' if a is None else 'lora_B (up)'} weight")
            continue
        if a.ndim not in (2, 4) or b.ndim != a.ndim or (a.ndim == 4 and tuple(b.shape[2:]) != (1, 1)):
            problems.append(f"{module}: unexpected shapes down {tuple(a.shape)} / up {tuple(b.shape)} "
                            "(Linear: [r, in] / [out, r]; Conv2d: [r, in, kh, kw] / [out, r, 1, 1])")
        elif a.shape[0] != b.shape[1]:
            problems.append(f"{module}: rank mismatch, down has rank {a.shape[0]} but up has {b.shape[1]}")
    bad = weights.nonfinite_keys()
    if bad:
        problems.append(f"NaN/inf values in {len(bad)} tensors: {listed(bad)}")
    return problems
