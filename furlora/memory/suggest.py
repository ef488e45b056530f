"""The cheapest config changes that make a run fit a memory budget.

Rules are tried in the order that loses the least quality: first changes that cost nothing but
speed (fused attention, caches, gradient checkpointing, smaller micro-batches with more
accumulation), then small numeric costs (8-bit AdamW, bf16), then real quality costs (no
text-encoder training, lower rank, lower resolution, the worst for fine fur). Each change is a
config override; the changed config is validated and planned again, so every suggestion is a
config the planner itself accepts. A change that does not lower the estimate is skipped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from furlora.memory.adapter import plan_input_from_config
from furlora.memory.estimate import MemoryPlan, estimate
from furlora.memory.inputs import format_bytes

if TYPE_CHECKING:
    from furlora.config import RunConfig

logger = logging.getLogger(__name__)

#: Lowest values the rules go down to.
MIN_RANK = 4
MIN_RESOLUTION = 512
RESOLUTION_STEP = 128


@dataclass(frozen=True)
class Change:
    """One suggested change: config overrides (dotted key -> new value) and what it costs."""

    overrides: dict[str, Any]
    summary: str
    cost: str
    saves_bytes: int = 0

    def override_strings(self) -> list[str]:
        return [f"{k}={format_value(v)}" for k, v in self.overrides.items()]


@dataclass
class Suggestion:
    """The result of :func:`suggest`: the changes in order, the changed config and its plan."""

    changes: list[Change]
    config: RunConfig
    plan: MemoryPlan
    fits: bool
    original_plan: MemoryPlan
    notes: list[str] = field(default_factory=list)

    def overrides(self) -> list[str]:
        """``KEY=VALUE`` strings for ``--set`` (later changes of the same key win)."""
        merged: dict[str, Any] = {}
        for change in self.changes:
            merged.update(change.overrides)
        return [f"{k}={format_value(v)}" for k, v in merged.items()]


def format_value(value: Any) -> str:
    """A value as YAML flow text, as ``--set KEY=VALUE`` parses it back."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


# ----------------------------------------------------------------------------- rules

Rule = Callable[["RunConfig"], "Change | None"]


def _setting(key: str, value: Any, summary: str, cost: str) -> Rule:
    """The rule "set ``key`` (dotted) to ``value``"; nothing to suggest when the config already has it."""
    def rule(c: RunConfig) -> Change | None:
        return None if functools.reduce(getattr, key.split("."), c) == value else Change({key: value}, summary, cost)
    return rule


def _cache_text(c: RunConfig) -> Change | None:
    if c.train.cache_text_embeddings or any(c.lora.component(n).enabled for n in ("text_encoder", "text_encoder_2")):
        return None
    return Change({"train.cache_text_embeddings": True}, "cache text-encoder outputs", "none")


def _ema_cpu(c: RunConfig) -> Change | None:
    if not (c.train.ema.enabled and c.train.ema.device == "same"):
        return None
    return Change({"train.ema.device": "cpu"}, "keep the EMA copy on the CPU", "slightly slower EMA updates")


def _no_samples(c: RunConfig) -> Change | None:
    v = c.train.validation
    if v.path is None or not v.sample_images:
        return None
    return Change({"train.validation.sample_images": False}, "no sample images during training",
                  "no preview PNGs while training (the validation loss stays)")


def _smaller_batch(c: RunConfig) -> Change | None:
    t = c.train
    if t.batch_size <= 1:
        return None
    batch = t.batch_size // 2
    accumulation = t.gradient_accumulation_steps * t.batch_size // batch
    return Change({"train.batch_size": batch, "train.gradient_accumulation_steps": accumulation},
                  f"micro-batch {t.batch_size} -> {batch} with accumulation {accumulation}",
                  "same effective batch, slower")


def _bf16(c: RunConfig) -> Change | None:
    overrides: dict[str, Any] = {}
    if c.model.dtype == "fp32":
        overrides["model.dtype"] = "bf16"
    if c.train.mixed_precision == "no":
        overrides["train.mixed_precision"] = "bf16"
    if not overrides:
        return None
    return Change(overrides, "bf16 frozen weights and autocast (LoRA stays fp32)",
                  "small numeric cost; needs a bf16 GPU (NVIDIA Ampere or newer)")


