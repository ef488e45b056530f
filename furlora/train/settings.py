"""Settings of the ``train:`` section: objective, loss, memory features, schedule, checkpoints.

Every field is read by exactly one place in ``furlora/train``. Conflicting options are
reported together (pydantic model validators) before any weight loads.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from furlora.settings_base import Settings


class LossSettings(Settings):
    """How the per-pixel denoising error becomes one number."""

    floor_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Weight of pixels the objective does not aim at (OneTrainer 'unmasked_weight', ai-toolkit "
            "'mask_min_value'). masked (4-channel) objective: the per-pixel weight is max(mask, floor_weight), "
            "mask = the merged training mask with data.region_weights. inpaint (9-channel) objective: pixels "
            "outside the inpainting hole weigh floor_weight (the UNet sees them through the masked image), "
            "pixels inside weigh max(1, region weight). 0 = learn only inside the mask / hole. The training "
            "log's loss/hole_weight_share says how much of the inpaint loss lands inside the hole."
        ),
    )
    normalize_by_area: bool = Field(
        True,
        description=(
            "Divide each sample's weighted error by the sum of its weights, so a small mask counts as "
            "much as a large one. False: plain mean over all pixels (small masks count less)."
        ),
    )
    prior_preservation_weight: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Keep the base model outside the mask: weight of the error between the LoRA prediction and "
            "the same UNet's prediction with the adapter disabled, over (1 - mask). 0 = off (saves one "
            "forward pass per step)."
        ),
    )
    min_snr_gamma: float | None = Field(
        None, gt=0.0, description="Min-SNR loss weighting gamma (5.0 is the paper's value). None = off."
    )
    noise_offset: float = Field(
        0.0, ge=0.0, description="Noise offset: adds offset * N(0,1) per sample and channel to the noise (0 = off)."
    )
    detail_weight: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Weight of a high-frequency detail term: the masked mean square of a 3x3 Laplacian of "
            "(prediction - target), which stresses fine texture such as fur. 0 = off."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_region_weights(cls, data: Any) -> Any:
        # Region weights have one home (data.region_weights); say exactly what to write instead.
        if isinstance(data, dict) and "region_weights" in data:
            old = data["region_weights"]
            flow = "{" + ", ".join(f"{name}: {weight}" for name, weight in (old.items() if isinstance(old, dict) else [])) + "}"
            raise ValueError(
                "train.loss.region_weights was removed: region weights have one home, data.region_weights "
                f"(weights >= 0). Delete train.loss.region_weights and write `data: {{region_weights: {flow}}}` "
                "(or --set 'data.region_weights=" + flow + "'). Unlike the old key, a region not named there "
                "weighs 1, not 0: name it with weight 0 to keep it out of the loss"
            )
        return data


class CheckpointSettings(Settings):
    """Crash-safe step checkpoints."""

    every_n_steps: int = Field(
        50, ge=0, description="Write a checkpoint every N optimizer steps (1 = every step; 0 = only at the end)."
    )
    keep_last: int = Field(
        3, ge=1, description="Keep the newest K complete checkpoints; older ones are deleted after a new one is complete."
    )
    asynchronous: bool = Field(
        True,
        description=(
            "Write checkpoint files in a background thread (the state is copied first, so training "
            "continues at once). At most one write is pending."
        ),
    )
    dir: str = Field("checkpoints", description="Checkpoint folder, relative to output_dir (or absolute).")


class ValidationSettings(Settings):
    """Deterministic validation loss (and sample inpaintings) on a held-out split."""

    path: str | None = Field(
        None, description="Held-out dataset folder (e.g. datasets/spitz-fur/heldout). None = no validation."
    )
    every_n_steps: int = Field(0, ge=0, description="Validate every M optimizer steps (0 = only at the start and end).")
    timesteps: list[int] = Field(
        [100, 300, 500, 700, 900],
        min_length=1,
        description="Fixed timesteps; every held-out sample is scored at each of them with fixed noise.",
    )
    max_samples: int = Field(16, ge=1, description="Use at most this many held-out samples.")
    sample_images: bool = Field(True, description="Also write sample inpaintings as a PNG grid at each validation.")
    image_steps: int = Field(8, ge=1, description="Denoising steps of the sample inpaintings.")
    num_images: int = Field(4, ge=1, description="Held-out samples in the PNG grid.")


class EmaSettings(Settings):
    """Exponential moving average of the adapter weights."""

    enabled: bool = Field(False, description="Keep an EMA copy of the LoRA weights (exported beside the raw ones).")
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA decay per update.")
    every_n_steps: int = Field(1, ge=1, description="Update the EMA every N optimizer steps.")
    device: Literal["cpu", "same"] = Field(
        "cpu", description="Where the EMA copy lives: 'cpu' saves accelerator memory, 'same' is faster."
    )


class ResolutionPhase(Settings):
    """One entry of a resolution schedule: from ``step`` on, train at ``resolution``."""

    step: int = Field(ge=0, description="First optimizer step of this phase.")
    resolution: int = Field(ge=64, description="Training resolution (pixels, multiple of 64) of this phase.")


class LogSettings(Settings):
    """Progress bar and TensorBoard."""

    dir: str = Field("logs", description="TensorBoard folder, relative to output_dir (or absolute).")
    every_n_steps: int = Field(1, ge=1, description="Log scalars every N optimizer steps.")
    tensorboard: bool = Field(True, description="Write TensorBoard scalars through accelerate's tracker.")
    progress_bar: bool = Field(True, description="Show a tqdm progress bar (step, loss, it/s, ETA).")


class TrainSettings(Settings):
    """Optimisation, memory features and checkpointing."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps to train.")
    learning_rate: float = Field(
        1e-4, gt=0, description="Base learning rate (lora.<component>.learning_rate overrides it per component)."
    )
    batch_size: int = Field(1, ge=1, description="Samples per micro-batch (per process).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    objective: Literal["auto", "masked", "inpaint"] = Field(
        "auto",
        description=(
            "'masked': masked denoising loss on a 4-channel UNet. 'inpaint': the 9-channel inpainting "
            "objective (noisy latents + latent-size mask + VAE latents of the masked image). 'auto': "
            "inpaint for a 9-channel UNet, masked otherwise."
        ),
    )
    full_mask_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Inpaint objective: fraction of samples trained with a full mask (plain text-to-image) to keep "
            "the prior, drawn per (seed, step, rank). Independent of the dataset's own hole kinds "
            "(data.inpaint_mask.full also draws full holes): the two add up."
        ),
    )
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="What the UNet predicts. 'auto' = the model's scheduler config (epsilon for SDXL)."
    )
    loss: LossSettings = Field(default_factory=LossSettings)
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no",
        description=(
            "Autocast precision of forward passes. LoRA weights stay fp32; fp16 uses a gradient scaler. "
            "The VAE always runs in model.vae_dtype (fp32 by default). Left unset with model.dtype bf16 / "
            "fp16 it follows model.dtype (frozen half weights need autocast); an explicit 'no' with them is an error."
        ),
    )
    gradient_checkpointing: bool = Field(False, description="Recompute UNet activations in backward (less memory, ~30% slower).")
    attention: Literal["sdpa", "sliced"] = Field(
        "sdpa",
        description=(
            "'sdpa': PyTorch scaled-dot-product attention (least memory in training). 'sliced': attention "
            "slicing; it lowers inference peaks, but in training it keeps more activations than sdpa "
            "(1.8 vs 0.7 GiB at 1024 px with checkpointing, furlora plan)."
        ),
    )
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="'adamw8bit' (bitsandbytes) keeps optimizer state in 8 bits: 4x less state memory."
    )
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam beta1.")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam beta2.")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="Adam epsilon.")
    weight_decay: float = Field(1e-2, ge=0.0, description="Decoupled weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this (None = no clipping).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warmup."
    )
    lr_warmup_steps: int = Field(0, ge=0, description="Linear warmup from 0 over this many optimizer steps.")
    cache_latents: bool = Field(
        True,
        description=(
            "Cache VAE latents on disk (data.cache_dir) and encode them all before the first step, so no training "
            "step runs the VAE; augmentation is then frozen into data.cache.variants variants per image and the "
            "9-channel objective's holes come from a fixed set (data.cache.holes)."
        ),
    )
    cache_text_embeddings: bool = Field(
        True, description="Cache text-encoder outputs per caption when no text encoder trains."
    )
    ema: EmaSettings = Field(default_factory=EmaSettings)
    resolution_schedule: list[ResolutionPhase] = Field(
        default_factory=list,
        description="Train at growing resolutions by step, e.g. [{step: 0, resolution: 512}, {step: 600, resolution: 768}]. Empty = data.resolution throughout.",
    )
    nan_patience: int = Field(
        5, ge=1, description="Stop after this many optimizer steps in a row with a non-finite loss or gradient."
    )
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    cpu: bool = Field(False, description="Train on the CPU even if an accelerator is present.")
    log_memory_plan: bool = Field(
        True,
        description=(
            "Log the memory planner's breakdown at start (as `furlora plan` prints it) and warn when it exceeds "
            "the device's free memory. Costs a second or two of meta-device work."
        ),
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "torch CPU threads (None: the cores this process may use, from its affinity mask and cgroup CPU "
            "quota). On a shared or busy machine 1 is often faster: OpenMP threads wait for each other when "
            "other processes hold the cores."
        ),
    )
    max_wall_time: float | None = Field(
        None,
        gt=0,
        description=(
            "Time budget of one run (one job): stop with a checkpoint before it runs out, leaving room for the "
            "next step and the checkpoint write, so a scheduler's hard limit never kills the run unsaved. Seconds "
            "(13800) or a duration: '3h50m', '90m', '45s', '1d2h', '03:50:00'. Counted from the start of the run "
            "(before the weights load). None = no limit. A resumed run gets the budget again."
        ),
    )

    @field_validator("max_wall_time", mode="before")
    @classmethod
    def _parse_wall_time(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainSettings:
        problems = []
        steps = [p.step for p in self.resolution_schedule]
        if steps and steps[0] != 0:
            problems.append(f"resolution_schedule must start at step 0 (first phase starts at step {steps[0]})")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            problems.append(f"resolution_schedule steps must increase strictly, got {steps}")
        bad = [p.resolution for p in self.resolution_schedule if p.resolution % 64]
        if bad:
            problems.append(f"resolution_schedule resolutions must be multiples of 64, got {bad}")
        if self.lr_warmup_steps > self.max_steps:
            problems.append(f"lr_warmup_steps {self.lr_warmup_steps} is larger than max_steps {self.max_steps}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
#: Units in this order, each at most once: ``1d2h``, ``3h 50m``.
_DURATION = re.compile(r"\s*".join(rf"(?:(\d+(?:\.\d+)?)\s*{unit})?" for unit in _DURATION_UNITS))


def parse_duration(text: str) -> float:
    """Seconds of ``"3h50m"``, ``"90m"``, ``"45s"``, ``"1d2h"``, ``"5400"`` or ``"03:50:00"``.

    Raises ``ValueError`` with the accepted forms (pydantic reports it under the config key).
    """
    raw = text.strip().lower()
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif re.fullmatch(r"\d+:\d{1,2}(?::\d{1,2})?", raw):  # H:MM:SS or H:MM, as schedulers print limits
        parts = [int(p) for p in raw.split(":")] + [0]
        seconds = parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    elif (match := _DURATION.fullmatch(raw)) and any(match.groups()):
        seconds = sum(float(number) * factor for number, factor in zip(match.groups(), _DURATION_UNITS.values()) if number)
    if seconds is None or seconds <= 0:
        raise ValueError(
            f"{text!r} is not a positive duration; give seconds (13800) or a duration such as '3h50m', '90m', "
            "'45s', '1d2h' or '03:50:00'"
        )
    return seconds


#: Settings that do not change what is trained: they may differ between a checkpoint and the
#: run resuming from it. Dotted paths into the run config (prefix match).
NON_TRAINING_KEYS: tuple[str, ...] = (
    "name",
    "output_dir",
    "eval",
    "train.checkpoint",
    "train.validation",
    "train.log",
    "train.max_steps",
    "train.cache_latents",
    "train.cache_text_embeddings",
    "train.attention",
    "train.gradient_checkpointing",
    "train.cpu_threads",
    "train.max_wall_time",
    "train.cpu",
    "train.log_memory_plan",
    "train.nan_patience",
    "train.ema.device",
    "data.cache_dir",
)
