"""Module names of the kohya LoRA format (ComfyUI, A1111, Forge) <-> diffusers module names.

kohya trains SDXL on Stability's original ("sgm" / LDM) UNet, so its keys use that model's
block naming, with dots replaced by underscores::

    diffusers  unet  down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q
    sgm              input_blocks.4.1.transformer_blocks.0.attn1.to_q
    kohya            lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q

    diffusers  text_encoder    text_model.encoder.layers.0.self_attn.q_proj
    kohya                      lora_te1_text_model_encoder_layers_0_self_attn_q_proj
    (text_encoder_2 -> lora_te2_...)

The UNet block mapping (``L`` = layers_per_block, 2 for SDXL): down block ``i`` resnet /
attention ``j`` -> ``input_blocks.{1 + i(L+1) + j}.{0|1}``, its downsampler ->
``input_blocks.{(i+1)(L+1)}.0.op``; mid block resnet 0 / attention / resnet 1 ->
``middle_block.0/1/2``; up block ``i`` resnet / attention ``j`` -> ``output_blocks.{i(L+1) + j}.{0|1}``,
its upsampler -> ``output_blocks.{i(L+1) + L}.2.conv`` (SDXL's upsampling stages all have
attention, so the upsampler is the third entry). Resnet internals are renamed too
(conv1 -> in_layers.2, conv2 -> out_layers.3, time_emb_proj -> emb_layers.1, conv_shortcut ->
skip_connection); attention internals keep their names.

Underscores are ambiguous in kohya names, so parsing splits them with a vocabulary of the
multi-word names that occur in SDXL's UNet and CLIP encoders.
"""

from __future__ import annotations

import re

from furlora.errors import LoraFormatError

KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}

_RESNET_TO_SGM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_FROM_SGM = {v: k for k, v in _RESNET_TO_SGM.items()}
_TOP_TO_SGM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_TOP_FROM_SGM = {v: k for k, v in _TOP_TO_SGM.items()}

#: Multi-word names (joined by "_") in SDXL UNet (sgm naming) and CLIP module names.
_VOCABULARY = frozenset({
    "input_blocks", "middle_block", "output_blocks", "transformer_blocks", "proj_in", "proj_out",
    "to_q", "to_k", "to_v", "to_out", "in_layers", "out_layers", "emb_layers", "skip_connection",
    "time_embed", "label_emb", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    "text_projection", "final_layer_norm", "layer_norm1", "layer_norm2", "token_embedding",
    "position_embedding",
})
_MAX_WORDS = 3

#: Module paths inside an SDXL transformer (attention) block and inside a CLIP text encoder.
_ATTENTION_INNER = re.compile(
    r"(proj_in|proj_out|norm|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|norm[123]))"
)
_TEXT_MODULE = re.compile(
    r"text_model\.(encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12]|layer_norm[12])"
    r"|final_layer_norm|embeddings\.(token|position)_embedding)|text_projection"
)


def unet_to_sgm(name: str, layers_per_block: int = 2) -> str:
    """diffusers UNet module name -> original SDXL (sgm) module name. ValueError if not mappable."""
    if name in _TOP_TO_SGM:
        return _TOP_TO_SGM[name]
    parts = name.split(".")
    step = layers_per_block + 1
    try:
        if parts[0] == "mid_block":
            kind, index = parts[1], int(parts[2])
            sub = {("resnets", 0): "0", ("attentions", 0): "1", ("resnets", 1): "2"}[(kind, index)]
            return ".".join(["middle_block", sub, *_map_inner(kind, parts[3:], _RESNET_TO_SGM)])
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if parts[0] == "down_blocks":
            if kind == "downsamplers" and rest == ["conv"]:
                return f"input_blocks.{(i + 1) * step}.0.op"
            slot = {"resnets": "0", "attentions": "1"}[kind]
            return ".".join(["input_blocks", str(1 + i * step + j), slot, *_map_inner(kind, rest, _RESNET_TO_SGM)])
        if parts[0] == "up_blocks":
            if kind == "upsamplers" and rest == ["conv"]:
                return f"output_blocks.{i * step + layers_per_block}.2.conv"
            slot = {"resnets": "0", "attentions": "1"}[kind]
            return ".".join(["output_blocks", str(i * step + j), slot, *_map_inner(kind, rest, _RESNET_TO_SGM)])
    except (IndexError, KeyError, ValueError):
        pass
    raise ValueError(f"UNet module {name!r} has no SDXL (sgm) name")


