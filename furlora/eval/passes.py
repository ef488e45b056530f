"""The seed each inpainting pass (and tile) draws from, and helpers over pass lists.

The settings of a pass (:class:`~furlora.eval.settings.PassSettings`) live in
``furlora/eval/settings.py`` with the rest of the ``eval:`` section (settings modules are leaves).
A run is a list of passes; each starts from the previous pass's result.
"""

from __future__ import annotations

import numpy as np

from furlora.eval.settings import PassSettings


def derive_seed(seed: int, pass_index: int, tile_index: int = 0) -> int:
    """A 63-bit seed for (run seed, pass, tile): independent streams, stable across versions.

    numpy's SeedSequence hashes the triple, so neighbouring seeds give unrelated noise.
    """
    state = np.random.SeedSequence([int(seed), int(pass_index), int(tile_index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def pass_seed(pass_settings: PassSettings, run_seed: int, pass_index: int, tile_index: int = 0) -> int:
    """The seed a pass (and tile) uses: its explicit seed (offset per tile) or a derived one."""
    if pass_settings.seed is not None:
        return pass_settings.seed if tile_index == 0 else derive_seed(pass_settings.seed, 0, tile_index)
    return derive_seed(run_seed, pass_index, tile_index)


def total_denoising_steps(passes: list[PassSettings]) -> int:
    """Denoising steps of the whole run (sum over passes of int(steps * strength))."""
    return sum(p.denoising_steps for p in passes)
