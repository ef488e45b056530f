"""Memory planner: what a training run needs on the device, before it starts.

Public API::

    from furlora.memory import estimate, log_plan, plan_input_from_config, warn_if_exceeds
    plan = estimate(plan_input_from_config(config))   # MemoryPlan
    log_plan(config, free_bytes=torch.cuda.mem_get_info()[0])  # the trainer's start-up log
    print(plan.table(16 * GiB)); plan.total_bytes
    suggestion = suggest(config, 16 * GiB)            # cheapest changes that fit

Weights, LoRA, gradients and optimizer state are counted from the real module trees on the
meta device; activations come from a training step simulated on the meta device.
"""

from __future__ import annotations

from furlora.memory.adapter import architecture_of, log_plan, plan_input_from_config
from furlora.memory.estimate import MemoryPlan, PlanItem, estimate, verdict, warn_if_exceeds
from furlora.memory.inputs import GiB, MiB, LoraPlan, PlanInput, format_bytes, parse_memory_size
from furlora.memory.suggest import Change, Suggestion, suggest

__all__ = [
    "GiB",
    "MiB",
    "Change",
    "LoraPlan",
    "MemoryPlan",
    "PlanInput",
    "PlanItem",
    "Suggestion",
    "architecture_of",
    "estimate",
    "format_bytes",
    "log_plan",
    "parse_memory_size",
    "plan_input_from_config",
    "suggest",
    "verdict",
    "warn_if_exceeds",
]
