"""Does a set of LoRA weights fit the hooked model and the ``lora:`` config?

Used when a LoRA file (or state dict) is loaded back into a
:class:`~furlora.lora.adapters.LoraAdapters` to continue training: every mismatch is reported
together, naming the keys and the reason, before any weight is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from furlora.errors import LoraFormatError, format_problems, listed
from furlora.lora.weights import LoraWeights, split_key

_EXAMPLES = 4


@dataclass(frozen=True)
class ExpectedModule:
    """What one hooked module's LoRA tensors must look like."""

    shapes: dict[str, tuple[int, ...]]
    """Tensor suffix (``.lora_A.weight`` ...) -> shape."""
    rank: int
    alpha: float


def check_fit(weights: LoraWeights, expected: dict[str, ExpectedModule], source: str) -> None:
    """Raise :class:`LoraFormatError` unless ``weights`` holds exactly the expected modules with the
    configured ranks, alphas and shapes and only finite values.

    ``expected`` maps module keys (``unet.down_blocks...to_q``) to :class:`ExpectedModule`.
    """
    problems: list[str] = []
    unknown = sorted(k for k in weights.tensors
                     if (p := split_key(k)) is None or f"{p[0]}.{p[1]}" not in expected
                     or p[2] not in expected[f"{p[0]}.{p[1]}"].shapes)
    if unknown:
        problems.append(f"{len(unknown)} unknown keys (no hooked module / LoRA tensor of that name; "
                        f"check the lora: selection the file was trained with): {listed(unknown, _EXAMPLES)}")
    present = set(weights.module_keys())
    missing = sorted(k for k in expected if k not in present)
    if missing:
        problems.append(f"{len(missing)} hooked modules have no weights in the file: {listed(missing, _EXAMPLES)}")

    by_component: dict[tuple[str, str, float, float], list[str]] = {}
    shape_errors: list[str] = []
    for key in sorted(present & set(expected)):
        exp = expected[key]
        component = key.split(".", 1)[0]
        rank = weights.rank(key)
        if rank != exp.rank:
            by_component.setdefault((component, "rank", float(rank), float(exp.rank)), []).append(key)
            continue  # every shape differs too; the rank message says it all
        alpha = weights.alpha(key)
        if abs(alpha - exp.alpha) > 1e-6 * max(1.0, abs(exp.alpha)):
            by_component.setdefault((component, "alpha", alpha, exp.alpha), []).append(key)
        for suffix, shape in exp.shapes.items():
            tensor = weights.tensors.get(key + suffix)
            if tensor is None:
                shape_errors.append(f"{key}{suffix}: missing")
            elif tuple(tensor.shape) != shape:
                shape_errors.append(f"{key}{suffix}: shape {tuple(tensor.shape)} in the file, the model needs {shape}")
    for (component, what, got, want), keys in sorted(by_component.items()):
        recorded = "" if weights.alpha_recorded or what != "alpha" else " (no alpha recorded: alpha = rank assumed)"
        problems.append(f"{what} {got:g} in the file{recorded} but lora.{component}.{what} is {want:g}, "
                        f"for {len(keys)} modules: {listed(keys, _EXAMPLES)}")
    if shape_errors:
        problems.append(f"mismatched shapes for {len(shape_errors)} tensors: {listed(shape_errors, _EXAMPLES)}")
    bad = weights.nonfinite_keys()
    if bad:
        problems.append(f"NaN/inf values in {len(bad)} tensors: {listed(bad, _EXAMPLES)}")
    if problems:
        raise LoraFormatError(format_problems(f"{source} does not fit the hooked model / lora config", problems))
