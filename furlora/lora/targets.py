"""Target selection: presets, block selectors and patterns -> the exact list of modules to hook.

The module tree of a component is walked breadth-first and every module *object* is visited
once: a module reachable under several names (a shared or repeated reference) is selected under
its first name only and its other names are reported as skipped, so nothing is wrapped twice.

Names: selection, patterns and reports use *display names*, the module's qualified name with a
text encoder's ``text_model.`` level removed (transformers 5 dropped that level from
``CLIPTextModel`` but ``CLIPTextModelWithProjection`` still has it; users should not need to
know). Each target also keeps its *live name*, the exact qualified name in the module tree,
which is what peft receives.

Anything the user names that matches nothing (a preset, a block selector, an include or exclude
pattern) is a :class:`~furlora.errors.TargetError` that names it and lists the valid blocks.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from dataclasses import dataclass, field

from torch import nn

from furlora.errors import TargetError, format_problems
from furlora.lora.settings import ComponentLoraSettings

TEXT_PREFIX = "text_model."

#: Module-name suffixes of each preset (matched on dotted boundaries), per component kind.
_UNET_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_UNET_FF = ("ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
_RESNET_CONV = re.compile(r"(^|\.)resnets\.\d+\.(conv1|conv2|conv_shortcut)$")
_TE_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_TE_MLP = ("mlp.fc1", "mlp.fc2")

#: Skip reasons of a coverage report, in display order.
SKIP_REASONS: dict[str, str] = {
    "not_in_preset": "LoRA-capable, but not chosen by the preset(s) or include patterns",
    "outside_blocks": "chosen by the preset, but outside the selected blocks",
    "excluded": "removed by an exclude pattern",
    "shared": "another name of a module object already visited (never wrapped twice)",
    "unsupported": "matched an include pattern, but is not a Linear / Conv2d layer",
}


def is_text_encoder(component: str) -> bool:
    """True for ``text_encoder`` and ``text_encoder_2``."""
    return component.startswith("text_encoder")


@dataclass(frozen=True)
class ModuleInfo:
    """One LoRA-capable module (nn.Linear or nn.Conv2d) of a component."""

    name: str
    """Display name (``text_model.`` removed for text encoders)."""
    live_name: str
    """Exact qualified name in the module tree (what peft targets)."""
    layer: str
    """``Linear`` or ``Conv2d``."""
    role: str
    """self-attn, cross-attn, ff, proj, resnet-conv, resample-conv, io-conv, time-emb, mlp or other."""
    block: str
    """Report block, e.g. ``down_blocks.1.attentions.0``, ``mid_block.resnets.1``, ``encoder.layers.3``."""
    in_features: int
    out_features: int
    kernel: tuple[int, int] = (1, 1)

    def lora_parameters(self, rank: int, use_dora: bool = False) -> int:
        """Trainable parameter count of a rank-``rank`` LoRA on this module.

        Linear: A [r, in] + B [out, r]. Conv2d: A [r, in, kh, kw] + B [out, r, 1, 1]. DoRA adds a
        magnitude vector of ``out`` elements.
        """
        kh, kw = self.kernel
        count = rank * self.in_features * kh * kw + self.out_features * rank
        return count + (self.out_features if use_dora else 0)


@dataclass
class TargetSelection:
    """The exact result of selecting targets on one component."""

    component: str
    settings: ComponentLoraSettings
    targets: list[ModuleInfo]
    """Modules to hook, in natural name order."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Skip reason (see SKIP_REASONS) -> display names deliberately not hooked."""
    aliases: dict[str, list[str]] = field(default_factory=dict)
    """Live name of a target -> the other live names of the same module object."""
    candidates: dict[str, ModuleInfo] = field(default_factory=dict)
    """Every LoRA-capable module of the component, by display name (hooked or not)."""

    @property
    def live_names(self) -> list[str]:
        return [t.live_name for t in self.targets]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]


# ----------------------------------------------------------------------------- walking

def walk_modules(root: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[str, list[str]]]:
    """Breadth-first walk visiting each module object once.

    Returns ``(modules, aliases)``: ``modules`` is ``[(qualified_name, module)]`` in BFS order
    (root excluded), each object once under its first name; ``aliases`` maps a first name to
    the other names under which the same object is reachable.
    """
    seen: dict[int, str] = {id(root): ""}
    order: list[tuple[str, nn.Module]] = []
    aliases: dict[str, list[str]] = {}
    queue: deque[tuple[str, nn.Module]] = deque([("", root)])
    while queue:
        prefix, module = queue.popleft()
        for child_name, child in module._modules.items():
            if child is None:
                continue
            name = f"{prefix}.{child_name}" if prefix else child_name
            first = seen.get(id(child))
            if first is not None:
                aliases.setdefault(first, []).append(name)
                continue  # its subtree was (or will be) walked under the first name
            seen[id(child)] = name
            order.append((name, child))
            queue.append((name, child))
    return order, aliases


