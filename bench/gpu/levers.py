"""Standard PyTorch speed levers for training on Hopper GPUs (no custom kernels).

- TF32 for fp32 matmuls and convolutions: the VAE runs in fp32 (it overflows in fp16/bf16), and
  on Hopper TF32 tensor cores run those convolutions several times faster than plain fp32.
- SDPA backend: which fused attention kernels ``F.scaled_dot_product_attention`` may pick
  (``auto`` leaves PyTorch's own choice; the others restrict it, to compare).
- channels_last for the UNet and VAE convolutions (cuDNN's preferred layout for bf16 on Hopper).
- ``torch.compile`` of the UNet, optional: its compile time is reported separately.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

SDPA_CHOICES = ("auto", "flash", "efficient", "cudnn", "math")


@dataclass(frozen=True)
class Levers:
    tf32: bool
    sdpa: str
    channels_last: bool
    compile: bool

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def apply_global(levers: Levers, device: torch.device) -> dict[str, Any]:
    """Set the process-wide switches (TF32); returns what the device and its SDPA backends offer."""
    info: dict[str, Any] = {"device": str(device)}
    if device.type != "cuda":
        return info
    torch.backends.cuda.matmul.allow_tf32 = levers.tf32
    torch.backends.cudnn.allow_tf32 = levers.tf32
    torch.backends.cudnn.benchmark = True  # fixed shapes per preset: pick the fastest conv once
    info["sdpa_enabled"] = {
        "flash": torch.backends.cuda.flash_sdp_enabled(),
        "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)(),
        "math": torch.backends.cuda.math_sdp_enabled(),
    }
    return info


def sdpa_context(choice: str) -> contextlib.AbstractContextManager[Any]:
    """A context that restricts SDPA to one backend (``auto``: no restriction)."""
    if choice == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[choice]
    return sdpa_kernel([backend])


def apply_to_components(levers: Levers, components: Any, device: torch.device) -> None:
    """channels_last on the convolution-heavy modules (CUDA only: it slows CPU convolutions)."""
    if levers.channels_last and device.type == "cuda":
        components.unet.to(memory_format=torch.channels_last)
        components.vae.to(memory_format=torch.channels_last)


def compile_unet(levers: Levers, components: Any) -> bool:
    """Compile the UNet's forward in place (after LoRA is attached); True when it was compiled."""
    if not levers.compile:
        return False
    components.unet.compile()
    return True
