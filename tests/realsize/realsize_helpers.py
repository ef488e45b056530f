"""Helpers of the real-size tier: run configs and CLI commands, measuring the peak memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from furlora.models.cache_folder import default_cache_dir

REPO = Path(__file__).resolve().parents[2]
#: Weights and autocast precision of the tier's runs: bf16 (the GPU presets' precision, the default) or
#: fp32. A CPU without AVX512 runs bf16 matrix products on a slow fallback (measured on a 2-core AMD
#: EPYC with AVX2 only: 4.5 s against 0.17 s in fp32, 27x), where one real-size training step takes more
#: than ten minutes; FURLORA_REALSIZE_DTYPE=fp32 keeps such a machine's run within the timeouts.
DTYPE = os.environ.get("FURLORA_REALSIZE_DTYPE", "bf16")
if DTYPE not in ("bf16", "fp32"):
    raise ValueError(f"FURLORA_REALSIZE_DTYPE={DTYPE!r}: use bf16 (the default) or fp32")
TORCH_DTYPE = {"bf16": torch.bfloat16, "fp32": torch.float32}[DTYPE]
#: The cache the real-size folders live in, read at import: before any test fixture points
#: FURLORA_CACHE at a temporary folder.
PERSISTENT_CACHE = default_cache_dir()
GiB = 1 << 30
#: The console script's body: the CLI of the furlora this interpreter imports.
CLI = "import sys; from furlora.cli.main import main; sys.argv[0] = 'furlora'; sys.exit(main())"


def small_dataset(folder: Path, stems: tuple[str, ...] = ("dog_000", "dog_001")) -> Path:
    """A copy of a few bundled training samples (images, region masks, captions): the latent
    cache fills before the first step, and at real size each VAE encode costs seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    source = REPO / "datasets" / "spitz-fur" / "train"
    for stem in stems:
        for file in source.glob(f"{stem}.*"):
            shutil.copy2(file, folder / file.name)
    return folder


def run_config(model: Path, output_dir: Path, data: Path | None = None, **sections: dict[str, Any]) -> dict[str, Any]:
    """A training config on the real-size model: 256 px, :data:`DTYPE` (bf16), LoRA on the UNet and both text
    encoders, EMA on the CPU, a checkpoint every step, validation loss at one timestep; no
    sample grid. ``sections``: deep-merged over these values (e.g. ``train={"max_steps": 3}``)."""
    config: dict[str, Any] = {
        "name": "realsize",
        "seed": 7,
        "output_dir": str(output_dir),
        "model": {"source": str(model), "dtype": DTYPE, "vae_dtype": "fp32"},
        "data": {"path": str(data or REPO / "datasets" / "spitz-fur" / "train"), "resolution": 256},
        "lora": {
            "unet": {"preset": "attn", "rank": 4, "alpha": 4.0},
            "text_encoder": {"enabled": True, "preset": "attn", "rank": 4, "alpha": 4.0},
            "text_encoder_2": {"enabled": True, "preset": "attn", "rank": 4, "alpha": 4.0},
        },
        "train": {
            "cpu": True,
            "cpu_threads": 2,
            "max_steps": 2,
            # Large on purpose: two steps must move the LoRA far beyond bf16 rounding, so the
            # export test can tell a correct load from a wrong one.
            "learning_rate": 0.01,
            "lr_warmup_steps": 0,
            "batch_size": 1,
            "objective": "inpaint",
            "mixed_precision": "bf16" if DTYPE == "bf16" else "no",
            "ema": {"enabled": True, "device": "cpu"},
            "checkpoint": {"every_n_steps": 1, "keep_last": 2, "asynchronous": False},
            "validation": {
                "path": str(REPO / "datasets" / "spitz-fur" / "heldout"),
                "every_n_steps": 2,
                "timesteps": [500],
                "max_samples": 1,
                "sample_images": False,
            },
            "log": {"tensorboard": False, "progress_bar": False},
        },
    }
    return _merge(config, sections)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Measured:
    """One finished command: exit status, output, peak resident memory and wall time."""

    returncode: int
    output: str
    peak_rss: int
    """Bytes: the kernel's high-water mark of the process (ru_maxrss of its wait4)."""
    wall_s: float
    timeline: list[tuple[float, int, str]] = field(default_factory=list)
    """(seconds since start, RSS bytes, the last output line by then), sampled every 0.5 s."""

    def peak_moment(self) -> tuple[float, int, str]:
        return max(self.timeline, key=lambda t: t[1]) if self.timeline else (0.0, 0, "")


def run_measured(args: list[str], log_file: Path | None = None, timeout: float = 1800) -> Measured:
    """Run the ``furlora`` command line with ``args`` in a fresh process and measure it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    timeline: list[tuple[float, int, str]] = []
    done = threading.Event()

    def sample() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while not done.wait(0.5):
            try:
                rss = next(int(ln.split()[1]) * 1024 for ln in status.read_text().splitlines() if ln.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
            timeline.append((time.monotonic() - start, rss, lines[-1] if lines else ""))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if log_file is not None:
            with log_file.open("a", encoding="utf-8") as handle:
                handle.write(f"{time.monotonic() - start:8.1f} {line}")
        if time.monotonic() - start > timeout:
            proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(proc.returncode, "\n".join(lines), usage.ru_maxrss * 1024, time.monotonic() - start, timeline)


def fixed_inputs(in_channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One sample of SDXL inputs at 256 px: token ids of both tokenizers (stock ids, ending in the
    end token), latents, a timestep and the micro-conditioning."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 700, (1, 77), generator=g)
    ids[0, 0], ids[0, 20:] = 49406, 49407  # start token, end token and end-token padding
    return {
        "ids": ids,
        "latents": torch.randn(1, in_channels, 32, 32, generator=g),
        "timesteps": torch.tensor([500]),
        "time_ids": torch.tensor([[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]]),
    }


@torch.no_grad()
def sdxl_outputs(unet: Any, text_encoder: Any, text_encoder_2: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conditioning as diffusers' SDXL pipelines build it, then one UNet call; every output a
    LoRA on any of the three components changes, as float32."""
    dtype = unet.dtype
    out_1 = text_encoder(inputs["ids"], output_hidden_states=True)
    out_2 = text_encoder_2(inputs["ids"], output_hidden_states=True)
    embeds = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
    sample = unet(
        inputs["latents"].to(dtype), inputs["timesteps"], encoder_hidden_states=embeds.to(dtype),
        added_cond_kwargs={"text_embeds": out_2.text_embeds.to(dtype), "time_ids": inputs["time_ids"].to(dtype)},
    ).sample
    return {"unet": sample.float(), "text_encoder": out_1.last_hidden_state.float(),
            "text_encoder_2": out_2.last_hidden_state.float(), "pooled": out_2.text_embeds.float()}
