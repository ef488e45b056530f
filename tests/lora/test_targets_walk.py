"""The breadth-first walk: each module object once, shared modules never wrapped twice and kept tied."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from furlora.errors import TargetError
from furlora.lora.adapters import LoraAdapters
from furlora.lora.settings import LoraSettings, UnetLoraSettings
from furlora.lora.targets import select_targets, walk_modules


class Shared(nn.Module):
    """proj is reachable as .proj, .stack.0 and .deep.inner.again (three names, one object)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.stack = nn.ModuleList([self.proj, nn.Linear(4, 4)])
        self.deep = nn.Module()
        self.deep.inner = nn.Module()
        self.deep.inner.again = self.proj
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deep.inner.again(self.stack[1](self.proj(x))) + self.stack[0](x)


def test_walk_visits_each_object_once_breadth_first():
    model = Shared()
    modules, aliases = walk_modules(model)
    names = [n for n, _ in modules]
    assert names == ["proj", "stack", "deep", "norm", "stack.1", "deep.inner"]
    assert len({id(m) for _, m in modules}) == len(modules)
    assert aliases == {"proj": ["stack.0", "deep.inner.again"]}


def test_shared_module_is_hooked_once_reported_and_stays_tied():
    torch.manual_seed(0)
    model = Shared()
    settings = LoraSettings(unet=UnetLoraSettings(preset="all-linear", rank=2, alpha=4))
    sel = select_targets("unet", model, settings.unet)
    assert sel.names == ["proj", "stack.1"]
    assert sel.skipped["shared"] == ["deep.inner.again", "stack.0"]
    x = torch.randn(3, 4)
    base = model(x)
    manager = LoraAdapters({"unet": model}, settings, seed=0)
    report = manager.apply()
    assert report.components["unet"].hooked == 2
    assert report.components["unet"].skipped["shared"]["names"] == ["deep.inner.again", "stack.0"]
    wrapped = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == 2
    # all three names now lead to the same LoRA layer
    assert model.proj is model.stack[0] is model.deep.inner.again
    assert isinstance(model.proj, LoraLayer)
    with torch.no_grad():
        for p in manager.trainable_parameters():
            p.add_(0.1)
        changed = model(x)
        lora_b = manager.named_lora_parameters()["unet.proj.lora_B.weight"]
        assert lora_b.shape == (4, 2)
    assert not torch.allclose(changed, base)
    with manager.disabled():
        assert torch.equal(model(x), base)


def test_unsupported_module_in_include_is_reported_not_hooked():
    model = Shared()
    sel = select_targets("unet", model, UnetLoraSettings(preset=None, include=["*"]))
    assert sel.names == ["proj", "stack.1"]
    assert sel.skipped["unsupported"] == ["norm"]
    with pytest.raises(TargetError, match="include pattern 'norm' matches no Linear / Conv2d module"):
        select_targets("unet", model, UnetLoraSettings(preset=None, include=["norm"]))


def test_empty_selection_after_exclude_is_an_error():
    with pytest.raises(TargetError, match="removed every selected module"):
        select_targets("unet", Shared(), UnetLoraSettings(preset="all-linear", exclude=["*"]))


def test_preset_matching_nothing_is_an_error():
    with pytest.raises(TargetError, match=r"lora.unet.preset 'attn' matches no module of this Shared"):
        select_targets("unet", Shared(), UnetLoraSettings(preset="attn"))


def test_manager_checks_components():
    with pytest.raises(TargetError, match="lora.text_encoder.enabled is true but no text_encoder module"):
        LoraAdapters({"unet": Shared()}, LoraSettings.model_validate({"text_encoder": {"enabled": True}}))
    with pytest.raises(TargetError, match="unknown components"):
        LoraAdapters({"vae": Shared()}, LoraSettings())


def test_shared_module_first_seen_deeper_by_depth_first_walks():
    # named_modules() (and so peft) meets the Linear first as deep.inner.again; the breadth-first
    # walk names it "proj". The manager must still wrap that one object once, under every name.
    model = nn.Module()
    model.deep = nn.Module()
    model.deep.inner = nn.Module()
    model.deep.inner.again = nn.Linear(3, 3)
    model.proj = model.deep.inner.again
    settings = LoraSettings(unet=UnetLoraSettings(preset="all-linear", rank=1, alpha=1))
    manager = LoraAdapters({"unet": model}, settings, seed=0)
    report = manager.apply()
    assert report.components["unet"].targets == ["proj"]
    assert report.components["unet"].skipped["shared"]["names"] == ["deep.inner.again"]
    assert isinstance(model.proj, LoraLayer) and model.proj is model.deep.inner.again
    assert list(manager.lora_state_dict()) == ["unet.proj.lora_A.weight", "unet.proj.lora_B.weight"]
