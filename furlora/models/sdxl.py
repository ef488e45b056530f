"""Load SDXL components from a diffusers-format folder, a cached hub id, or an embedded tiny model.

Everything is checked before any weight is read: the folder exists, every component is there
with its config and a safetensors weight file, the model is SDXL (two text encoders, text_time
conditioning, cross-attention width = the sum of both encoders' widths), and every weight file
has a readable safetensors header. Errors name the path and what was expected.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from furlora.errors import ModelLoadError, format_problems
from furlora.models.device import DTYPES  # re-exported here: the precision names live in models/device.py
from furlora.models.pretrained import PRETRAINED_MODELS, pretrained_model_path
from furlora.models.tiny import TINY_MODELS, ensure_tiny_model

logger = logging.getLogger(__name__)

#: Components a diffusers SDXL folder must have: name -> (config file, weight file stem).
REQUIRED_COMPONENTS: dict[str, tuple[str, str | None]] = {
    "unet": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "text_encoder_2": ("config.json", "model"),
    "tokenizer": ("tokenizer_config.json", None),
    "tokenizer_2": ("tokenizer_config.json", None),
    "scheduler": ("scheduler_config.json", None),
}


@dataclass
class SDXLComponents:
    """The loaded parts of an SDXL model. Frozen base weights; nothing here trains by itself."""

    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    noise_scheduler: Any
    """DDPMScheduler built from the model's scheduler config: the training noise schedule."""
    scheduler: Any
    """The model's own inference scheduler (EulerDiscreteScheduler for SDXL base)."""
    source: Path
    is_inpainting: bool
    dtype: torch.dtype

    def pipeline_components(self) -> dict[str, Any]:
        """Keyword arguments for diffusers' SDXL pipelines (``StableDiffusionXL*Pipeline(**kw)``)."""
        names = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
        return {name: getattr(self, name) for name in names}


# ----------------------------------------------------------------------------- resolving

def resolve_model_path(source: str | os.PathLike[str], revision: str | None = None, *,
                       dtype: str = "fp32", variant: str | None = None) -> Path:
    """Turn a tiny-model name, a folder, or a cached hub id into a local folder path.

    A hub id missing from the cache is downloaded (unless HF_HUB_OFFLINE), one weight set only:
    the fp16 variant when ``variant`` is fp16, or when ``variant`` is None and ``dtype`` is
    fp16 / bf16 and the repository has it; else the fp32 files (see :func:`hub_download_patterns`).
    """
    text = str(source)
    if text in TINY_MODELS:
        return ensure_tiny_model(text)
    if text in PRETRAINED_MODELS:
        return pretrained_model_path(text)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file():
            raise ModelLoadError(
                f"{path} is a single file; furlora loads diffusers-format SDXL folders (unet/, vae/, "
                "text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/, model_index.json). "
                "Convert a single-file checkpoint with diffusers' "
                "StableDiffusionXLPipeline.from_single_file(...).save_pretrained(FOLDER)."
            )
        return path
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
    if not looks_like_hub_id:
        raise ModelLoadError(
            f"model folder {path} does not exist. Give a diffusers-format SDXL folder, a hub id that is "
            f"in the local cache, or an embedded model: {', '.join([*TINY_MODELS, *PRETRAINED_MODELS])}."
        )
    return _hub_snapshot(text, revision, want_fp16=variant == "fp16" or (variant is None and dtype in ("fp16", "bf16")))


def hub_download_patterns(files: list[str], want_fp16: bool) -> list[str]:
    """The files of a diffusers SDXL repository to download: configs, tokenizers and ONE weight set.

    Per component folder: its ``*.fp16.safetensors`` files (and their shard index) when
    ``want_fp16`` and the folder has them, else its plain ``*.safetensors`` files. A hub repo
    usually holds both sets; fetching both would triple the bytes (and a second index file would
    point the loader at shards that were never fetched).
    """
    chosen = [f for f in files if f == "model_index.json"]
    folders = sorted({f.split("/", 1)[0] for f in files if f.count("/") == 1})
    for folder in folders:
        inside = [f for f in files if f.startswith(folder + "/") and f.count("/") == 1]
        half = [f for f in inside if _is_weight_file(f) and ".fp16." in f]
        full = [f for f in inside if _is_weight_file(f) and ".fp16." not in f]
        weights = half if want_fp16 and any(f.endswith(".safetensors") for f in half) else full
        if not any(f.endswith(".safetensors") for f in weights):
            weights = half  # only the fp16 set exists: take it rather than nothing
        chosen += [f for f in inside if f.endswith((".json", ".txt")) and not _is_weight_file(f)]
        chosen += weights
    return chosen