def _no_text_training(c: RunConfig) -> Change | None:
    enabled = [n for n in ("text_encoder", "text_encoder_2") if c.lora.component(n).enabled]
    if not enabled or not c.lora.unet.enabled:
        return None
    return Change({f"lora.{n}.enabled": False for n in enabled}, "train the UNet only",
                  "the text encoders keep their base behaviour")


def _lower_rank(c: RunConfig) -> Change | None:
    ranks = {n: c.lora.component(n).rank for n in c.lora.enabled_components()}
    top = max(ranks.values())
    if top <= MIN_RANK:
        return None
    new = max(MIN_RANK, top // 2)
    overrides: dict[str, Any] = {f"lora.{n}.rank": new for n, r in ranks.items() if r == top}
    for n, r in ranks.items():
        if r == top:  # keep the alpha / rank scale of the update
            overrides[f"lora.{n}.alpha"] = c.lora.component(n).alpha * new / r
    return Change(overrides, f"LoRA rank {top} -> {new}", "less capacity for detail")


def _lower_resolution(c: RunConfig) -> Change | None:
    schedule = [p.resolution for p in c.train.resolution_schedule]
    top = max([c.data.resolution, *schedule])
    if top <= MIN_RESOLUTION:
        return None
    new = max(MIN_RESOLUTION, top - RESOLUTION_STEP)
    overrides: dict[str, Any] = {}
    if c.data.resolution > new:
        overrides["data.resolution"] = new
    if any(r > new for r in schedule):
        overrides["train.resolution_schedule"] = [
            {"step": p.step, "resolution": min(p.resolution, new)} for p in c.train.resolution_schedule
        ]
    return Change(overrides, f"resolution {top} -> {new} px", "the largest quality cost for fine texture")


#: (rule, may repeat) in the order that loses the least quality.
RULES: tuple[tuple[Rule, bool], ...] = (
    (_setting("train.attention", "sdpa", "fused scaled-dot-product attention",
              "none (in training, sliced attention keeps every slice for backward: more memory, not less)"), False),
    (_cache_text, False),
    (_setting("train.cache_latents", True, "cache VAE latents", "none"), False),
    (_ema_cpu, False),
    (_no_samples, False),
    (_setting("train.gradient_checkpointing", True, "gradient checkpointing", "about 30% slower steps, no quality cost"),
     False),
    (_smaller_batch, True),
    (_setting("train.optimizer", "adamw8bit", "8-bit AdamW (bitsandbytes)", "very small: optimizer state quantised"), False),
    (_bf16, False),
    (_no_text_training, False),
    (_lower_rank, True),
    (_lower_resolution, True),
)


# ----------------------------------------------------------------------------- search

def apply_changes(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A validated copy of ``config`` with dotted-key overrides applied, as ``--set KEY=VALUE`` applies them."""
    from furlora.config import apply_override, validate_config

    data = config.to_dict()
    for key, value in overrides.items():
        apply_override(data, f"{key}={format_value(value)}")
    return validate_config(data, source="<suggested config>")


def suggest(config: RunConfig, capacity_bytes: int, *, architecture: str | None = None,
            device: str | None = None, progress: Callable[[str], None] | None = None) -> Suggestion:
    """The cheapest list of changes (in quality order) after which the run fits ``capacity_bytes``.

    Returns the changes, the changed config and its plan; ``fits`` is False when even every
    rule together does not fit (the plan then shows how close it gets).
    """
    def plan_of(cfg: RunConfig) -> MemoryPlan:
        return estimate(plan_input_from_config(cfg, architecture=architecture, device=device))

    original = plan = plan_of(config)
    current = config
    changes: list[Change] = []
    for rule, repeats in RULES:
        while not plan.fits(capacity_bytes):
            change = rule(current)
            if change is None:
                break
            if progress is not None:
                progress(change.summary)
            candidate = apply_changes(current, change.overrides)
            candidate_plan = plan_of(candidate)
            saved = plan.total_bytes - candidate_plan.total_bytes
            if saved <= 0:
                logger.debug("skipping %s: saves nothing (%s)", change.summary, format_bytes(saved))
                break
            changes.append(Change(change.overrides, change.summary, change.cost, saved))
            current, plan = candidate, candidate_plan
            if not repeats:
                break
        if plan.fits(capacity_bytes):
            break
    notes = [] if plan.fits(capacity_bytes) else ["even all changes together do not fit"]
    return Suggestion(changes, current, plan, plan.fits(capacity_bytes), original, notes)