def natural_key(name: str) -> tuple:
    """Sort key ordering ``layers.2`` before ``layers.10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def display_name(component: str, live_name: str) -> str:
    """The user-facing name: a text encoder's leading ``text_model.`` removed."""
    return live_name.removeprefix(TEXT_PREFIX) if is_text_encoder(component) else live_name


def normalise_selector(component: str, selector: str) -> str:
    """Accept ``text_model.encoder.layers.3`` as well as ``encoder.layers.3``, and a leading component name."""
    text = selector.strip().strip(".")
    return display_name(component, text.removeprefix(component + "."))


def block_of(component: str, name: str) -> str:
    """The report block of a display name (see :attr:`ModuleInfo.block`)."""
    parts = name.split(".")
    if is_text_encoder(component):
        if parts[:2] == ["encoder", "layers"] and len(parts) > 2:
            return ".".join(parts[:3])
        return parts[0]
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) >= 4:
        return ".".join(parts[:4])
    if parts[0] == "mid_block" and len(parts) >= 3:
        return ".".join(parts[:3])
    return parts[0]


def role_of(component: str, name: str) -> str:
    """What a LoRA-capable module does (used for coverage counts)."""
    if is_text_encoder(component):
        if ".self_attn." in f".{name}":
            return "self-attn"
        if ".mlp." in f".{name}":
            return "mlp"
        return "other"
    if _matches_suffix(name, _UNET_ATTN):
        return "cross-attn" if ".attn2." in f".{name}" else "self-attn"
    if _matches_suffix(name, ("ff.net.0.proj", "ff.net.2")):
        return "ff"
    if _matches_suffix(name, ("proj_in", "proj_out")):
        return "proj"
    if _RESNET_CONV.search(name):
        return "resnet-conv"
    if name.endswith("time_emb_proj") or name.startswith(("time_embedding.", "add_embedding.")):
        return "time-emb"
    if ".downsamplers." in f".{name}" or ".upsamplers." in f".{name}":
        return "resample-conv"
    if name in ("conv_in", "conv_out"):
        return "io-conv"
    return "other"


def _matches_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def preset_matches(component: str, preset: str, name: str, module: nn.Module) -> bool:
    """Whether ``preset`` chooses the module ``name`` (display name) of ``component``."""
    linear = isinstance(module, nn.Linear)
    if is_text_encoder(component):
        if preset == "attn":
            return linear and _matches_suffix(name, _TE_ATTN)
        if preset == "attn-mlp":
            return linear and _matches_suffix(name, _TE_ATTN + _TE_MLP)
    else:
        if preset == "attn":
            return linear and _matches_suffix(name, _UNET_ATTN)
        if preset == "attn-ff":
            return linear and _matches_suffix(name, _UNET_ATTN + _UNET_FF)
        if preset == "all-linear":
            return linear
        if preset == "conv":
            return isinstance(module, nn.Conv2d) and bool(_RESNET_CONV.search(name))
    raise TargetError(f"unknown preset {preset!r} for component {component}")


def module_info(component: str, live_name: str, module: nn.Module) -> ModuleInfo:
    """Describe a Linear / Conv2d module (shapes work on the meta device)."""
    name = display_name(component, live_name)
    role, block = role_of(component, name), block_of(component, name)
    if isinstance(module, nn.Conv2d):
        kh, kw = (int(k) for k in module.kernel_size)
        return ModuleInfo(name, live_name, "Conv2d", role, block, int(module.in_channels), int(module.out_channels), (kh, kw))
    return ModuleInfo(name, live_name, "Linear", role, block, int(module.in_features), int(module.out_features))


def exact_selection(component: str, root: nn.Module, settings: ComponentLoraSettings,
                    live_names: list[str] | tuple[str, ...]) -> TargetSelection:
    """A selection of exactly ``live_names`` (resolved earlier by :func:`select_targets` on an
    identical module tree: the memory planner resolves once and injects into many meta copies)."""
    modules, alias_map = walk_modules(root)
    by_name = dict(modules)
    missing = [n for n in live_names if n not in by_name or not _supported(by_name[n])]
    if missing:
        raise TargetError(f"lora.{component}: {len(missing)} target names are no Linear / Conv2d module of this "
                          f"{type(root).__name__}, e.g. {missing[0]!r}")
    targets = sorted((module_info(component, n, by_name[n]) for n in live_names), key=lambda i: natural_key(i.name))
    aliases = {n: alias_map[n] for n in live_names if n in alias_map}
    return TargetSelection(component, settings, targets, {}, aliases, {})


