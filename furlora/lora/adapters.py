"""LoraAdapters: LoRA on the UNet and both SDXL text encoders, applied through peft.

It installs no hooks (the old name ``LoraHookManager`` suggested it did; it stays as a deprecated alias
for one release). It selects targets (furlora.lora.targets), freezes every base weight, injects peft LoRA
layers on exactly those modules (``peft.inject_adapter_in_model`` with an explicit list of
module names: no hand-written LoRA layers, no monkeypatched ``forward``), keeps LoRA weights in
fp32 even on fp16 / bf16 models, and then offers per-component enable / disable / scale,
optimizer parameter groups with per-component learning rates, merge / unmerge, a gradient-flow
check, and saving / loading in the diffusers and kohya formats.

Typical use::

    manager = LoraAdapters({"unet": unet, "text_encoder": te1, "text_encoder_2": te2}, config.lora, seed=42)
    report = manager.apply()
    optimizer = torch.optim.AdamW(manager.parameter_groups(), lr=1e-4)
    ...
    manager.save("out/fur.safetensors", format="kohya", metadata={"ss_steps": "1000"})
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from furlora.errors import FurloraError, TargetError, TrainingError
from furlora.lora.compat import ExpectedModule, check_fit
from furlora.lora.coverage import CoverageReport, component_coverage
from furlora.lora.formats import load_lora_file, save_lora_file
from furlora.lora.gradient_flow import GradientFlowReport, check_gradient_flow
from furlora.lora.settings import COMPONENTS, LoraSettings
from furlora.lora.targets import TargetSelection, exact_selection, select_targets
from furlora.lora.weights import LoraWeights, split_key

logger = logging.getLogger(__name__)

ADAPTER_NAME = "furlora"
_TENSORS = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", ".lora_magnitude_vector": "lora_magnitude_vector"}


class LoraAdapters:
    """Attach, control, save and load LoRA on ``unet`` / ``text_encoder`` / ``text_encoder_2``.

    ``components``: the modules by name (only the components enabled in ``settings`` are touched).
    ``seed``: seeds the LoRA initialisation (component ``i`` uses ``seed + i``), so two runs with the
    same seed start from identical LoRA weights; None uses torch's global generator.
    ``targets``: exact live module names per component, used instead of the settings' presets /
    blocks / patterns (names resolved earlier on an identical tree, e.g. by the memory planner).
    """

    def __init__(self, components: Mapping[str, nn.Module], settings: LoraSettings, *,
                 seed: int | None = None, model_name: str = "model",
                 targets: Mapping[str, Sequence[str]] | None = None) -> None:
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown:
            raise TargetError(f"unknown components {unknown}; LoRA can go on {', '.join(COMPONENTS)}")
        missing = [c for c in settings.enabled_components() if components.get(c) is None]
        if missing:
            raise TargetError(
                f"lora.{missing[0]}.enabled is true but no {missing[0]} module was given "
                f"(given: {', '.join(sorted(components)) or 'none'}); disable it or pass the module"
            )
        self.settings = settings
        self.seed = seed
        self.model_name = model_name
        self.components: dict[str, nn.Module] = {c: components[c] for c in settings.enabled_components()}
        self._exact_targets = dict(targets or {})
        self._layers: dict[str, dict[str, nn.Module]] = {}
        """component -> canonical module name (text_model. included for text encoders) -> peft LoRA layer."""
        self._scales = {c: 1.0 for c in self.components}
        self._enabled = {c: True for c in self.components}
        self._merged = {c: False for c in self.components}

    # ------------------------------------------------------------------ selection / apply

    def select(self) -> dict[str, TargetSelection]:
        """Select targets on every enabled component (no model change); all problems in one TargetError."""
        selections, problems = {}, []
        for name, module in self.components.items():
            try:
                section = self.settings.component(name)
                exact = self._exact_targets.get(name)
                selections[name] = (select_targets(name, module, section) if exact is None
                                    else exact_selection(name, module, section, list(exact)))
            except TargetError as exc:
                problems.append(str(exc))
        if problems:
            raise TargetError("\n".join(problems))
        return selections

    @property
    def applied(self) -> bool:
        return bool(self._layers)

    def apply(self) -> CoverageReport:
        """Freeze the base weights and inject LoRA on the selected modules; return the coverage report.

        Works on the meta device too (no memory is allocated; used for reports on real SDXL).
        """
        if self.applied:
            raise TargetError("LoRA was already applied by this manager; a module is never wrapped twice")
        selections = self.select()
        report = CoverageReport(self.model_name, {name: component_coverage(selection, type(self.components[name]).__name__)
                                                  for name, selection in selections.items()})
        for index, (name, module) in enumerate(self.components.items()):
            module.requires_grad_(False)  # before injecting: only LoRA weights may train
            self._layers[name] = self._inject(name, module, selections[name], index)
        for name, cov in report.components.items():
            actual = sum(p.numel() for p in self.trainable_parameters(name))
            if actual != cov.parameters:
                raise TargetError(f"{name}: peft created {actual} LoRA parameters, the coverage report expected "
                                  f"{cov.parameters}; please report this")
        logger.info("LoRA applied: %s", ", ".join(f"{c.component} {c.hooked} modules (r={c.rank}, alpha={c.alpha:g})"
                                                  for c in report.components.values()))
        return report

    def _inject(self, name: str, module: nn.Module, selection: TargetSelection, index: int) -> dict[str, nn.Module]:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        s = self.settings.component(name)
        # peft walks named_modules() (depth-first); a shared object may have a different first
        # name there than in our breadth-first walk, so target peft's name for the object.
        objects = {t.live_name: module.get_submodule(t.live_name) for t in selection.targets}
        peft_names = {id(m): n for n, m in module.named_modules()}
        targets = [peft_names[id(objects[t.live_name])] for t in selection.targets]
        config = LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, use_dora=s.use_dora,
                            target_modules=targets, init_lora_weights=True, bias="none")
        on_meta = any(p.is_meta for p in module.parameters())
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed + index)
            inject_adapter_in_model(config, module, adapter_name=ADAPTER_NAME, low_cpu_mem_usage=on_meta)
        wrapped = [m for m in module.modules() if isinstance(m, LoraLayer)]
        if len(wrapped) != len(selection.targets):
            raise TargetError(f"{name}: peft wrapped {len(wrapped)} modules, {len(selection.targets)} were selected; "
                              "please report this")
        flat_text = name != "unet" and not hasattr(module, "text_model")
        layers: dict[str, nn.Module] = {}
        for target, peft_name in zip(selection.targets, targets):
            layer = module.get_submodule(peft_name)
            if not isinstance(layer, LoraLayer) or layer.get_base_layer() is not objects[target.live_name]:
                raise TargetError(f"{name}: module {target.name} was not wrapped by peft; please report this")
            # Every other path to the same object now points at the wrapper: tied modules stay tied.
            for path in [target.live_name, *selection.aliases.get(target.live_name, [])]:
                parent_name, _, attr = path.rpartition(".")
                parent = module.get_submodule(parent_name) if parent_name else module
                if parent._modules.get(attr) is not layer:
                    parent._modules[attr] = layer
            for _, holder in _lora_tensors(layer):  # LoRA weights in fp32 even on fp16 / bf16 models
                holder.to(torch.float32)
            canonical = f"text_model.{target.live_name}" if flat_text else target.live_name
            layers[canonical] = layer
        return layers

    def _require_applied(self) -> None:
        if not self.applied:
            raise TargetError("LoRA is not applied yet: call apply() first")

    def _components(self, component: str | None) -> list[str]:
        if component is None:
            return list(self.components)
        if component not in self.components:
            raise TargetError(f"component {component!r} has no LoRA (LoRA is on: {', '.join(self.components)})")
        return [component]

    def layers(self, component: str) -> dict[str, nn.Module]:
        """Canonical module name -> peft LoRA layer of ``component``."""
        self._require_applied()
        return dict(self._layers[self._components(component)[0]])

    # ------------------------------------------------------------------ parameters

    def named_lora_parameters(self, component: str | None = None) -> dict[str, nn.Parameter]:
        """Canonical key (``unet.<module>.lora_A.weight`` ...) -> LoRA parameter."""
        self._require_applied()
        out: dict[str, nn.Parameter] = {}
        for name in self._components(component):
            for module, layer in self._layers[name].items():
                out.update({f"{name}.{module}{suffix}": holder.weight for suffix, holder in _lora_tensors(layer)})
        return out

    def trainable_parameters(self, component: str | None = None) -> list[nn.Parameter]:
        """The LoRA parameters (fp32) of one component or of all."""
        return list(self.named_lora_parameters(component).values())

    def parameter_groups(self, base_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimizer parameter groups, one per component: ``{"name", "params"[, "lr"]}``.

        A group carries ``lr`` when ``lora.<component>.learning_rate`` is set, or ``base_lr`` when
        given; otherwise it has no ``lr`` key and the optimizer's base rate applies.
        """
        groups = []
        for name in self.components:
            group: dict[str, Any] = {"name": name, "params": self.trainable_parameters(name)}
            lr = self.settings.component(name).learning_rate
            lr = base_lr if lr is None else lr
            if lr is not None:
                group["lr"] = lr
            groups.append(group)
        return groups

    def check_gradient_flow(self, loss: torch.Tensor | Callable[[], torch.Tensor]) -> GradientFlowReport:
        """One backward pass of ``loss``: report LoRA weights without gradient and base weights with one."""
        lora = self.named_lora_parameters()
        lora_ids = {id(p) for p in lora.values()}
        base = {f"{c}.{n}": p for c, m in self.components.items() for n, p in m.named_parameters() if id(p) not in lora_ids}
        return check_gradient_flow(lora, base, loss)

    # ------------------------------------------------------------------ control

    def set_scale(self, component: str | None, scale: float) -> None:
        """Multiply the LoRA update of ``component`` (None: all) by ``scale`` (1 = trained strength, 0 = off)."""
        self._require_applied()
        for name in self._components(component):
            if self._merged[name]:
                raise TrainingError(f"{name}: LoRA is merged into the base weights; unmerge() before changing the scale")
            for layer in self._layers[name].values():
                layer.set_scale(ADAPTER_NAME, float(scale))
            self._scales[name] = float(scale)

    def scale(self, component: str) -> float:
        return self._scales[self._components(component)[0]]

    def enabled(self, flag: bool, component: str | None = None) -> None:
        """Switch LoRA of ``component`` (None: all) on or off; off gives the base model's output exactly."""
        self._require_applied()
        for name in self._components(component):
            for layer in self._layers[name].values():
                layer.enable_adapters(bool(flag))
            self._enabled[name] = bool(flag)

    def is_enabled(self, component: str) -> bool:
        return self._enabled[self._components(component)[0]]

    @contextlib.contextmanager
    def disabled(self, component: str | None = None) -> Iterator[None]:
        """Context manager: LoRA off inside (base model exactly), previous state restored after."""
        names = self._components(component)
        before = {n: self._enabled[n] for n in names}
        self.enabled(False, component)
        try:
            yield
        finally:
            for n, flag in before.items():
                self.enabled(flag, n)

    def merge(self, component: str | None = None) -> None:
        """Fuse LoRA (at its current scale) into the base weights of ``component`` (None: all)."""
        self._require_applied()
        for name in self._components(component):
            if not self._merged[name]:
                for layer in self._layers[name].values():
                    layer.merge(adapter_names=[ADAPTER_NAME])
                self._merged[name] = True

    def unmerge(self, component: str | None = None) -> None:
        """Undo :meth:`merge` (base weights restored up to floating-point rounding)."""
        self._require_applied()
        for name in self._components(component):
            if self._merged[name]:
                for layer in self._layers[name].values():
                    layer.unmerge()
                self._merged[name] = False

    # ------------------------------------------------------------------ weights and files

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Canonical LoRA tensors (detached copies, fp32): ``{component}.{module}.lora_A.weight`` ..."""
        return {k: p.detach().clone() for k, p in self.named_lora_parameters().items()}

    def alphas(self) -> dict[str, float]:
        """Module key (``component.module``) -> configured alpha."""
        self._require_applied()
        return {f"{c}.{m}": float(self.settings.component(c).alpha) for c in self._layers for m in self._layers[c]}

    def expected_modules(self) -> dict[str, ExpectedModule]:
        """Module key -> tensor shapes, rank and alpha a loaded file must have."""
        expected = {}
        for key, p in self.named_lora_parameters().items():
            component, module, suffix = split_key(key)  # type: ignore[misc]  # canonical keys
            s = self.settings.component(component)
            entry = expected.setdefault(f"{component}.{module}", ExpectedModule({}, s.rank, float(s.alpha)))
            entry.shapes[suffix] = tuple(p.shape)
        return expected

    def load_lora_state_dict(self, state: Mapping[str, torch.Tensor] | LoraWeights, source: str = "LoRA state dict") -> None:
        """Copy LoRA weights (canonical keys, as from :meth:`lora_state_dict` or a loaded file) into the model.

        Everything is checked first (unknown / missing keys, rank and alpha against the config,
        shapes, NaN); on any problem a :class:`LoraFormatError` lists them and nothing is changed.
        A plain state dict is taken to carry the configured alphas.
        """
        self._require_applied()
        weights = state if isinstance(state, LoraWeights) else LoraWeights(dict(state), self.alphas())
        check_fit(weights, self.expected_modules(), source)
        params = self.named_lora_parameters()
        with torch.no_grad():
            for key, value in weights.tensors.items():
                params[key].copy_(value.to(params[key].dtype))

    def load(self, path: str | Path) -> LoraWeights:
        """Load a diffusers- or kohya-format LoRA file into the hooked model (to continue training)."""
        weights = load_lora_file(path, layers_per_block=self._layers_per_block())
        self.load_lora_state_dict(weights, source=str(path))
        return weights

    def save(self, path: str | Path, format: str = "diffusers", metadata: dict[str, Any] | None = None,
             dtype: str | None = None) -> Path:
        """Write the LoRA as a diffusers or kohya safetensors file (dtype: settings.save_dtype by default).

        ``metadata``: training information stored in the header (kohya's ``ss_*`` keys and
        anything else); the LoRA settings are always recorded.
        """
        self._require_applied()
        header = {"furlora.lora_settings": {c: self.settings.component(c).model_dump(mode="json") for c in self.components},
                  **(metadata or {})}
        weights = LoraWeights(self.lora_state_dict(), self.alphas())
        try:
            return save_lora_file(path, weights, format, header,  # type: ignore[arg-type]
                                  dtype or self.settings.save_dtype, self._layers_per_block())
        except FurloraError:
            raise
        except (OSError, RuntimeError) as exc:
            raise TrainingError(f"cannot write LoRA file {path}: {exc}") from None

    def _layers_per_block(self) -> int:
        unet = self.components.get("unet")
        value = getattr(getattr(unet, "config", None), "layers_per_block", 2)
        return value if isinstance(value, int) else 2  # SDXL's value; per-stage lists do not occur in SDXL


def _lora_tensors(layer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(canonical key suffix, the module holding that tensor) of each LoRA tensor peft made on ``layer``."""
    for suffix, attr in _TENSORS.items():
        store = getattr(layer, attr, None)
        if store is not None and ADAPTER_NAME in store:
            yield suffix, store[ADAPTER_NAME]


def __getattr__(name: str) -> Any:
    # Deprecated alias, kept for one release (0.2 removes it).
    if name == "LoraHookManager":
        import warnings

        warnings.warn("furlora LoraHookManager is now LoraAdapters (it injects peft LoRA layers; it installs no "
                      "hooks); the old name will be removed in the next release", DeprecationWarning, stacklevel=2)
        return LoraAdapters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