def _map_inner(kind: str, rest: list[str], resnet_names: dict[str, str]) -> list[str]:
    """Map the part of a module name inside a block; attention internals are named alike in both
    namings, resnet internals through ``resnet_names``. KeyError if the name is not mappable."""
    joined = ".".join(rest)
    if kind == "attentions" and _ATTENTION_INNER.fullmatch(joined):
        return rest
    if kind == "resnets" and joined in resnet_names:
        return resnet_names[joined].split(".")
    raise KeyError(joined)


def sgm_to_unet(name: str, layers_per_block: int = 2) -> str:
    """Original SDXL (sgm) module name -> diffusers UNet module name. ValueError if not mappable."""
    if name in _TOP_FROM_SGM:
        return _TOP_FROM_SGM[name]
    parts = name.split(".")
    step = layers_per_block + 1
    try:
        if parts[0] == "middle_block":
            kind, index = {"0": ("resnets", 0), "1": ("attentions", 0), "2": ("resnets", 1)}[parts[1]]
            return ".".join(["mid_block", kind, str(index), *_map_inner(kind, parts[2:], _RESNET_FROM_SGM)])
        k, slot, rest = int(parts[1]), parts[2], parts[3:]
        if parts[0] == "input_blocks" and k > 0:
            i, j = divmod(k - 1, step)
            if j == layers_per_block:
                if slot == "0" and rest == ["op"]:
                    return f"down_blocks.{i}.downsamplers.0.conv"
                raise KeyError(name)
            kind = {"0": "resnets", "1": "attentions"}[slot]
            return ".".join(["down_blocks", str(i), kind, str(j), *_map_inner(kind, rest, _RESNET_FROM_SGM)])
        if parts[0] == "output_blocks":
            i, j = divmod(k, step)
            if rest == ["conv"] and slot in ("1", "2"):  # upsampler (slot 1 when the stage has no attention)
                return f"up_blocks.{i}.upsamplers.0.conv"
            kind = {"0": "resnets", "1": "attentions"}[slot]
            return ".".join(["up_blocks", str(i), kind, str(j), *_map_inner(kind, rest, _RESNET_FROM_SGM)])
    except (IndexError, KeyError, ValueError):
        pass
    raise ValueError(f"SDXL (sgm) module {name!r} has no diffusers UNet name")


def kohya_module_name(component: str, module: str, layers_per_block: int = 2) -> str:
    """The kohya key stem of a module: ``lora_unet_input_blocks_4_1_...`` / ``lora_te1_text_model_...``.

    ``module`` is the diffusers module name; text-encoder names must include ``text_model.``.
    """
    if component == "unet":
        try:
            return KOHYA_PREFIX[component] + unet_to_sgm(module, layers_per_block).replace(".", "_")
        except ValueError as exc:
            raise LoraFormatError(f"cannot write unet module {module!r} in kohya format: {exc}") from None
    return KOHYA_PREFIX[component] + module.replace(".", "_")


def split_words(text: str) -> list[str]:
    """Split an underscore-joined name into module-name parts using the vocabulary."""
    tokens = text.split("_")
    words: list[str] = []
    i = 0
    while i < len(tokens):
        size = next((n for n in range(_MAX_WORDS, 1, -1) if "_".join(tokens[i:i + n]) in _VOCABULARY), 1)
        words.append("_".join(tokens[i:i + size]))
        i += size
    return words


def parse_kohya_module_name(stem: str, layers_per_block: int = 2) -> tuple[str, str]:
    """``lora_unet_input_blocks_4_1_..._to_q`` -> ("unet", "down_blocks.1.attentions.0....to_q").

    Text-encoder names come back with ``text_model.``. Raises ValueError for names that are not
    SDXL kohya LoRA module names.
    """
    for component, prefix in KOHYA_PREFIX.items():
        if stem.startswith(prefix):
            dotted = ".".join(split_words(stem[len(prefix):]))
            if component == "unet":
                return component, sgm_to_unet(dotted, layers_per_block)
            check_sdxl_module(component, dotted)
            return component, dotted
    raise ValueError(f"{stem!r} does not start with {', '.join(KOHYA_PREFIX.values())}")


def check_sdxl_module(component: str, module: str, layers_per_block: int = 2) -> None:
    """Raise ValueError unless ``module`` (diffusers name; text encoders with ``text_model.``) is a
    module of SDXL's ``component`` (one of furlora.lora.settings.COMPONENTS)."""
    if component == "unet":
        unet_to_sgm(module, layers_per_block)
    elif not _TEXT_MODULE.fullmatch(module):
        raise ValueError(f"{module!r} is not a CLIP text-encoder module")