def _is_weight_file(name: str) -> bool:
    """A safetensors weight file or its shard index (``*.safetensors``, ``*.safetensors.index[.fp16].json``)."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".safetensors") or ".safetensors.index" in base


def _hub_snapshot(repo_id: str, revision: str | None, want_fp16: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        if offline:
            raise ModelLoadError(
                f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                "Download it on a machine with network access (huggingface-cli download "
                f"{repo_id}) or point model.source at a local diffusers-format folder."
            ) from None
    except Exception as exc:  # invalid repo id format and friends
        raise ModelLoadError(f"model {repo_id!r}: {exc}") from None
    try:
        from huggingface_hub import list_repo_files

        patterns = hub_download_patterns(list_repo_files(repo_id, revision=revision), want_fp16)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelLoadError(
            f"model {repo_id!r} is not available locally and could not be downloaded ({type(exc).__name__}: "
            f"{exc}). Point model.source at a local diffusers-format SDXL folder."
        ) from None


# ----------------------------------------------------------------------------- checking

def inspect_model_folder(path: Path, variant: str | None = None) -> dict[str, Any]:
    """Check a diffusers folder is a complete SDXL model, reading configs and weight headers only.

    Returns ``{"is_inpainting": bool, "variant": str | None, "unet_config": dict}``.
    Raises :class:`ModelLoadError` listing every problem found.
    """
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist or is not a folder")
    problems: list[str] = []
    index = _read_json(path / "model_index.json", problems, required=False)
    if index is not None and "text_encoder_2" not in index and "text_encoder" in index:
        raise ModelLoadError(
            f"{path} is not an SDXL model: its model_index.json lists one text encoder "
            f"({index.get('_class_name', 'unknown pipeline')}, e.g. SD 1.5/2.x). furlora needs SDXL: "
            "text_encoder (CLIP ViT-L) and text_encoder_2 (OpenCLIP bigG)."
        )
    for name, (config_name, _) in REQUIRED_COMPONENTS.items():
        if not (path / name / config_name).is_file():
            hint = ""
            if name in ("text_encoder_2", "tokenizer_2") and (path / "text_encoder").is_dir():
                hint = " (a model with one text encoder is SD 1.x/2.x, not SDXL)"
            problems.append(f"missing component {name}: expected {path / name / config_name}{hint}")
    if problems:
        raise ModelLoadError(format_problems(f"{path} is not a complete diffusers-format SDXL folder", problems))

    unet_cfg = _read_json(path / "unet" / "config.json", problems) or {}
    te1 = _read_json(path / "text_encoder" / "config.json", problems) or {}
    te2 = _read_json(path / "text_encoder_2" / "config.json", problems) or {}
    if unet_cfg.get("addition_embed_type") != "text_time":
        problems.append(
            f"{path / 'unet' / 'config.json'}: addition_embed_type is {unet_cfg.get('addition_embed_type')!r}, "
            "SDXL UNets use 'text_time'"
        )
    width = te1.get("hidden_size", 0) + te2.get("hidden_size", 0)
    if unet_cfg.get("cross_attention_dim") not in (width, [width]):
        problems.append(
            f"{path / 'unet' / 'config.json'}: cross_attention_dim {unet_cfg.get('cross_attention_dim')} != "
            f"text_encoder hidden {te1.get('hidden_size')} + text_encoder_2 hidden {te2.get('hidden_size')}"
        )
    if unet_cfg.get("in_channels") not in (4, 9):
        problems.append(
            f"{path / 'unet' / 'config.json'}: in_channels {unet_cfg.get('in_channels')}; expected 4 (base) or "
            "9 (inpainting)"
        )
    chosen_variant = variant
    for name, (_, stem) in REQUIRED_COMPONENTS.items():
        if stem is None:
            continue
        files, found_variant = _weight_files(path / name, stem, variant)
        if not files:
            pickles = sorted(p.name for p in (path / name).glob("*.bin"))
            extra = f" (found {', '.join(pickles)}: pickle files are not loaded; convert them to safetensors)" if pickles else ""
            problems.append(f"missing weights of {name}: expected {path / name / (stem + '.safetensors')}{extra}")
            continue
        chosen_variant = chosen_variant or found_variant
        for file in files:
            error = _check_safetensors(file)
            if error:
                problems.append(error)
    if problems:
        raise ModelLoadError(format_problems(f"cannot load SDXL model {path}", problems))
    return {"is_inpainting": unet_cfg.get("in_channels") == 9, "variant": chosen_variant, "unet_config": unet_cfg}


def _read_json(file: Path, problems: list[str], required: bool = True) -> dict[str, Any] | None:
    if not file.is_file():
        if required:
            problems.append(f"missing {file}")
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{file}: not valid JSON ({exc})")
        return None
    return data if isinstance(data, dict) else None


def _weight_files(folder: Path, stem: str, variant: str | None) -> tuple[list[Path], str | None]:
    """Safetensors weight files of one component (single or sharded), preferring the asked variant."""
    candidates = [variant] if variant else [None, "fp16"]
    for var in candidates:
        suffix = f".{var}" if var else ""
        single = folder / f"{stem}{suffix}.safetensors"
        if single.is_file():
            return [single], var
        index = folder / f"{stem}.safetensors.index{suffix}.json"
        if not index.is_file():
            index = folder / f"{stem}{suffix}.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError):
                return [index], var
            return [folder / s for s in shards], var
    return [], None


def _check_safetensors(file: Path) -> str | None:
    """A problem description if ``file`` is not a readable safetensors file, else None."""
    from safetensors import safe_open

    if not file.is_file():
        return f"missing weight shard {file}"
    try:
        with safe_open(str(file), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for every corruption
        return f"{file}: corrupt or truncated safetensors file ({exc}); re-download or re-save it"
    if not keys:
        return f"{file}: safetensors file holds no tensors"
    return None


# ----------------------------------------------------------------------------- loading

def load_sdxl(
    source: str | os.PathLike[str],
    dtype: str = "fp32",
    vae_dtype: str = "fp32",
    variant: str | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> SDXLComponents:
    """Load every SDXL component, frozen and in eval mode.

    ``dtype`` applies to the UNet and both text encoders; the VAE stays ``vae_dtype`` (fp32 by
    default: the SDXL VAE overflows in fp16). The 9-channel inpainting UNet is detected from its
    config (``is_inpainting``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from furlora.progress import quiet_library_bars

    quiet_library_bars()  # a log gets no "Loading weights" carriage-return bars
    for key, value in (("model.dtype", dtype), ("model.vae_dtype", vae_dtype)):
        if value not in DTYPES:
            raise ModelLoadError(f"{key} {value!r} is not one of {', '.join(DTYPES)}")
    path = resolve_model_path(source, revision, dtype=dtype, variant=variant)
    info = inspect_model_folder(path, variant)
    var = info["variant"]
    torch_dtype, vae_torch_dtype = DTYPES[dtype], DTYPES[vae_dtype]
    common = {"use_safetensors": True, "variant": var}
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=torch_dtype, **common)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=vae_torch_dtype, **common)
        te1 = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=torch_dtype, **common)
        te2 = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2", dtype=torch_dtype, **common)
        tok1 = CLIPTokenizer.from_pretrained(path / "tokenizer")
        tok2 = CLIPTokenizer.from_pretrained(path / "tokenizer_2")
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        scheduler = _inference_scheduler(scheduler_config)
        noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"cannot load SDXL model {path}: {type(exc).__name__}: {exc}") from None
    for module in (unet, vae, te1, te2):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    logger.info("loaded SDXL %s from %s (%s-channel UNet, weights %s, VAE %s)",
                "inpainting" if info["is_inpainting"] else "base", path, unet.config.in_channels, dtype, vae_dtype)
    return SDXLComponents(
        unet=unet, vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
        noise_scheduler=noise_scheduler, scheduler=scheduler, source=path,
        is_inpainting=info["is_inpainting"], dtype=torch_dtype,
    )


def _inference_scheduler(config: dict[str, Any]) -> Any:
    import diffusers

    cls = getattr(diffusers, str(config.get("_class_name", "EulerDiscreteScheduler")), None) or diffusers.EulerDiscreteScheduler
    return cls.from_config(config)
