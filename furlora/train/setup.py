"""Everything a run needs before its first step: checks first, weights last.

:func:`preflight` checks the config against the model folder (configs only, no weights), builds
and validates the datasets (a failing dataset stops here with its report) and resolves the
objective; only then :func:`load_components` reads gigabytes of weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from furlora.config import RunConfig
from furlora.errors import ConfigError, TrainingError, format_problems
from furlora.models.device import pick_device
from furlora.tokens import check_before_loading
from furlora.train.settings import TrainSettings
from furlora.train.step import resolve_objective

logger = logging.getLogger(__name__)


@dataclass
class Preflight:
    """What :func:`preflight` found: the model folder, the objective and the datasets."""

    model_path: Path
    inpaint: bool
    dataset: Any
    val_dataset: Any | None
    output_dir: Path


def under(base: Path, path: str) -> Path:
    """``path`` if absolute, else ``base / path`` (folders given relative to output_dir)."""
    p = Path(path)
    return p if p.is_absolute() else base / p


def build_accelerator(config: RunConfig) -> Any:
    """An ``accelerate.Accelerator`` for this run: process group, device, TensorBoard tracker.

    Mixed precision is not delegated to accelerate: the trainer autocasts itself (LoRA weights
    stay fp32), so creating several trainers in one process never conflicts.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output = Path(config.output_dir)
    project = ProjectConfiguration(project_dir=str(output), logging_dir=str(under(output, config.train.log.dir)))
    # The same device rule as evaluation (furlora.models.device): the GPU when present unless train.cpu.
    return Accelerator(
        cpu=pick_device("auto", cpu_only=config.train.cpu, key="train.cpu").type == "cpu",
        log_with="tensorboard" if config.train.log.tensorboard else None,
        project_config=project,
    )


def build_dataset(config: RunConfig, resolution: int | None = None, root: str | None = None) -> Any:
    """A validated :class:`~furlora.data.dataset.MaskedDataset` (at ``resolution`` if given)."""
    from furlora.data.dataset import MaskedDataset

    settings = config.data
    if resolution is not None and resolution != settings.resolution:
        settings = settings.model_copy(update={"resolution": resolution})
    # train.cache_latents freezes augmentation per cache variant so every epoch reads cached latents.
    return MaskedDataset(settings, root=root, seed=config.seed, cache_latents=config.train.cache_latents)


def preflight(config: RunConfig, dataset: Any | None = None, val_dataset: Any | None = None) -> Preflight:
    """Check the run before any weight loads; raise one error listing every config problem."""
    from furlora.models.sdxl import inspect_model_folder, resolve_model_path

    train = config.train
    problems: list[str] = []
    if train.mixed_precision == "fp16" and pick_device("auto", cpu_only=train.cpu).type != "cuda":
        problems.append("train.mixed_precision: fp16 needs a CUDA GPU; use bf16 (or no) on the CPU")
    if train.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            problems.append("train.optimizer: adamw8bit needs bitsandbytes (pip install bitsandbytes), or use adamw")
    if problems:
        raise ConfigError(format_problems("invalid training settings", problems))
    model_path = resolve_model_path(config.model.source, config.model.revision, dtype=config.model.dtype,
                                    variant=config.model.variant)
    info = inspect_model_folder(model_path, config.model.variant)
    # Learned tokens against the model's tokenizers (known token, bad initialiser word, init file
    # of another model): tokenizers and configs only, no weights.
    check_before_loading(config.tokens, model_path)
    in_channels = int(info["unet_config"].get("in_channels", 4))
    inpaint = resolve_objective(train.objective, in_channels, f"model.source {config.model.source!r}")
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir {output_dir}: cannot create it ({exc})") from None
    first_resolution = train.resolution_schedule[0].resolution if train.resolution_schedule else None
    if dataset is None:
        dataset = build_dataset(config, first_resolution)
    if val_dataset is None and train.validation.path is not None:
        val_dataset = build_dataset(config, first_resolution or config.data.resolution, root=train.validation.path)
    return Preflight(model_path=model_path, inpaint=inpaint, dataset=dataset, val_dataset=val_dataset, output_dir=output_dir)


def load_components(config: RunConfig, model_path: Path, device: torch.device) -> Any:
    """Load the frozen SDXL components onto ``device``."""
    from furlora.models.sdxl import load_sdxl

    return load_sdxl(
        model_path,
        dtype=config.model.dtype,
        vae_dtype=config.model.vae_dtype,
        variant=config.model.variant,
        device=device,
    )


def attach_lora(components: Any, config: RunConfig) -> Any:
    """Put LoRA on the configured components; returns the LoraAdapters (coverage is logged)."""
    from furlora.lora.adapters import LoraAdapters

    modules = {"unet": components.unet, "text_encoder": components.text_encoder, "text_encoder_2": components.text_encoder_2}
    # Seeded initialisation: two runs with the same seed start from the same LoRA weights.
    manager = LoraAdapters(modules, config.lora, seed=config.seed, model_name=str(config.model.source))
    report = manager.apply()
    logger.info("LoRA coverage:\n%s", report.format_table())
    return manager


def configure_memory(components: Any, settings: TrainSettings, trained: list[str]) -> None:
    """Gradient checkpointing and attention slicing on the modules that need them."""
    if settings.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        for name in ("text_encoder", "text_encoder_2"):
            if name in trained:
                getattr(components, name).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.attention == "sliced":
        components.unet.set_attention_slice("auto")


def memory_advice(settings: TrainSettings, resolution: int) -> str:
    """Which memory settings to turn on next, in order of cost to quality / speed."""
    steps = []
    if not settings.gradient_checkpointing:
        steps.append("train.gradient_checkpointing: true")
    if settings.mixed_precision == "no":
        steps.append("train.mixed_precision: bf16 (LoRA weights stay fp32)")
    if settings.optimizer == "adamw":
        steps.append("train.optimizer: adamw8bit")
    if not settings.cache_latents or not settings.cache_text_embeddings:
        steps.append("train.cache_latents / cache_text_embeddings: true")
    if settings.batch_size > 1:
        steps.append(
            f"train.batch_size: 1 with train.gradient_accumulation_steps: "
            f"{settings.batch_size * settings.gradient_accumulation_steps} (same effective batch)"
        )
    if resolution > 512:
        steps.append(f"a lower data.resolution (now {resolution}) or a resolution_schedule starting at 512")
    if not steps:
        steps.append("a smaller lora rank, fewer LoRA targets, or a GPU with more memory")
    return "out of memory. Turn on next: " + "; ".join(steps) + ". (furlora plan CONFIG estimates what fits.)"


def out_of_memory(exc: BaseException, settings: TrainSettings, resolution: int) -> TrainingError | None:
    """A TrainingError with advice if ``exc`` is an out-of-memory error, else None."""
    text = str(exc)
    is_oom = isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text)
    )
    return TrainingError(memory_advice(settings, resolution)) if is_oom else None