def _supported(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def block_names(component: str, infos: list[ModuleInfo]) -> list[str]:
    """Valid block selectors to suggest: top-level groups, stages and report blocks."""
    names: set[str] = set()
    for info in infos:
        parts = info.block.split(".")
        names.add(info.block)
        if not is_text_encoder(component) and parts[0] in ("down_blocks", "up_blocks", "mid_block"):
            names.add(parts[0] if parts[0] == "mid_block" else ".".join(parts[:2]))
    return sorted(names, key=natural_key)


# ----------------------------------------------------------------------------- selection

def select_targets(component: str, root: nn.Module, settings: ComponentLoraSettings) -> TargetSelection:
    """Apply ``settings`` (presets, blocks, include, exclude) to ``root``.

    Raises :class:`TargetError` listing every preset, block selector or pattern that matches
    nothing, with the valid block names, and when the model already carries LoRA layers.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in root.modules()):
        raise TargetError(
            f"{component} already has peft/LoRA layers; furlora never wraps a module twice. "
            "Load a fresh model (or remove the existing adapter) before applying LoRA."
        )
    modules, alias_map = walk_modules(root)
    by_name = dict(modules)
    supported = [(n, m) for n, m in modules if _supported(m)]
    infos = {n: module_info(component, n, m) for n, m in supported}
    where = f"lora.{component}"
    problems: list[str] = []

    def in_blocks(name: str, selectors: list[str]) -> bool:
        return not selectors or any(name == s or name.startswith(s + ".") for s in selectors)

    selectors = [normalise_selector(component, s) for s in settings.blocks]
    chosen: dict[str, str] = {}  # live name -> how it was chosen
    skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}

    for preset in settings.presets:
        hits = [n for n, m in supported if preset_matches(component, preset, infos[n].name, m)]
        if not hits:
            problems.append(f"{where}.preset {preset!r} matches no module of this {type(root).__name__}")
        for n in hits:
            if in_blocks(infos[n].name, selectors):
                chosen.setdefault(n, f"preset {preset}")
            else:
                skipped["outside_blocks"].append(infos[n].name)

    for pattern in settings.include:
        hits = [n for n, m in modules if fnmatch.fnmatchcase(display_name(component, n), pattern)]
        usable = [n for n in hits if n in infos and in_blocks(infos[n].name, selectors)]
        # layers with weights of their own that LoRA cannot wrap (norms, embeddings); containers are not layers
        skipped["unsupported"] += [display_name(component, n) for n in hits
                                   if n not in infos and next(iter(by_name[n]._parameters.values()), None) is not None]
        if not usable:
            why = "no Linear / Conv2d module" if not [h for h in hits if h in infos] else "nothing inside the selected blocks"
            problems.append(f"{where}.include pattern {pattern!r} matches {why}")
        for n in usable:
            chosen.setdefault(n, f"include {pattern}")

    for selector, raw in zip(selectors, settings.blocks):
        exists = any(n == selector or n.startswith(selector + ".") for n in (display_name(component, x) for x, _ in modules))
        contributes = any(in_blocks(infos[n].name, [selector]) for n in chosen)
        if not exists:
            problems.append(f"{where}.blocks selector {raw!r} names no block of this {type(root).__name__}")
        elif not contributes:
            kinds = sorted({i.role for i in infos.values() if in_blocks(i.name, [selector])})
            has = f" (it holds only: {', '.join(kinds)})" if kinds else " (it holds no Linear / Conv2d module)"
            hint = "; preset 'conv' hooks resnet convolutions" if "resnet-conv" in kinds and "conv" not in settings.presets else ""
            problems.append(
                f"{where}.blocks selector {raw!r} contains no module chosen by preset "
                f"{settings.preset!r}{has}{hint}"
            )

    for pattern in settings.exclude:
        hits = [n for n in chosen if fnmatch.fnmatchcase(infos[n].name, pattern)]
        if not hits:
            problems.append(f"{where}.exclude pattern {pattern!r} matches no selected module")
        for n in hits:
            chosen.pop(n)
            skipped["excluded"].append(infos[n].name)

    if not problems and not chosen:
        problems.append(f"{where}: the exclude patterns removed every selected module; nothing would be hooked")
    if problems:
        valid = ", ".join(block_names(component, list(infos.values())))
        problems.append(f"valid blocks of {component}: {valid}")
        raise TargetError(format_problems(f"LoRA target selection on {component} failed", problems))

    targets = sorted((infos[n] for n in chosen), key=lambda i: natural_key(i.name))
    taken = set(skipped["outside_blocks"]) | set(skipped["excluded"]) | {t.name for t in targets}
    skipped["not_in_preset"] = [i.name for i in infos.values() if i.name not in taken]
    aliases = {n: alias_map[n] for n in chosen if n in alias_map}
    skipped["shared"] = [display_name(component, a) for names in alias_map.values() for a in names]
    skipped = {k: sorted(set(v), key=natural_key) for k, v in skipped.items() if v}
    candidates = {i.name: i for i in infos.values()}
    return TargetSelection(component, settings, targets, skipped, aliases, candidates)
