"""Content-keyed caches for VAE latents, masked-image latents and text-encoder outputs.

A cache entry's key is the sha256 of a JSON document ("key parts") that holds the sha256 of every
input file (image, masks, caption source) and every setting and per-sample parameter that
changes the result (resolution, crop, flip, mask settings ...), plus whatever the caller adds
(a fingerprint of the VAE or text encoders). Editing a file or changing a setting therefore
changes the key: a stale entry is never served, it is simply not found.

Entries are safetensors files written atomically (temporary file, then rename), so a crash never
leaves a half-written entry under a valid name. The key parts and a sha256 of the tensors' bytes
are stored in the file's metadata and checked on read, so neither a hash collision nor a damaged
file (bit rot, a copy cut short) can return wrong tensors: such an entry is recomputed.

The dataset builds key parts (a sample's ``cache_keys``); the
trainer adds its model fingerprint and calls :meth:`LatentCache.get_or_compute` with a function
that runs its encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from furlora.atomic import atomic_file

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$FURLORA_CACHE/data``, else ``~/.cache/furlora/data``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("FURLORA_CACHE") or Path.home() / ".cache" / "furlora") / "data"


def run_cache_dir(cache_dir: str | Path | None, output_dir: str | Path) -> Path:
    """The latent cache folder of a run: ``data.cache_dir`` if set, else ``<output_dir>/cache``."""
    return Path(cache_dir) if cache_dir is not None else Path(output_dir) / "cache"


def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a dict of CPU tensors (sorted by name)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size, mtime and inode)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _DIGESTS[memo] = digest
    return digest


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def canonical_json(parts: Mapping[str, Any]) -> str:
    """Deterministic JSON of key parts (sorted keys; tuples become lists; paths become strings)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)


def make_key(parts: Mapping[str, Any]) -> str:
    """The cache key of ``parts``: sha256 hex of their canonical JSON."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


class LatentCache:
    """A folder of safetensors entries, one per key (``<dir>/<namespace>/<k[:2]>/<k>.safetensors``)."""

    def __init__(self, directory: str | Path, namespace: str = "latents") -> None:
        self.root = Path(directory) / namespace
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key_parts: Mapping[str, Any]) -> Any | None:
        """The stored value for ``key_parts`` (a tensor or a dict of tensors, as stored), or None.

        A missing, unreadable or not-matching entry is None (and is recomputed by the caller).
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.path_for(make_key(key_parts))
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("key_parts") != canonical_json(key_parts) or meta.get("format") != str(CACHE_FORMAT):
                logger.warning("cache entry %s does not match its key parts; recomputing", path)
                return None
            tensors = load_file(str(path))
            if meta.get("sha256") != tensors_digest(tensors):
                logger.warning("cache entry %s fails its checksum (damaged file); recomputing", path)
                return None
        except Exception as exc:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
            logger.warning("cache entry %s is unreadable (%s); recomputing", path, exc)
            return None
        return tensors["value"] if meta.get("single") == "1" else tensors

    def put(self, key_parts: Mapping[str, Any], value: Any) -> Path:
        """Store ``value`` (a tensor, or a dict name -> tensor) for ``key_parts`` atomically; returns the file."""
        from safetensors.torch import save_file

        single = not isinstance(value, Mapping)
        tensors = {"value": value} if single else value
        path = self.path_for(make_key(key_parts))
        data = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        metadata = {
            "format": str(CACHE_FORMAT),
            "key_parts": canonical_json(key_parts),
            "single": "1" if single else "0",
            "sha256": tensors_digest(data),
        }
        with atomic_file(path) as tmp:  # the umask's mode, not mkstemp's 0600 (a shared cache folder)
            save_file(data, str(tmp), metadata=metadata)
        return path

    def get_or_compute(self, key_parts: Mapping[str, Any], compute_fn: Callable[[], Any]) -> Any:
        """Return the cached value for ``key_parts`` or compute, store and return it.

        ``compute_fn()`` returns a tensor or a dict of tensors; the same kind comes back on a hit.
        """
        found = self.get(key_parts)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        value = compute_fn()
        self.put(key_parts, value)
        return value

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.safetensors")) if self.root.exists() else 0
