"""Pretrained tiny SDXL-architecture models shipped with furlora.

``tiny-sdxl-inpaint-pretrained`` (9-channel inpainting UNet) and ``tiny-sdxl-pretrained``
(4-channel UNet) have exactly the architecture of the embedded random ``tiny-sdxl`` models,
pretrained on a procedural corpus (see ``pretrained/README.md`` and ``python -m
furlora.pretrain``). They make demo pictures and before/after numbers meaningful; the random
tiny models stay for fast tests.

The files live in the package under ``pretrained/``. The inpainting folder is complete; the
base folder stores only its 4-channel input convolution and configs, and shares everything
else (UNet body, VAE, text encoders, tokenizers, scheduler) with the inpainting folder, which
keeps the committed weights small. :func:`pretrained_model_path` checks every file against the
recorded sha256 manifest and, for the base model, assembles a complete diffusers folder once
in the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from furlora.errors import ModelLoadError
from furlora.models.cache_folder import model_folder, publish_folder

logger = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MANIFEST_FILE = PRETRAINED_DIR / "manifest.json"

#: name -> the model's folder inside the package.
PRETRAINED_MODELS: dict[str, Path] = {
    "tiny-sdxl-pretrained": PRETRAINED_DIR / "tiny-sdxl-pretrained",
    "tiny-sdxl-inpaint-pretrained": PRETRAINED_DIR / "tiny-sdxl-inpaint-pretrained",
}

_SHARED_COMPONENTS = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")

# Verified files, keyed by (path, size, mtime): hashing is skipped while a file is unchanged.
_verified: set[tuple[str, int, int]] = set()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(root: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """The recorded manifest: ``{"models": {name: {...}}, "files": {relpath: {"sha256", "bytes"}}}``."""
    file = root / "manifest.json"
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the pretrained-model manifest {file} ({exc}); reinstall furlora"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelLoadError(f"{file} has no 'files' table; reinstall furlora")
    return manifest


def verify_pretrained_files(name: str, root: Path = PRETRAINED_DIR) -> list[Path]:
    """Check every file the model ``name`` needs against the manifest's size and sha256.

    Returns the checked files. Raises :class:`ModelLoadError` naming each missing or altered
    file with its expected and actual hash.
    """
    manifest = read_manifest(root)
    entry = manifest.get("models", {}).get(name)
    if entry is None:
        raise ModelLoadError(f"{root / 'manifest.json'} records no model {name!r}")
    folders = [entry["folder"]] + ([entry["shares_from"]] if entry.get("shares_from") else [])
    problems: list[str] = []
    checked: list[Path] = []
    for rel, record in sorted(manifest["files"].items()):
        if rel.split("/", 1)[0] not in folders:
            continue
        path = root / rel
        checked.append(path)
        if not path.is_file():
            problems.append(f"{path}: missing (expected sha256 {record['sha256']})")
            continue
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            continue
        actual = sha256_file(path)
        if actual != record["sha256"]:
            problems.append(f"{path}: sha256 {actual} does not match the recorded {record['sha256']}")
            continue
        _verified.add(key)
    if problems:
        raise ModelLoadError(
            f"pretrained model {name!r} failed its integrity check:\n  - " + "\n  - ".join(problems)
            + "\nThe files were altered or damaged: reinstall furlora (or restore the files from git)."
        )
    return checked


def pretrained_model_path(name: str, cache_dir: str | Path | None = None, root: Path = PRETRAINED_DIR) -> Path:
    """A complete diffusers-format folder of the pretrained model ``name``, after a hash check.

    The inpainting model is returned in place. The base model is assembled once into
    ``<cache>/models/<name>-<manifest hash>`` (``cache_dir`` or furlora's cache directory) from
    its own files and the components it shares with the inpainting model.
    """
    if name not in PRETRAINED_MODELS:
        raise ModelLoadError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED_MODELS)}")
    verify_pretrained_files(name, root)
    manifest = read_manifest(root)
    entry = manifest["models"][name]
    folder = root / entry["folder"]
    if not entry.get("shares_from"):
        return folder
    target = model_folder(name, manifest["files"], cache_dir)
    if (target / "model_index.json").is_file():
        return target
    publish_folder(target, lambda tmp: _assemble(folder, root / entry["shares_from"], tmp))
    logger.info("assembled pretrained model %s at %s", name, target)
    return target


def _assemble(own: Path, shared: Path, dest: Path) -> None:
    """Write a complete folder: shared components + the UNet body with this model's conv_in."""
    from safetensors.torch import load_file, save_file

    for component in _SHARED_COMPONENTS:
        shutil.copytree(shared / component, dest / component)
    (dest / "unet").mkdir()
    shutil.copy2(own / "model_index.json", dest / "model_index.json")
    shutil.copy2(own / "unet" / "config.json", dest / "unet" / "config.json")
    weights = load_file(str(shared / "unet" / "diffusion_pytorch_model.safetensors"))
    conv_in = load_file(str(own / "unet" / "conv_in.safetensors"))
    if set(conv_in) != {"conv_in.weight", "conv_in.bias"}:
        raise ModelLoadError(f"{own / 'unet' / 'conv_in.safetensors'} must hold conv_in.weight and conv_in.bias")
    weights.update(conv_in)
    save_file(weights, str(dest / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
