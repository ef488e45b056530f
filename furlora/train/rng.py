"""Random generators derived from (seed, global step, rank, stream): exact resume by construction.

Every random draw of a training step (noise, timesteps, full-mask choice, LoRA
dropout through the global generator) comes from a generator whose seed is a hash of
``(seed, global_step, rank, micro_step, stream)``. A resumed run therefore draws exactly the
same numbers for step N as an uninterrupted run, whatever happened before; nothing depends on
how many draws earlier steps made. The global RNG states are still saved in checkpoints
(:func:`capture_rng_state`) so code outside furlora that uses them resumes too.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from a master seed and any keys (stable across runs, machines and Python versions)."""
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, global_step: int, rank: int, stream: str, micro_step: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` for one stream of one (micro-)step of one process.

    Draw on the CPU and move the result to the device: CPU and CUDA generators give different
    numbers for the same seed, and this keeps runs comparable across devices.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(seed, "step", global_step, "rank", rank, "micro", micro_step, stream))
    return generator


def seed_global_rngs(seed: int, global_step: int, rank: int) -> None:
    """Seed torch's, Python's and (if present) numpy's global generators for one step.

    Anything that draws from global state during the step (peft's LoRA dropout, dropout layers)
    becomes a function of (seed, step, rank).
    """
    value = derive_seed(seed, "global", global_step, rank)
    torch.manual_seed(value)
    random.seed(value)
    import numpy as np

    np.random.seed(value % (2**32))


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as a dict that ``torch.load(weights_only=True)`` can read back."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
