"""Activation memory: simulated steps of the real module trees on the meta device.

The activation model is not a formula: each function below builds the component on the meta
device (its real architecture, LoRA injected by peft as in training), runs the step the trainer
runs (UNet forward, masked MSE loss, backward; a no-grad VAE encode; ...) under
:class:`~furlora.memory.simulate.LiveBytes`, and reports the peak of live bytes above the
resident weights. So it follows resolution, batch size, gradient checkpointing, the attention
implementation and the precision exactly as the code paths do; results are cached per setting.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from furlora.memory.inputs import LoraPlan
from furlora.memory.params import component_configs, inject_lora, meta_component, trainable_parameters
from furlora.memory.simulate import AutocastEmulation, FusedAttention, LiveBytes
from furlora.models.device import DTYPES

logger = logging.getLogger(__name__)

#: Text length of both SDXL CLIP encoders.
TOKENS = 77


@dataclass(frozen=True)
class StepSpec:
    """One simulated UNet training step (hashable: results are cached per spec)."""

    architecture: str
    height: int
    """Pixels (the latent side is height / VAE scale)."""
    width: int
    batch: int
    weight_dtype: str
    lora_dtype: str
    autocast: str | None
    """fp16 / bf16 for mixed precision, None for none."""
    gradient_checkpointing: bool
    attention: str
    lora: LoraPlan | None
    text_requires_grad: bool = False
    """The text embeddings come from a trained encoder (gradients flow into them)."""
    prior_preservation: bool = False


@dataclass(frozen=True)
class ActivationEstimate:
    """Simulated activation memory of one step, in bytes, above the resident weights.

    ``peak``: the highest live total during the step (gradients of trainable weights excluded:
    the planner counts them separately). ``saved``: bytes alive at the end of the forward pass
    (what autograd keeps for backward, plus the loss). ``forward_allocated``: bytes allocated
    during the forward pass, frees ignored (what a CPU heap allocator may keep; see
    :data:`furlora.memory.estimate.CPU_HEAP_RETAINED`).
    """

    peak: int
    saved: int
    forward_allocated: int = 0


def latent_geometry(architecture: str) -> tuple[int, int]:
    """(VAE downscale factor, latent channels) of ``architecture``."""
    vae = component_configs(architecture)["vae"]
    return 2 ** (len(vae["block_out_channels"]) - 1), int(vae.get("latent_channels", 4))


def _attention_setup(module: nn.Module, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    if attention == "math":
        module.set_attn_processor(AttnProcessor())
    elif attention == "sliced":
        module.set_attention_slice("auto")


def _modes(tracker: LiveBytes, autocast: str | None) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(tracker)
    stack.enter_context(FusedAttention())
    if autocast is not None:
        stack.enter_context(AutocastEmulation(DTYPES[autocast]))
    return stack


def _unet_inputs(architecture: str, height: int, width: int, batch: int, weight_dtype: str, autocast: str | None) -> dict:
    """Meta-device UNet inputs; float32 under autocast or with fp32 weights, else the weights' dtype."""
    dtype = torch.float32 if autocast or weight_dtype == "fp32" else DTYPES[weight_dtype]
    config = component_configs(architecture)["unet"]
    scale, _ = latent_geometry(architecture)
    h, w = height // scale, width // scale
    pooled = int(config["projection_class_embeddings_input_dim"]) - 6 * int(config["addition_time_embed_dim"])
    with torch.device("meta"):
        return {
            "sample": torch.empty(batch, int(config["in_channels"]), h, w, dtype=dtype),
            "timestep": torch.zeros(batch, dtype=torch.long),
            "encoder_hidden_states": torch.empty(batch, TOKENS, int(config["cross_attention_dim"]), dtype=dtype),
            "added_cond_kwargs": {
                "text_embeds": torch.empty(batch, pooled, dtype=dtype),
                "time_ids": torch.empty(batch, 6, dtype=torch.float32),
            },
        }


