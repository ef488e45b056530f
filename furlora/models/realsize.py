"""Random-weight SDXL models at the real size, for the slow test tier and device checks.

The tiny models catch logic errors fast, but some defects only show at the real size (memory
peaks, dtype drift in 2.6 B-parameter UNets, pooling with the real text-encoder configs). These
models have exactly the public SDXL architecture and configs (``sdxl_configs/``) with random
weights from a fixed seed:

- :func:`build_realsize_components` builds them in memory on any device/dtype (GPU checks);
- :func:`ensure_realsize_model` writes a diffusers-format folder once into the cache
  (``realsize-sdxl`` 4-channel base, ``realsize-sdxl-inpaint`` 9-channel inpainting UNet), fp16
  weights with the hub's ``fp16`` variant file names, as users download them.

Building a folder holds one fp16 component in memory at a time (about 5.2 GB for the UNet) and
streams its tensors to disk, so the peak stays near the UNet's size.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from furlora.models.architecture import RealComponent, build_real_sdxl, real_sdxl_config
from furlora.models.cache_folder import model_folder, publish_folder
from furlora.models.tiny import scheduler_config, write_weightless_parts

logger = logging.getLogger(__name__)

REALSIZE_SEED = 20261201

#: name -> the UNet config it uses.
REALSIZE_MODELS: dict[str, RealComponent] = {
    "realsize-sdxl": "unet",
    "realsize-sdxl-inpaint": "unet_inpainting",
}

#: Components written into a folder besides the UNet (each under its real config name).
_WEIGHTED = ("text_encoder", "text_encoder_2", "vae")

_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Initialise parameters directly in ``dtype``: an fp32 UNet would need 10 GB first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_real_component(
    component: RealComponent,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    seed: int = REALSIZE_SEED,
) -> torch.nn.Module:
    """One real-size SDXL component with the libraries' default random initialisation.

    Deterministic for a given ``seed`` and device. Frozen and in eval mode, like a loaded model.
    """
    offsets = {"unet": 0, "unet_inpainting": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3}
    with torch.random.fork_rng(devices=[]), _default_dtype(dtype):
        torch.manual_seed(seed + offsets[component])
        module = build_real_sdxl(component, device=device)
    module.requires_grad_(False)
    return module.eval()


def build_realsize_components(
    inpainting: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    vae_dtype: torch.dtype = torch.float32,
    seed: int = REALSIZE_SEED,
) -> Any:
    """Random-weight real-size SDXL as :class:`furlora.models.sdxl.SDXLComponents`, in memory.

    The UNet and text encoders are in ``dtype``, the VAE in ``vae_dtype`` (as ``load_sdxl``);
    tokenizers and schedulers are the same as in the written folders. About 7 GB in fp16.
    """
    import tempfile

    from diffusers import DDPMScheduler, EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    from furlora.models.sdxl import SDXLComponents

    unet = random_real_component("unet_inpainting" if inpainting else "unet", device, dtype, seed)
    vae = random_real_component("vae", device, vae_dtype, seed)
    te1 = random_real_component("text_encoder", device, dtype, seed)
    te2 = random_real_component("text_encoder_2", device, dtype, seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_weightless_parts(Path(tmp), inpainting, _te_vocab_size())
        tok1 = CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer")
        tok2 = CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer_2")
    return SDXLComponents(
        unet=unet, vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
        noise_scheduler=DDPMScheduler.from_config(scheduler_config()),
        scheduler=EulerDiscreteScheduler.from_config(scheduler_config()),
        source=Path("realsize-sdxl-inpaint" if inpainting else "realsize-sdxl"),
        is_inpainting=inpainting, dtype=dtype,
    )


def realsize_spec(name: str) -> dict[str, Any]:
    """Everything that determines a real-size folder's files (its cache key hashes this)."""
    return {
        "name": name,
        "seed": REALSIZE_SEED,
        "unet": REALSIZE_MODELS[name],
        "configs": {c: real_sdxl_config(c) for c in ("unet", "unet_inpainting", "vae", "text_encoder",
                                                     "text_encoder_2", "scheduler", "model_index")},
        "torch": torch.__version__.split("+")[0],  # default initialisers may change between releases
        "format": 1,
    }


def realsize_model_folder(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`ensure_realsize_model` keeps ``name`` (it may not exist yet)."""
    return model_folder(name, realsize_spec(name), cache_dir)


def ensure_realsize_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the diffusers folder of real-size model ``name``, writing it once (minutes, ~6.5 GB).

    Written into a temporary folder and renamed into place, so an interrupted build leaves no
    half model behind. The base and inpainting folders share their text encoders and VAE (same
    seed); the second one built hard-links those files from the first when it can.
    """
    target = realsize_model_folder(name, cache_dir)
    if (target / "model_index.json").is_file():
        return target
    siblings = [realsize_model_folder(other, cache_dir) for other in REALSIZE_MODELS if other != name]
    donor = next((s for s in siblings if (s / "model_index.json").is_file()), None)
    publish_folder(target, lambda tmp: _write_realsize_model(realsize_spec(name), tmp, donor))
    logger.info("built real-size model %s at %s", name, target)
    return target


def _te_vocab_size() -> int:
    return int(real_sdxl_config("text_encoder")["vocab_size"])


def _write_realsize_model(spec: dict[str, Any], folder: Path, donor: Path | None) -> None:
    from furlora.progress import progress_bar

    steps = [spec["unet"], *_WEIGHTED]
    with progress_bar(len(steps), f"writing {spec['name']}", "component") as bar:
        for part in steps:
            sub = "unet" if part == spec["unet"] else part
            stem = "diffusion_pytorch_model" if sub in ("unet", "vae") else "model"
            weights = folder / sub / f"{stem}.fp16.safetensors"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            _write_config(real_sdxl_config(part), folder / sub, sub)
            shared = donor / sub / weights.name if donor is not None and sub != "unet" else None
            if not (shared is not None and shared.is_file() and _try_link(shared, weights)):
                module = random_real_component(part, "cpu", torch.float16, spec["seed"])
                write_safetensors_streaming(module.state_dict(), weights)
                del module
            bar.update(1)
    write_weightless_parts(folder, spec["unet"] == "unet_inpainting", _te_vocab_size())
    card = {"name": spec["name"], "seed": spec["seed"],
            "what": "furlora real-size SDXL-architecture model, random weights (tests only)"}
    (folder / "furlora_realsize.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def _write_config(config: dict[str, Any], folder: Path, sub: str) -> None:
    """The public config as written on the hub (transformers' keys kept; torch_dtype fp16)."""
    data = dict(config)
    if sub.startswith("text_encoder"):
        data["torch_dtype"] = "float16"
    (folder / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def _try_link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def write_safetensors_streaming(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Write a safetensors file one tensor at a time (``safetensors.torch.save_file`` first
    builds the whole file in memory, which doubles a 5 GB UNet's footprint)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data start to 8 bytes
    with file.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name in names:
            tensor = tensors[name].detach().contiguous().cpu()
            handle.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
