"""The memory plan: peak device memory of a training run, broken down the way people reason about it.

Peak = resident state + the largest *phase* peak + framework overhead, where

* resident state: frozen base weights of every component on the device (a cached and unloaded
  encoder counts zero), LoRA weights, their gradients, optimizer state, EMA copy;
* phases (never at the same time): the UNet training step (activations of forward + backward,
  plus a trained text encoder's activations), a VAE encode, a frozen text-encoder forward,
  sample generation during training (UNet with CFG, VAE decode; unloaded encoders come back),
  and on the CPU the loading of the weights: a component read from its safetensors file is held
  twice for a moment (the file's tensors, then the model's copy in ``model.dtype``), so loading
  the UNet, first, is the peak of many CPU runs (issue 12: a real-size run planned at 8.26 GiB
  peaked at 10.20 GiB while loading);
* overhead: on CUDA the context and kernels plus caching-allocator slack; on CPU the process
  baseline (Python, torch, diffusers) and the freed heap memory glibc keeps resident.

Weights, LoRA, gradients and optimizer state are counted exactly from the module trees;
activations come from simulated steps (:mod:`furlora.memory.activations`). Gradients are held
for the whole step (conservative: with accumulation they are).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from furlora.memory.activations import (
    StepSpec,
    text_encoder_step,
    unet_inference_peak,
    unet_training_step,
    vae_peak,
)
from furlora.memory.inputs import GiB, PlanInput, format_bytes
from furlora.memory.params import component_weight_bytes, dtype_size, lora_numels, optimizer_state_bytes

logger = logging.getLogger(__name__)

#: CUDA context, cuBLAS/cuDNN handles and loaded kernels (outside PyTorch's allocator). Typical
#: of recent drivers with lazy module loading; not measurable on this project's CPU machines.
CUDA_CONTEXT_BYTES = int(0.5 * GiB)
#: Caching-allocator fragmentation and convolution workspaces, as a fraction of the phase peak.
CUDA_ALLOCATOR_SLACK = 0.10
#: Resident memory of a Python process with torch, diffusers and peft imported (measured by
#: bench/sdxl_cpu_step.py on the project's CPU machine: 0.456 GiB).
CPU_PROCESS_BYTES = int(0.46 * GiB)
#: CPU only: the share of the forward pass's allocation volume that glibc's heap keeps resident
#: after it is freed (fragmentation; freed blocks under the dynamic mmap threshold stay in the
#: heap). Fitted on bench/sdxl_cpu_step.py: 0.31-0.35 for the real SDXL UNet at 512 and 768 px,
#: with and without checkpointing, and for the tiny UNet at 1024 px (see docs/memory.md).
CPU_HEAP_RETAINED = 0.33
#: Classifier-free guidance doubles the UNet batch when sampling.
CFG_BATCH = 2
#: The order furlora.models.sdxl.load_sdxl loads the components in.
LOAD_ORDER = ("unet", "vae", "text_encoder", "text_encoder_2")

COMPONENT_LABELS = {
    "unet": "UNet weights",
    "text_encoder": "text encoder 1 weights",
    "text_encoder_2": "text encoder 2 weights",
    "vae": "VAE weights",
}
PHASE_LABELS = {
    "train_step": "UNet training step (activations)",
    "vae_encode": "VAE encode",
    "text_encode": "text-encoder forward",
    "sampling": "sample images during training",
    "load": "loading the weights (CPU)",
}


@dataclass(frozen=True)
class PlanItem:
    """One row of the breakdown: a stable key, a label, bytes and a short note."""

    key: str
    label: str
    bytes: int
    note: str = ""


@dataclass
class MemoryPlan:
    """The estimate for one :class:`PlanInput`.

    ``resident``: rows held for the whole run. ``phases``: phase key -> bytes at the phase's
    peak on top of the resident rows (only the largest counts). ``overhead``: framework rows.
    ``total_bytes`` = sum(resident) + max(phases) + sum(overhead).
    """

    input: PlanInput
    resident: list[PlanItem]
    phases: dict[str, PlanItem]
    overhead: list[PlanItem]
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: self.phases[k].bytes)

    @property
    def resident_bytes(self) -> int:
        return sum(i.bytes for i in self.resident)

    @property
    def total_bytes(self) -> int:
        return self.resident_bytes + self.phases[self.peak_phase].bytes + sum(i.bytes for i in self.overhead)

    def fits(self, capacity_bytes: int) -> bool:
        """True when the estimated peak is at most ``capacity_bytes``."""
        return self.total_bytes <= capacity_bytes

    def stacked(self) -> list[PlanItem]:
        """The rows that add up to ``total_bytes`` (resident, the peak phase, overhead), for charts."""
        return [*self.resident, self.phases[self.peak_phase], *self.overhead]

    def table(self, capacity_bytes: int | None = None) -> str:
        """The breakdown as an aligned text table, with the verdict when ``capacity_bytes`` is given."""
        rows: list[tuple[str, str, str]] = [("resident for the whole run", "", "")]
        rows += [(f"  {i.label}", format_bytes(i.bytes), i.note) for i in self.resident]
        rows.append(("peak of one phase (the largest counts)", "", ""))
        peak = self.peak_phase
        for key, item in self.phases.items():
            mark = "  <- peak" if key == peak else ""
            rows.append((f"  {item.label}", format_bytes(item.bytes), item.note + mark))
        rows.append(("framework overhead", "", ""))
        rows += [(f"  {i.label}", format_bytes(i.bytes), i.note) for i in self.overhead]
        rows.append(("total (estimated peak)", format_bytes(self.total_bytes), f"{self.total_bytes / GiB:.2f} GiB"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b:>11}  {c}".rstrip() for a, b, c in rows]
        if capacity_bytes is not None:
            lines.append(verdict(self, capacity_bytes))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self, capacity_bytes: int | None = None) -> dict[str, Any]:
        """JSON-ready form: input, rows, phases, total, and the verdict when a capacity is given."""
        out: dict[str, Any] = {
            "input": self.input.describe(),
            "resident": [vars(i) for i in self.resident],
            "phases": {k: vars(v) for k, v in self.phases.items()},
            "peak_phase": self.peak_phase,
            "overhead": [vars(i) for i in self.overhead],
            "total_bytes": self.total_bytes,
            "notes": list(self.notes),
        }
        if capacity_bytes is not None:
            out["capacity_bytes"] = capacity_bytes
            out["fits"] = self.fits(capacity_bytes)
            out["headroom_bytes"] = capacity_bytes - self.total_bytes
        return out


def verdict(plan: MemoryPlan, capacity_bytes: int, hint: bool = True) -> str:
    """One line: fits with how much headroom, or exceeds by how much (``hint``: point at --suggest)."""
    headroom = capacity_bytes - plan.total_bytes
    where = "GPU" if plan.input.device == "cuda" else "memory"
    if headroom >= 0:
        return f"verdict: FITS in {format_bytes(capacity_bytes)} {where} ({format_bytes(headroom)} headroom)"
    return (f"verdict: DOES NOT FIT in {format_bytes(capacity_bytes)} {where} "
            f"(over by {format_bytes(-headroom)}{'; try --suggest' if hint else ''})")


# ----------------------------------------------------------------------------- estimate

def estimate(plan_input: PlanInput) -> MemoryPlan:
    """Estimate the peak memory of a run. Validates the input first (ConfigError on bad fields)."""
    p = plan_input.validate()
    arch = p.architecture
    h, w = p.resolution
    autocast = None if p.mixed_precision == "no" else p.mixed_precision
    te_lora = tuple((c, p.lora[c]) for c in ("text_encoder", "text_encoder_2") if c in p.lora)
    te_resident = p.text_encoders_resident or bool(te_lora)  # a trained encoder is always resident

    resident = [_weights(arch, "unet", p.weight_dtype, True),
                _weights(arch, "text_encoder", p.weight_dtype, te_resident),
                _weights(arch, "text_encoder_2", p.weight_dtype, te_resident),
                _weights(arch, "vae", p.vae_dtype, p.vae_resident)]

    numels = lora_numels(arch, p.lora)
    n_lora = sum(numels)
    lora_size = dtype_size(p.lora_dtype)
    where = ", ".join(f"{c} r{plan.rank}" for c, plan in p.lora.items())
    resident.append(PlanItem("lora", "LoRA weights", n_lora * lora_size, f"{n_lora:,} parameters ({where}), {p.lora_dtype}"))
    resident.append(PlanItem("gradients", "gradients", n_lora * lora_size, f"LoRA only, {p.lora_dtype}"))
    resident.append(PlanItem("optimizer", "optimizer state", optimizer_state_bytes(numels, p.optimizer, p.lora_dtype),
                             "AdamW 8-bit (bitsandbytes)" if p.optimizer == "adamw8bit" else f"AdamW, 2 x {p.lora_dtype}"))
    resident.append(PlanItem("ema", "EMA of LoRA weights", n_lora * 4 if p.ema else 0,
                             "fp32 copy on the device" if p.ema else "off (or kept on the CPU)"))

    phases: dict[str, PlanItem] = {}
    spec = StepSpec(
        architecture=arch, height=h, width=w, batch=p.batch_size, weight_dtype=p.weight_dtype,
        lora_dtype=p.lora_dtype, autocast=autocast, gradient_checkpointing=p.gradient_checkpointing,
        attention=p.attention, lora=p.lora.get("unet"),
        text_requires_grad=bool(te_lora), prior_preservation=p.prior_preservation,
    )
    step = unet_training_step(spec)
    te_saved = text_encoder_step(arch, p.batch_size, p.weight_dtype, p.lora_dtype, autocast, te_lora,
                                 p.gradient_checkpointing).saved if te_lora else 0
    note = (f"{h}x{w} px, batch {p.batch_size}, {'checkpointing, ' if p.gradient_checkpointing else ''}"
            f"{p.attention} attention, {autocast or p.weight_dtype}")
    if te_saved:
        note += f", incl. {format_bytes(te_saved)} of trained text encoders"
    phases["train_step"] = PlanItem("train_step", PHASE_LABELS["train_step"], step.peak + te_saved, note)
    allocated = step.forward_allocated
    if p.vae_resident and p.encode_latents_per_step:
        encode = vae_peak(arch, h, w, 1, p.vae_dtype, "encode")
        allocated = max(allocated, encode.forward_allocated)
        phases["vae_encode"] = PlanItem("vae_encode", PHASE_LABELS["vae_encode"], encode.peak,
                                        f"one image at a time, {p.vae_dtype}")
    if p.text_encoders_resident and p.encode_text_per_step and not te_lora:
        te = text_encoder_step(arch, p.batch_size, p.weight_dtype, p.lora_dtype, autocast, ())
        phases["text_encode"] = PlanItem("text_encode", PHASE_LABELS["text_encode"], te.peak, "no grad")
    if p.sample_during_training:
        phases["sampling"] = _sampling_phase(p, resident, autocast)

    overhead = _overhead(p, max(item.bytes for item in phases.values()), allocated)
    if p.device == "cpu":
        phases["load"] = _load_phase(p, resident, overhead)
    notes = []
    if p.gradient_accumulation_steps > 1:
        notes.append(f"gradient accumulation x{p.gradient_accumulation_steps} does not change the peak")
    return MemoryPlan(p, resident, phases, overhead, notes)


def _weights(arch: str, component: str, dtype: str, resident: bool) -> PlanItem:
    if not resident:
        return PlanItem(component, COMPONENT_LABELS[component], 0, "cached outputs, unloaded")
    return PlanItem(component, COMPONENT_LABELS[component], component_weight_bytes(arch, component, dtype), dtype)


def _sampling_phase(p: PlanInput, resident: list[PlanItem], autocast: str | None) -> PlanItem:
    """Sample generation: gradients are freed; unloaded encoders are loaded for it."""
    h, w = p.resolution
    arch = p.architecture
    grads = next(i.bytes for i in resident if i.key == "gradients")
    reload = sum(component_weight_bytes(arch, i.key, p.vae_dtype if i.key == "vae" else p.weight_dtype)
                 for i in resident if i.key in ("text_encoder", "text_encoder_2", "vae") and i.bytes == 0)
    unet = unet_inference_peak(arch, h, w, CFG_BATCH, p.weight_dtype, autocast, p.attention)
    decode = vae_peak(arch, h, w, 1, p.vae_dtype, "decode").peak
    note = f"max(UNet x{CFG_BATCH} CFG, VAE decode {format_bytes(decode)})"
    if reload:
        note += f" + {format_bytes(reload)} of encoders loaded back"
    return PlanItem("sampling", PHASE_LABELS["sampling"], max(0, max(unet, decode) + reload - grads), note)


def weight_file_dtype(architecture: str, weight_dtype: str) -> str:
    """The dtype of the weight files a run reads: from the UNet file's header for a local
    folder; fp16 for the embedded tiny models; for a hub model the set a download fetches
    (fp16 files for fp16 / bf16 weights, fp32 files otherwise)."""
    from pathlib import Path

    from furlora.models.tiny import TINY_MODELS, TINY_VARIANT

    if architecture in TINY_MODELS:
        return TINY_VARIANT
    folder = Path(architecture)
    if folder.is_dir():
        from safetensors import safe_open

        unet = folder / "unet"
        variant = "fp16" if not (unet / "diffusion_pytorch_model.safetensors").is_file() else None
        files = sorted(unet.glob(f"diffusion_pytorch_model{'.fp16' if variant else ''}*.safetensors"))
        if files:
            with safe_open(str(files[0]), framework="pt") as handle:
                first = next(iter(handle.keys()), None)
                if first is not None:
                    kind = handle.get_slice(first).get_dtype()
                    return {"F16": "fp16", "BF16": "bf16"}.get(kind, "fp32")
    return "fp16" if weight_dtype in ("fp16", "bf16") else "fp32"


def _load_phase(p: PlanInput, resident: list[PlanItem], overhead: list[PlanItem]) -> PlanItem:
    """CPU: loading one component holds its file's tensors and its model copy at once.

    Loaded in :data:`LOAD_ORDER`; the peak is the largest (components loaded so far + the file
    of the one being loaded), before any LoRA, optimizer or forward pass exists. Expressed on
    top of the resident rows and the overhead like every phase (it is smaller than them by the
    parts that do not exist yet).
    """
    file_dtype = weight_file_dtype(p.architecture, p.weight_dtype)  # the VAE's file too: one weight set
    loaded = 0
    peak, during = 0, LOAD_ORDER[0]
    for component in LOAD_ORDER:
        weights = next(i.bytes for i in resident if i.key == component)
        if weights == 0:
            continue  # an unloaded component (cached outputs) is not counted
        loaded += weights
        held = loaded + component_weight_bytes(p.architecture, component, file_dtype)
        if held > peak:
            peak, during = held, component
    # No LoRA, optimizer state or EMA exists yet, and no forward pass has left heap behind.
    not_yet = sum(i.bytes for i in resident) + sum(i.bytes for i in overhead if i.key == "heap")
    return PlanItem("load", PHASE_LABELS["load"], max(0, peak - not_yet),
                    f"{during} weights + its {file_dtype} file: {format_bytes(peak)} at that moment")


def _overhead(p: PlanInput, phase_peak: int, forward_allocated: int) -> list[PlanItem]:
    if p.device == "cpu":
        return [
            PlanItem("process", "Python process baseline", CPU_PROCESS_BYTES, "torch + diffusers + peft imported"),
            PlanItem("heap", "CPU heap kept by malloc", int(CPU_HEAP_RETAINED * forward_allocated),
                     f"{CPU_HEAP_RETAINED:.0%} of the {format_bytes(forward_allocated)} a forward pass allocates"),
        ]
    return [
        PlanItem("cuda_context", "CUDA context and kernels", CUDA_CONTEXT_BYTES, "typical; outside the allocator"),
        PlanItem("allocator", "allocator slack", int(CUDA_ALLOCATOR_SLACK * phase_peak),
                 f"{CUDA_ALLOCATOR_SLACK:.0%} of the phase peak"),
    ]


def warn_if_exceeds(plan: MemoryPlan, free_bytes: int, log: logging.Logger | None = None) -> bool:
    """Log a warning when the plan needs more than ``free_bytes``; return True if it does.

    ``free_bytes``: free device memory before any weight is loaded, e.g. ``torch.cuda.mem_get_info()[0]``
    once the CUDA context exists; the context's share of the plan is then not counted again.
    """
    log = log or logger
    needed = plan.total_bytes - sum(i.bytes for i in plan.overhead if i.key == "cuda_context")
    if needed <= free_bytes:
        log.info("memory plan: %s needed, %s free", format_bytes(needed), format_bytes(free_bytes))
        return False
    log.warning(
        "memory plan: this run needs about %s but only %s is free; expect an out-of-memory error. "
        "Run `furlora plan CONFIG --gpu-memory <size> --suggest` for the cheapest changes that fit.",
        format_bytes(needed), format_bytes(free_bytes),
    )
    return True
