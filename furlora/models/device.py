"""Where models run and in which precision: the one place furlora picks a device or a dtype.

Training, the sample grids, ``furlora compare`` / ``furlora inpaint`` and the demo's comparison
all ask :func:`pick_device` and :func:`placement`, so a GPU machine uses its GPU everywhere and
the dtype rules are the same everywhere: ``model.dtype`` for the UNet and both text encoders,
the VAE in ``model.vae_dtype`` (fp32 by default: the SDXL VAE overflows in fp16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from furlora.errors import ConfigError

#: The precision names of the config (model.dtype, model.vae_dtype, train.mixed_precision).
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Device names a user may write: auto (the accelerator when present), cpu, cuda, cuda:N, mps.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def torch_dtype(name: str, key: str = "model.dtype") -> torch.dtype:
    """The torch dtype of a precision name (fp32 / fp16 / bf16); ``key`` names the setting in errors."""
    if name not in DTYPES:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _mps_available() -> bool:
    return torch.backends.mps.is_available()


def pick_device(requested: str | torch.device | None = "auto", *, cpu_only: bool = False,
                key: str = "eval.device") -> torch.device:
    """The device to run on.

    ``auto`` / None: the CUDA GPU when one is visible, else Apple's MPS, else the CPU (what
    accelerate picks for the trainer);
    ``cpu_only`` (``train.cpu``) forces the CPU. An explicit ``cuda`` / ``cuda:N`` / ``mps``
    that this machine lacks is a :class:`ConfigError` naming ``key``, not a crash after the
    weights loaded.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = (requested or "auto").strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise ConfigError(f"{key}: {requested!r} is not a device; write auto, cpu, cuda, cuda:N or mps")
    if cpu_only or name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {requested!r} but no CUDA GPU is visible; use auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}: {requested!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                "use cuda:0 or auto"
            )
        return torch.device(name)
    if not _mps_available():
        raise ConfigError(f"{key}: 'mps' but Apple's Metal backend is not available; use auto or cpu")
    return torch.device("mps")


@dataclass(frozen=True)
class Placement:
    """Device and dtypes of one run's frozen SDXL components."""

    device: torch.device
    dtype: torch.dtype
    """UNet and both text encoders (``model.dtype``)."""
    vae_dtype: torch.dtype
    """The VAE (``model.vae_dtype``; fp32 unless set)."""


def placement(device: str | torch.device | None = "auto", dtype: str = "fp32", vae_dtype: str = "fp32", *,
              cpu_only: bool = False, device_key: str = "eval.device") -> Placement:
    """Device and dtypes by the trainer's rules (see the module docstring)."""
    return Placement(
        device=pick_device(device, cpu_only=cpu_only, key=device_key),
        dtype=torch_dtype(dtype, "model.dtype"),
        vae_dtype=torch_dtype(vae_dtype, "model.vae_dtype"),
    )


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of ``train.mixed_precision`` (None for ``no``)."""
    if mixed_precision == "no":
        return None
    return torch_dtype(mixed_precision, "train.mixed_precision")
