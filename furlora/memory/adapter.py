"""The one place that reads a run config for the planner: RunConfig -> :class:`PlanInput`.

Config field names appear only here, so a renamed setting breaks one function (and its test).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from furlora.errors import ConfigError, ModelLoadError
from furlora.memory.estimate import MemoryPlan, estimate, warn_if_exceeds
from furlora.memory.inputs import ARCHITECTURES, LoraPlan, PlanInput
from furlora.memory.params import lora_targets, meta_component

if TYPE_CHECKING:
    from furlora.config import RunConfig

logger = logging.getLogger(__name__)

#: Public SDXL hub ids whose architecture ships with furlora (no download needed to plan).
KNOWN_SOURCES: dict[str, str] = {
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl-meta",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": "sdxl-inpaint-meta",
}

#: Does the trainer move frozen text encoders off the device once their outputs are cached?
#: furlora's trainer fills its caches on the fly (a new caption is encoded during training), so
#: the encoders stay resident; switch this when the trainer pre-encodes and unloads them.
UNLOADS_CACHED_TEXT_ENCODERS = False
#: The same for the VAE with cached latents (a new crop / flip / mask is a cache miss, and the
#: inpainting objective encodes each masked image), so the VAE stays resident.
UNLOADS_VAE_WITH_CACHED_LATENTS = False


def architecture_of(source: str) -> str:
    """The planner architecture of a ``model.source``: a named one, or a local diffusers folder."""
    if source in ARCHITECTURES or source in KNOWN_SOURCES:
        return KNOWN_SOURCES.get(source, source)
    from furlora.models.sdxl import resolve_model_path

    try:
        return str(resolve_model_path(source))
    except ModelLoadError:
        raise ConfigError(
            f"model.source {source!r} is not available locally, so its architecture is unknown; "
            f"plan with an explicit architecture (furlora plan ... --architecture sdxl-meta or sdxl-inpaint-meta)"
        ) from None


def plan_input_from_config(config: RunConfig, *, architecture: str | None = None,
                           device: str | None = None) -> PlanInput:
    """Build the planner input of a validated run config.

    ``architecture`` overrides the one derived from ``model.source`` (for models not present
    locally); ``device`` ("cuda" / "cpu") overrides ``train.cpu``. LoRA targets are resolved on
    the meta-device module tree with furlora.lora.targets, as training resolves them.
    """
    arch = architecture or architecture_of(config.model.source)
    train = config.train
    resolution = max([config.data.resolution, *(p.resolution for p in train.resolution_schedule)])
    lora: dict[str, LoraPlan] = {}
    for name in config.lora.enabled_components():
        section = config.lora.component(name)
        targets = lora_targets(name, meta_component(arch, name), section)
        lora[name] = LoraPlan(rank=section.rank, targets=targets, dropout=section.dropout, use_dora=section.use_dora)
    trains_text = any(c in lora for c in ("text_encoder", "text_encoder_2"))
    te_resident = trains_text or not train.cache_text_embeddings or not UNLOADS_CACHED_TEXT_ENCODERS
    vae_resident = not (train.cache_latents and UNLOADS_VAE_WITH_CACHED_LATENTS)
    plan_device = device or ("cpu" if train.cpu else "cuda")
    return PlanInput(
        architecture=arch,
        resolution=(resolution, resolution),
        batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        weight_dtype=config.model.dtype,
        vae_dtype=config.model.vae_dtype,
        mixed_precision=train.mixed_precision,
        lora_dtype="fp32",  # the trainer keeps LoRA weights in fp32 (train.mixed_precision's contract)
        lora=lora,
        gradient_checkpointing=train.gradient_checkpointing,
        attention=train.attention,
        optimizer=train.optimizer,
        text_encoders_resident=te_resident,
        vae_resident=vae_resident,
        encode_latents_per_step=vae_resident,
        encode_text_per_step=te_resident and not trains_text,
        # EMA "on the CPU" is in the planned memory when the plan is for the CPU.
        ema=train.ema.enabled and (train.ema.device == "same" or plan_device == "cpu"),
        prior_preservation=train.loss.prior_preservation_weight > 0,
        sample_during_training=train.validation.path is not None and train.validation.sample_images,
        device=plan_device,
    ).validate()


def cache_notes(config: RunConfig) -> list[str]:
    """Plan notes for caches a config asks for that cannot apply, naming the key (the trainer warns the same)."""
    train = config.train
    notes = []
    if not train.cache_latents:
        notes.append("train.cache_latents is false: every micro-step runs a VAE encode (two with the 9-channel objective)")
    trains_text = any(config.lora.component(c).enabled for c in ("text_encoder", "text_encoder_2"))
    tokens = config.tokens.enabled
    if train.cache_text_embeddings and (trains_text or tokens):
        what = "tokens.enabled" if tokens else "a text-encoder LoRA (lora.text_encoder*)"
        notes.append(f"train.cache_text_embeddings cannot apply: {what} trains, so text embeddings are computed every step")
    return notes


def log_plan(config: RunConfig, *, device: str | None = None, free_bytes: int | None = None,
             architecture: str | None = None, log: logging.Logger | None = None) -> MemoryPlan | None:
    """For the trainer's start-up: estimate ``config``'s plan, log its table, warn if it will not fit.

    ``free_bytes``: free device memory (``torch.cuda.mem_get_info()[0]``), or None to skip the
    check. Returns the plan, or None when it could not be made: the plan is advice, so a planner
    failure is logged as a warning and never stops a run that has already validated.
    """
    log = log or logger
    try:
        plan = estimate(plan_input_from_config(config, architecture=architecture, device=device))
    except Exception as exc:  # noqa: BLE001  (advice only: never block training on it)
        log.warning("memory plan unavailable (%s: %s)", type(exc).__name__, exc)
        return None
    plan.notes.extend(cache_notes(config))
    log.info("memory plan (furlora plan):\n%s", plan.table())
    if free_bytes is not None:
        warn_if_exceeds(plan, free_bytes, log)
    return plan
