"""One preset of the GPU check: the real trainer on the bundled dataset, measured.

The run is the preset's own config with the overrides the check needs (listed in the result):
few steps, no warm-up of the learning rate, a checkpoint every ``checkpoint_every`` steps, a short
validation, and the model built in memory. Everything else (caches, precision, optimizer,
gradient checkpointing, LoRA targets) is the preset's.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpu.budget import StepGovernor
from gpu.levers import Levers, apply_to_components, compile_unet, sdpa_context
from gpu.models import build_components, model_for

logger = logging.getLogger("gpu_check")

#: Run order: the inpainting preset first, because the comparison and the LoRA check use its LoRA.
PRESETS: tuple[str, ...] = ("sdxl-inpainting", "sdxl-12gb", "sdxl-16gb", "sdxl-24gb", "paper-table1")

#: Every key of a preset's result, in table order (present in every result, None when not measured).
PRESET_FIELDS: tuple[str, ...] = (
    "preset", "status", "reason", "model", "resolution", "steps_requested", "steps_run", "warmup_steps",
    "seconds_per_step", "seconds_per_step_mean", "time_to_first_step_seconds", "compile_seconds",
    "tail_seconds", "build_seconds", "setup_seconds", "total_seconds",
    "peak_allocated_bytes", "peak_reserved_bytes", "planned_bytes", "plan_seconds",
    "ratio_reserved_to_planned", "ratio_allocated_to_planned",
    "caching_seconds", "cache_pass_seconds", "vae_encodes", "cache_hits", "cache_misses",
    "checkpoints", "checkpoint_blocked_seconds", "checkpoint_blocked_share",
    "optimizer", "mixed_precision", "gradient_checkpointing", "final_loss", "overrides", "notes",
)

#: BatchEncoder methods whose time counts as caching (encode on a miss, look up on a hit).
_ENCODER_METHODS = ("latents", "masked_latents", "text")


@dataclass(frozen=True)
class RunOptions:
    size: str
    device: torch.device
    steps: int
    warmup_steps: int
    checkpoint_every: int
    work_dir: Path
    levers: Levers
    config_dir: Path
    extra_overrides: tuple[str, ...] = ()
    """``--set`` items, applied after the check's own overrides."""


def empty_result(preset: str) -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(PRESET_FIELDS)
    result.update(preset=preset, status="skipped", overrides=[], notes=[])
    return result


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - an unusable install counts as missing
        return False
    return True


