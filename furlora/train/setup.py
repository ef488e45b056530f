"""Everything a run needs before its first step: checks first, weights last.

:func:`preflight` checks the config against the model folder (configs only, no weights), builds
and validates the datasets (a failing dataset stops here with its report) and resolves the
objective; only then :func:`load_components` reads gigabytes of weights. :func:`setup_run` does
all of it in that order and returns the :class:`Run` the trainer's loop works with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from furlora.config import RunConfig
from furlora.data.cache import run_cache_dir
from furlora.data.dataset import MaskedDataset, collate_samples
from furlora.errors import ConfigError, TrainingError, format_problems
from furlora.lora.adapters import LoraAdapters
from furlora.models.device import autocast_dtype, pick_device
from furlora.models.sdxl import SDXLComponents, inspect_model_folder, load_sdxl, resolve_model_path
from furlora.tokens import check_before_loading, prepare_tokens
from furlora.tokens.embeddings import TokenEmbeddings
from furlora.train.ema import AdapterEMA
from furlora.train.encode import BatchEncoder
from furlora.train.guard import NonFiniteGuard
from furlora.train.optim import build_optimizer
from furlora.train.resume import config_hash
from furlora.train.rng import derive_seed
from furlora.train.schedule import build_lr_scheduler
from furlora.train.settings import TrainSettings
from furlora.train.step import resolve_objective
from furlora.train.threads import available_cpus

if TYPE_CHECKING:  # accelerate is slow to import: the annotations only
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass
class Preflight:
    """What :func:`preflight` found: the model folder, the objective and the datasets."""

    model_path: Path
    inpaint: bool
    dataset: MaskedDataset
    val_dataset: MaskedDataset | None
    output_dir: Path

    @property
    def objective(self) -> str:
        """The objective's name, as summaries and file metadata write it: ``inpaint`` (9-channel) or ``masked``."""
        return "inpaint" if self.inpaint else "masked"


@dataclass
class Run:
    """Built by :func:`setup_run` before the first step: the same objects all run long (checkpoints save their inner state)."""

    config: RunConfig
    pre: Preflight
    accelerator: Accelerator
    device: torch.device
    rank: int
    world: int
    is_main: bool
    collate: Collate
    components: SDXLComponents
    tokens: TokenEmbeddings | None
    manager: LoraAdapters
    trained: list[str]
    text_lora: bool
    """A text encoder has LoRA: its embeddings change every step (gradients flow, nothing is cached)."""
    prediction_type: str
    encoder: BatchEncoder
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    ema: AdapterEMA | None
    guard: NonFiniteGuard
    checkpoint_dir: Path
    config_dict: dict[str, Any]
    config_hash: str

    @property
    def settings(self) -> TrainSettings:
        return self.config.train

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The mixed-precision context of forward passes (LoRA weights stay fp32)."""
        mode = self.settings.mixed_precision
        if mode == "no":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=autocast_dtype(mode))


def build_accelerator(config: RunConfig) -> Accelerator:
    """An ``accelerate.Accelerator`` for this run: process group, device, TensorBoard tracker.

    Mixed precision is not delegated to accelerate: the trainer autocasts itself (LoRA weights
    stay fp32), so creating several trainers in one process never conflicts.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output = Path(config.output_dir)  # an absolute train.log.dir replaces it (pathlib's /)
    project = ProjectConfiguration(project_dir=str(output), logging_dir=str(output / config.train.log.dir))
    # The same device rule as evaluation (furlora.models.device): the GPU when present unless train.cpu.
    return Accelerator(
        cpu=pick_device("auto", cpu_only=config.train.cpu, key="train.cpu").type == "cpu",
        log_with="tensorboard" if config.train.log.tensorboard else None,
        project_config=project,
    )


def build_dataset(config: RunConfig, resolution: int | None = None, root: str | None = None) -> MaskedDataset:
    """A validated :class:`~furlora.data.dataset.MaskedDataset` (at ``resolution`` if given)."""
    settings = config.data
    if resolution is not None and resolution != settings.resolution:
        settings = settings.model_copy(update={"resolution": resolution})
    # train.cache_latents freezes augmentation per cache variant so every epoch reads cached latents.
    return MaskedDataset(settings, root=root, seed=config.seed, cache_latents=config.train.cache_latents)


def resolve_model(config: RunConfig) -> tuple[Path, bool]:
    """The model folder of ``config`` and whether it trains the 9-channel inpainting objective.

    Reads configs only, no weights; raises ConfigError when train.objective and the UNet disagree.
    """
    model = config.model
    model_path = resolve_model_path(model.source, model.revision, dtype=model.dtype, variant=model.variant)
    in_channels = int(inspect_model_folder(model_path, model.variant)["unet_config"].get("in_channels", 4))
    return model_path, resolve_objective(config.train.objective, in_channels, f"model.source {model.source!r}")