def _all_tensors(tree: object) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _resident(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` with the simulation's function modes still active.

    ``Tensor.backward`` / ``torch.autograd.backward`` are themselves torch functions: a function
    mode handling them is switched off while they run, so checkpoint recomputation inside
    backward would lose the fused attention and autocast rules (and fail its shape check).
    Calling the engine directly keeps the modes on.
    """
    from torch.autograd.graph import _engine_run_backward

    _engine_run_backward((loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True,
                         accumulate_grad=True)


@lru_cache(maxsize=128)
def unet_training_step(spec: StepSpec) -> ActivationEstimate:
    """Simulate one UNet training step: forward, fp32 masked MSE loss, backward."""
    unet = meta_component(spec.architecture, "unet", spec.weight_dtype)
    if spec.lora is not None:
        unet = inject_lora(unet, "unet", spec.lora, spec.lora_dtype)
    _attention_setup(unet, spec.attention)
    if spec.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    inputs = _unet_inputs(spec.architecture, spec.height, spec.width, spec.batch, spec.weight_dtype, spec.autocast)
    if spec.text_requires_grad:
        inputs["encoder_hidden_states"].requires_grad_(True)
        inputs["added_cond_kwargs"]["text_embeds"].requires_grad_(True)
    with torch.device("meta"):
        target = torch.empty(spec.batch, 4, *inputs["sample"].shape[2:], dtype=torch.float32)
        weights = torch.empty(spec.batch, 1, *inputs["sample"].shape[2:], dtype=torch.float32)
    tracker = LiveBytes([*_resident(unet), *_all_tensors(inputs), target, weights])
    with _modes(tracker, spec.autocast):
        base = None
        if spec.prior_preservation:
            with torch.no_grad():
                base = unet(**inputs, return_dict=False)[0].float()
        prediction = unet(**inputs, return_dict=False)[0]
        error = (prediction.float() - target) ** 2
        loss = (error * weights).sum() / weights.sum()
        if base is not None:
            loss = loss + ((prediction.float() - base) ** 2 * (1 - weights)).mean()
        del prediction, error, base
        saved = tracker.live
        forward_end = tracker.mark()
        _backward(loss)
        del loss
    grads = [p.grad for p in trainable_parameters(unet) if p.grad is not None]
    peak, _ = tracker.peak_excluding(tracker.keys_of(grads))
    return ActivationEstimate(peak=peak, saved=saved, forward_allocated=tracker.allocated(0, forward_end))


@lru_cache(maxsize=64)
def unet_inference_peak(architecture: str, height: int, width: int, batch: int, weight_dtype: str,
                        autocast: str | None, attention: str) -> int:
    """Peak bytes of one no-grad UNet forward (sampling: batch = 2 x images for CFG)."""
    unet = meta_component(architecture, "unet", weight_dtype).eval()
    _attention_setup(unet, attention)
    inputs = _unet_inputs(architecture, height, width, batch, weight_dtype, autocast)
    tracker = LiveBytes([*_resident(unet), *_all_tensors(inputs)])
    with _modes(tracker, autocast), torch.no_grad():
        out = unet(**inputs, return_dict=False)[0]
        del out
    return tracker.peak


@lru_cache(maxsize=64)
def vae_peak(architecture: str, height: int, width: int, batch: int, dtype: str, mode: str) -> ActivationEstimate:
    """A no-grad VAE ``encode`` (pixels -> latent mean) or ``decode`` (latents -> pixels): its peak bytes."""
    vae = meta_component(architecture, "vae", dtype).eval()
    scale, channels = latent_geometry(architecture)
    with torch.device("meta"):
        if mode == "encode":
            x = torch.empty(batch, 3, height, width, dtype=DTYPES[dtype])
        else:
            x = torch.empty(batch, channels, height // scale, width // scale, dtype=DTYPES[dtype])
    tracker = LiveBytes([*_resident(vae), x])
    with _modes(tracker, None), torch.no_grad():
        out = vae.encode(x).latent_dist.mean.float() if mode == "encode" else vae.decode(x).sample
        del out
    return ActivationEstimate(peak=tracker.peak, saved=0, forward_allocated=tracker.allocated())


@lru_cache(maxsize=64)
def text_encoder_step(architecture: str, batch: int, weight_dtype: str, lora_dtype: str, autocast: str | None,
                      lora: tuple[tuple[str, LoraPlan], ...], gradient_checkpointing: bool = False) -> ActivationEstimate:
    """Both text encoders on ``batch`` captions, as the trainer calls them (all hidden states kept).

    ``lora``: (component, LoraPlan) pairs of the encoders that train; empty: a no-grad forward.
    ``gradient_checkpointing``: on the trained encoders (the trainer turns it on with the UNet's).
    ``saved`` is what stays alive for backward (the trained encoders' activations).
    """
    plans = dict(lora)
    encoders = []
    for name in ("text_encoder", "text_encoder_2"):
        module = meta_component(architecture, name, weight_dtype)
        if name in plans:
            module = inject_lora(module, name, plans[name], lora_dtype)
            if gradient_checkpointing:
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        encoders.append(module.train() if name in plans else module.eval())
    with torch.device("meta"):
        ids = torch.zeros(batch, TOKENS, dtype=torch.long)
    tracker = LiveBytes([*_resident(encoders[0]), *_resident(encoders[1]), ids])
    grad = torch.enable_grad() if plans else torch.no_grad()
    with _modes(tracker, autocast), grad:
        out_1 = encoders[0](ids, output_hidden_states=True)
        out_2 = encoders[1](ids, output_hidden_states=True)
        embeds = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
        pooled = out_2.text_embeds
        del out_1, out_2
        saved = tracker.live
        del embeds, pooled
    return ActivationEstimate(peak=tracker.peak, saved=saved if plans else 0)