def preset_overrides(raw: Any, preset: str, options: RunOptions, source: str) -> tuple[list[str], list[str], int]:
    """(overrides, notes, resolution) of one preset under the check's options."""
    train = raw.train
    resolution = raw.data.resolution if options.size == "real" else max(64, raw.data.resolution // 8)
    out = options.work_dir / "runs" / preset
    overrides = [
        f"model.source={source}",
        f"output_dir={out}",
        f"train.max_steps={options.steps}",
        "train.lr_warmup_steps=0",
        f"train.checkpoint.every_n_steps={options.checkpoint_every}",
        "train.validation.every_n_steps=0",
        "train.validation.max_samples=2",
        "train.validation.timesteps=[500]",
        "train.validation.num_images=2",
        "train.validation.image_steps=2",
        "train.log.progress_bar=false",
        "train.log.tensorboard=false",
        "train.log_memory_plan=false",  # the check asks the planner itself, once, and times it
    ]
    notes = [f"checkpoint every {options.checkpoint_every} step(s) (preset: every {train.checkpoint.every_n_steps})"]
    if train.resolution_schedule:
        overrides.append("train.resolution_schedule=[]")
        notes.append(f"resolution_schedule dropped: trained at {resolution} px throughout")
    if options.size == "tiny":
        overrides.append(f"data.resolution={resolution}")
    if options.device.type == "cpu":
        overrides += ["train.cpu=true", "model.dtype=fp32", "train.mixed_precision=no"]
        notes.append("CPU: fp32 weights, no autocast (bf16 on the CPU only slows the smoke run)")
    if train.optimizer == "adamw8bit" and (options.device.type == "cpu" or not _has_bitsandbytes()):
        overrides.append("train.optimizer=adamw")
        why = "on the CPU" if options.device.type == "cpu" else "bitsandbytes is not installed"
        notes.append(f"adamw8bit -> torch AdamW ({why}); optimizer state is 4x the preset's")
    overrides += list(options.extra_overrides)
    return overrides, notes, resolution


class _Timers:
    """Wall time inside wrapped callables (synchronising CUDA so the time is the work's).

    ``unless_inside``: a call made while a call of that key is running is not counted (the
    checkpoint writer's ``save`` waits for the previous write through its own ``wait``).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.active: set[str] = set()

    def wrap(self, owner: Any, name: str, key: str, unless_inside: str | None = None) -> bool:
        original = getattr(owner, name, None)
        if not callable(original):
            return False

        def timed(*args: Any, **kwargs: Any) -> Any:
            if unless_inside is not None and unless_inside in self.active:
                return original(*args, **kwargs)
            self.active.add(key)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.active.discard(key)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
                self.calls[key] = self.calls.get(key, 0) + 1

        setattr(owner, name, timed)
        return True


def free_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


@dataclass
class Prepared:
    """One preset's run config under the check's options, before anything is built."""

    preset: str
    config: Any
    choice: Any
    overrides: list[str]
    notes: list[str]
    resolution: int


def prepare(preset: str, options: RunOptions) -> Prepared:
    from furlora.config import load_config

    raw = load_config(options.config_dir / f"{preset}.yaml")
    inpainting = raw.train.objective == "inpaint" or "inpainting" in str(raw.model.source)
    choice = model_for(options.size, inpainting, options.work_dir)
    overrides, notes, resolution = preset_overrides(raw, preset, options, choice.source)
    config = load_config(options.config_dir / f"{preset}.yaml", overrides)
    return Prepared(preset, config, choice, overrides, notes, resolution)


def describe(prepared: Prepared, options: RunOptions) -> dict[str, Any]:
    """The result of a preset before it runs (what a skipped preset reports too)."""
    train = prepared.config.train
    result = empty_result(prepared.preset)
    result.update(
        model=f"{options.size} SDXL {'inpainting (9-channel)' if prepared.choice.inpainting else 'base'}",
        resolution=prepared.resolution, steps_requested=options.steps, warmup_steps=options.warmup_steps,
        overrides=list(prepared.overrides), notes=list(prepared.notes), optimizer=train.optimizer,
        mixed_precision=train.mixed_precision, gradient_checkpointing=train.gradient_checkpointing,
    )
    return result


def run_preset(
    prepared: Prepared,
    options: RunOptions,
    allowed_seconds: float,
    after_fit: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Train a prepared preset and measure it. ``after_fit(trainer)`` runs while its model is still loaded."""
    from furlora.train.trainer import Trainer

    result = describe(prepared, options)
    notes = result["notes"]
    started = time.perf_counter()
    device = options.device
    config, choice = prepared.config, prepared.choice
    train = config.train

    free_device(device)
    t0 = time.perf_counter()
    components = build_components(choice, config.model.dtype, config.model.vae_dtype, device)
    apply_to_components(options.levers, components, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    result["build_seconds"] = time.perf_counter() - t0

    step_ends: list[float] = []
    governor: StepGovernor | None = None

    def on_step(trainer: Any) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_ends.append(time.perf_counter())
        last = step_ends[-1] - step_ends[-2] if len(step_ends) > 1 else step_ends[-1] - fit_start
        if governor is not None and governor.should_stop(trainer.global_step, train.max_steps, last):
            trainer.run.settings.max_steps = trainer.global_step  # the loop ends after this step, cleanly

    t0 = time.perf_counter()
    trainer = Trainer(config, resume="never", components=components, callbacks=[on_step])
    timers = _Timers(device)
    for name in _ENCODER_METHODS:
        timers.wrap(trainer.run.encoder, name, "caching")
    timers.wrap(trainer, "save_checkpoint", "checkpoint")
    timers.wrap(trainer.writer, "wait", "checkpoint_wait", unless_inside="checkpoint")
    pass_timer = _Timers(device)
    restore = _time_cache_pass(pass_timer)
    compiled = compile_unet(options.levers, components)
    result["setup_seconds"] = time.perf_counter() - t0

    setup_spent = time.perf_counter() - started
    governor = StepGovernor(allowed=allowed_seconds - setup_spent, min_steps=min(train.max_steps, options.warmup_steps + 2),
                            tail_seconds=0.0)
    fit_start = time.perf_counter()
    try:
        with sdpa_context(options.levers.sdpa):
            summary = trainer.fit()
    finally:
        restore()
    fit_end = time.perf_counter()
    if device.type == "cuda":
        result["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        result["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    _step_times(result, fit_start, step_ends, options.warmup_steps, compiled)
    result["tail_seconds"] = fit_end - (step_ends[-1] if step_ends else fit_start)
    result["steps_run"] = int(summary.get("global_step", len(step_ends)))
    if result["steps_run"] < options.steps:
        notes.append(f"trimmed to {result['steps_run']} of {options.steps} steps to stay within the time budget")
    result["final_loss"] = summary.get("final_loss")
    result["cache_pass_seconds"] = pass_timer.seconds.get("cache_pass")
    result["caching_seconds"] = timers.seconds.get("caching", 0.0) + (result["cache_pass_seconds"] or 0.0)
    result["vae_encodes"] = trainer.run.encoder.vae_encodes
    cache = trainer.run.encoder.latent_cache
    result["cache_hits"] = getattr(cache, "hits", None)
    result["cache_misses"] = getattr(cache, "misses", None)
    result["checkpoints"] = timers.calls.get("checkpoint", 0)
    blocked = timers.seconds.get("checkpoint", 0.0) + timers.seconds.get("checkpoint_wait", 0.0)
    result["checkpoint_blocked_seconds"] = blocked
    steps_total = fit_end - fit_start
    result["checkpoint_blocked_share"] = blocked / steps_total if steps_total > 0 else None
    result["status"] = "ok"
    try:
        if after_fit is not None:
            after_fit(trainer)
    finally:
        del trainer, components
        free_device(device)
        result["total_seconds"] = time.perf_counter() - started
    return result


def _time_cache_pass(timers: _Timers) -> Callable[[], None]:
    """Time the trainer's latent-cache pass (``fill_latent_cache``, run before the first step);
    returns the function that undoes the wrapping. Without such a pass nothing is wrapped."""
    import furlora.train.trainer as trainer_module

    original = getattr(trainer_module, "fill_latent_cache", None)
    if original is None or not timers.wrap(trainer_module, "fill_latent_cache", "cache_pass"):
        return lambda: None
    return lambda: setattr(trainer_module, "fill_latent_cache", original)


def plan_run(config: Any, device_type: str) -> dict[str, Any]:
    """The planner's prediction for exactly this run. Runs in a worker process while the device
    trains (a real-size plan is a minute of single-core CPU work); never raises."""
    from furlora.memory import estimate, plan_input_from_config

    t0 = time.perf_counter()
    try:
        plan = estimate(plan_input_from_config(config, device=device_type))
    except Exception as exc:  # noqa: BLE001 - reported, never fatal
        return {"planned_bytes": None, "plan_seconds": None, "error": f"planner failed: {type(exc).__name__}: {exc}"}
    return {"planned_bytes": int(plan.total_bytes), "plan_seconds": time.perf_counter() - t0, "error": None}


def add_plan(result: dict[str, Any], plan: dict[str, Any]) -> None:
    """Put the planner's prediction and the measured/planned ratios into a preset's result."""
    result["planned_bytes"] = plan["planned_bytes"]
    result["plan_seconds"] = plan["plan_seconds"]
    if plan["error"]:
        result["notes"].append(plan["error"])
    _ratios(result)


def _step_times(result: dict[str, Any], fit_start: float, ends: list[float], warmup: int, compiled: bool) -> None:
    if not ends:
        return
    durations = [b - a for a, b in zip([fit_start, *ends[:-1]], ends)]
    result["time_to_first_step_seconds"] = durations[0]
    measured = durations[warmup:] if len(durations) > warmup else durations[1:] or durations
    if len(durations) <= warmup:
        result["notes"].append(f"only {len(durations)} step(s): s/step includes warm-up")
    result["seconds_per_step"] = statistics.median(measured)
    result["seconds_per_step_mean"] = statistics.fmean(measured)
    if compiled:
        # The first step compiles the UNet's forward and backward; the rest is a normal step.
        result["compile_seconds"] = max(0.0, durations[0] - result["seconds_per_step"])


def _ratios(result: dict[str, Any]) -> None:
    planned = result["planned_bytes"]
    if not planned:
        return
    if result["peak_reserved_bytes"] is not None:
        result["ratio_reserved_to_planned"] = result["peak_reserved_bytes"] / planned
    if result["peak_allocated_bytes"] is not None:
        result["ratio_allocated_to_planned"] = result["peak_allocated_bytes"] / planned