def preflight(config: RunConfig, dataset: MaskedDataset | None = None, val_dataset: MaskedDataset | None = None) -> Preflight:
    """Check the run before any weight loads; raise one error listing every config problem."""
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
    model_path, inpaint = resolve_model(config)
    # Learned tokens against the model's tokenizers (known token, bad initialiser word, init file
    # of another model): tokenizers and configs only, no weights.
    check_before_loading(config.tokens, model_path)
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir {output_dir}: cannot create it ({exc})") from None
    first_resolution = train.resolution_schedule[0].resolution if train.resolution_schedule else None
    if dataset is None:
        dataset = build_dataset(config, first_resolution)
    if val_dataset is None and train.validation.path is not None:
        val_dataset = build_dataset(config, first_resolution, root=train.validation.path)
    return Preflight(model_path=model_path, inpaint=inpaint, dataset=dataset, val_dataset=val_dataset, output_dir=output_dir)


def load_components(config: RunConfig, model_path: Path, device: torch.device) -> SDXLComponents:
    """Load the frozen SDXL components onto ``device``."""
    model = config.model
    return load_sdxl(model_path, dtype=model.dtype, vae_dtype=model.vae_dtype, variant=model.variant, device=device)


def attach_lora(components: Any, config: RunConfig) -> LoraAdapters:
    """Put LoRA on the configured components; returns the LoraAdapters (coverage is logged)."""
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
        for name in TEXT_ENCODERS:
            if name in trained:
                getattr(components, name).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.attention == "sliced":
        components.unet.set_attention_slice("auto")


def setup_run(config: RunConfig, *, components: SDXLComponents | None = None, dataset: MaskedDataset | None = None,
              val_dataset: MaskedDataset | None = None, accelerator: Accelerator | None = None,
              collate: Collate | None = None) -> Run:
    """Build the :class:`Run` of ``config``; given objects (tests, notebooks) are used as they are."""
    settings = config.train
    # Default: the cores this process may really use (affinity / cgroup quota), not the machine's.
    torch.set_num_threads(settings.cpu_threads or available_cpus())
    # Checks that need no weights come first: a bad config or dataset fails in seconds.
    pre = preflight(config, dataset, val_dataset)
    accelerator = accelerator or build_accelerator(config)
    device = accelerator.device
    if settings.log_memory_plan and accelerator.is_main_process:
        from furlora.memory import log_plan  # what `furlora plan` predicts, before the weights load (advice only)

        cuda = device.type == "cuda"
        log_plan(config, device="cuda" if cuda else "cpu", free_bytes=torch.cuda.mem_get_info(device)[0] if cuda else None)
    collate = collate if collate is not None else collate_samples
    components = components or load_components(config, pre.model_path, device)
    # Tokens before LoRA (the grown embedding tables are not LoRA targets); the token checks
    # that need no weights already ran in preflight.
    tokens = prepare_tokens(components, config.tokens, seed=derive_seed(config.seed, "tokens"))
    if tokens is not None:
        collate = tokens.wrap_collate(collate)  # training and validation batches get the same token captions
    manager = attach_lora(components, config)
    trained = config.lora.enabled_components()
    text_lora = any(name in trained for name in TEXT_ENCODERS)
    configure_memory(components, settings, trained)
    prediction_type = settings.prediction_type
    if prediction_type == "auto":  # the model's, from its scheduler config (epsilon for SDXL)
        prediction_type = components.noise_scheduler.config.prediction_type
    # The inference scheduler too: sample grids must denoise with what the LoRA learns.
    for scheduler in (components.noise_scheduler, components.scheduler):
        if prediction_type != scheduler.config.prediction_type:
            scheduler.register_to_config(prediction_type=prediction_type)
    # Trained token vectors change the text embeddings: a cache keyed by caption would be stale.
    cache_text = settings.cache_text_embeddings and tokens is None and not text_lora
    if settings.cache_text_embeddings and not cache_text and accelerator.is_main_process:
        logger.warning(
            "train.cache_text_embeddings is on but cannot apply: %s trains, so text embeddings change every step",
            "a learned token (tokens.enabled)" if tokens is not None else "a text-encoder LoRA (lora.text_encoder*)",
        )
    cache_dir = run_cache_dir(config.data.cache_dir, pre.output_dir) if settings.cache_latents else None
    encoder = BatchEncoder(components, device, cache_latents=settings.cache_latents, cache_text=cache_text, cache_dir=cache_dir)
    groups = manager.parameter_groups()
    if tokens is not None:
        groups += tokens.parameter_groups(settings.learning_rate)
    optimizer = build_optimizer(groups, settings)
    ema = settings.ema
    config_dict = config.to_dict()
    return Run(
        config=config, pre=pre, accelerator=accelerator, device=device, rank=accelerator.process_index,
        world=accelerator.num_processes, is_main=accelerator.is_main_process, collate=collate,
        components=components, tokens=tokens, manager=manager, trained=trained, text_lora=text_lora,
        prediction_type=prediction_type, encoder=encoder,
        parameters=[p for g in groups for p in g["params"] if p.requires_grad], optimizer=optimizer,
        lr_scheduler=build_lr_scheduler(optimizer, settings.lr_scheduler, settings.lr_warmup_steps, settings.max_steps),
        scaler=torch.amp.GradScaler(device.type) if settings.mixed_precision == "fp16" else None,
        ema=AdapterEMA(manager.lora_state_dict().items(), ema.decay, "cpu" if ema.device == "cpu" else device) if ema.enabled else None,
        guard=NonFiniteGuard(settings.nan_patience),
        checkpoint_dir=pre.output_dir / settings.checkpoint.dir,  # an absolute one replaces output_dir
        config_dict=config_dict, config_hash=config_hash(config_dict),
    )


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
