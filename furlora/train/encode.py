"""VAE and text encoding of training batches, with caches in memory and on disk.

Latents are the VAE posterior *mean* times the scaling factor: deterministic, so caching them
changes nothing numerically (an entry read from disk is bit-identical to a fresh encode). A
latent is keyed by the dataset's key parts (content hashes of the files, resolution, crop, flip,
hole) plus a fingerprint of the VAE's weights, so a changed image, mask or VAE misses exactly the
entries it affects; without key parts a hash of the pixel content is the key. With
``cache_dir`` the latents go to a :class:`~furlora.data.cache.LatentCache` on disk (shared by runs
and by ``furlora cache``), with a bounded in-memory layer in front. Text embeddings are cached per
caption in memory, only when no text encoder trains. ``vae_encodes`` counts every VAE call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from furlora.data.cache import LatentCache, make_key
from furlora.models.conditioning import encode_tokens, tokenize

logger = logging.getLogger(__name__)


class TensorLRU:
    """A bounded map from content keys to CPU tensors (least recently used entries go first)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        size = _nbytes(value)
        if key in self._items or size > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= _nbytes(old)

    def __len__(self) -> int:
        return len(self._items)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's class, config and every parameter / buffer (names, dtypes, bytes)."""
    digest = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def content_key(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.uint8 else t.numpy().tobytes())
    return digest.hexdigest()


class BatchEncoder:
    """Encodes pixels to latents and captions to SDXL text conditioning.

    ``components``: an :class:`~furlora.models.sdxl.SDXLComponents` (vae, text encoders,
    tokenizers). ``cache_latents`` / ``cache_text``: keep results in memory (bounded).
    ``cache_dir``: also keep latents on disk there (entries keyed by key parts + VAE fingerprint).
    """

    def __init__(self, components: Any, device: torch.device, cache_latents: bool = True, cache_text: bool = True,
                 max_cache_bytes: int = 1 << 30, cache_dir: Any | None = None) -> None:
        self.components = components
        self.device = device
        self.latent_cache = TensorLRU(max_cache_bytes) if cache_latents else None
        self.store = LatentCache(cache_dir, "latents") if (cache_latents and cache_dir is not None) else None
        self.vae_encodes = 0
        self._vae_fingerprint: str | None = None
        self.text_cache = TensorLRU(max_cache_bytes // 4) if cache_text else None
        vae_config = components.vae.config
        self.scaling_factor = float(vae_config.scaling_factor)
        self.shift_factor = getattr(vae_config, "shift_factor", None)
        self.vae_scale = 2 ** (len(vae_config.block_out_channels) - 1)
        self.latent_channels = int(vae_config.latent_channels)

    @property
    def vae_fingerprint(self) -> str:
        """Fingerprint of the VAE weights and config (computed once; part of every latent key)."""
        if self._vae_fingerprint is None:
            self._vae_fingerprint = module_fingerprint(self.components.vae)[:32]
        return self._vae_fingerprint

    def full_parts(self, parts: dict[str, Any]) -> dict[str, Any]:
        """A dataset's key parts plus what the encoder adds (VAE fingerprint and dtype, scaling)."""
        vae = self.components.vae
        return {**parts, "vae": self.vae_fingerprint, "vae_dtype": str(vae.dtype), "scale": [self.scaling_factor, self.shift_factor]}

    def cached(self, parts: dict[str, Any]) -> torch.Tensor | None:
        """The cached latent of ``parts`` (memory, then disk), or None."""
        full = self.full_parts(parts)
        key = make_key(full)
        value = self.latent_cache.get(key) if self.latent_cache is not None else None
        if value is None and self.store is not None:
            value = self.store.get(full)
            if value is not None and self.latent_cache is not None:
                self.latent_cache.put(key, value)
        return value

    def encode_one(self, pixels: torch.Tensor) -> torch.Tensor:
        """One image [3, H, W] in [-1, 1] -> its float32 [4, h, w] scaled latent (a VAE call)."""
        vae = self.components.vae
        self.vae_encodes += 1
        z = vae.encode(pixels[None].to(self.device, dtype=vae.dtype)).latent_dist.mean
        if self.shift_factor is not None:
            z = z - self.shift_factor
        return (z * self.scaling_factor).float()[0]

    def store_latent(self, parts: dict[str, Any], value: torch.Tensor) -> None:
        full = self.full_parts(parts)
        cpu = value.detach().to("cpu")
        if self.latent_cache is not None:
            self.latent_cache.put(make_key(full), cpu)
        if self.store is not None:
            self.store.put(full, cpu)

    def latent_shape(self, pixel_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """[B, 3, H, W] pixels -> the [B, C, H/8, W/8] latent shape."""
        b, _, h, w = pixel_shape
        return (int(b), self.latent_channels, int(h) // self.vae_scale, int(w) // self.vae_scale)

    @torch.no_grad()
    def latents(
        self, pixels: torch.Tensor, cache: bool = True, keys: Sequence[str | dict[str, Any] | None] | None = None
    ) -> torch.Tensor:
        """float [B, 3, H, W] in [-1, 1] -> float32 [B, 4, H/8, W/8] scaled latents (on ``device``).

        ``keys``: per-sample cache keys (None = do not cache that sample): the dataset's key-parts
        dicts (memory and disk cache) or strings (memory only); without them a hash of the
        pixels is the key (memory only).
        """
        out: list[torch.Tensor | None] = [None] * pixels.shape[0]
        use_cache = cache and self.latent_cache is not None
        if keys is None:
            keys = [content_key(pixels[i]) for i in range(pixels.shape[0])] if use_cache else [None] * pixels.shape[0]
        if use_cache:
            for i, key in enumerate(keys):
                if isinstance(key, dict):
                    out[i] = self.cached(key)
                elif key is not None:
                    out[i] = self.latent_cache.get(key)
        for i, value in enumerate(out):
            if value is not None:
                continue
            # One image at a time: CPU kernels may round differently for other batch sizes, and a
            # resumed run (empty cache) must get the very same latents as the uninterrupted one.
            z = self.encode_one(pixels[i])
            out[i] = z
            if use_cache and isinstance(keys[i], dict):
                self.store_latent(keys[i], z)
            elif use_cache and keys[i] is not None:
                self.latent_cache.put(keys[i], z.detach().to("cpu"))
        return torch.stack([t.to(self.device) for t in out])

    def text(self, captions: Sequence[str], trainable: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (prompt_embeds [B, 77, D1+D2], pooled [B, P]) in the encoders' dtype on ``device``.

        ``trainable``: a text encoder has LoRA; gradients flow and nothing is cached. Cached
        captions are encoded one at a time, so a cache hit equals what an empty cache computes.
        """
        if trainable or self.text_cache is None:
            with torch.enable_grad() if trainable else torch.no_grad():
                return self._encode_text(captions)
        results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        missing = []
        for caption in dict.fromkeys(captions):
            hit = self.text_cache.get(caption)
            if hit is None:
                missing.append(caption)
            else:
                results[caption] = hit
        for caption in missing:
            with torch.no_grad():
                embeds, pooled = self._encode_text([caption])
                pair = (embeds[0].detach().to("cpu"), pooled[0].detach().to("cpu"))
                self.text_cache.put(caption, pair)
                results[caption] = pair
        embeds = torch.stack([results[c][0] for c in captions]).to(self.device)
        pooled = torch.stack([results[c][1] for c in captions]).to(self.device)
        return embeds, pooled

    def _encode_text(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.components
        return encode_tokens(c.text_encoder, c.text_encoder_2, tokenize(c.tokenizer, captions), tokenize(c.tokenizer_2, captions))
