"""Validation images during training: a callback that inpaints held-out images with the LoRA as it
is being trained and writes a grid and metrics, every ``train.validation.every_n_steps`` steps.

The trainer never imports this module; a recipe or the CLI passes an instance in the trainer's
``callbacks`` (called as ``callback(trainer)`` after every optimizer step). It reads
``trainer.components`` (the live model, adapters attached), ``trainer.global_step``,
``trainer.output_dir``, ``trainer.manager`` (a LoraAdapters: its ``disabled()`` context renders
the base-model column once) and ``trainer.is_main``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from furlora.data.layouts import safe_name
from furlora.errors import EvaluationError
from furlora.eval.grid import result_grid
from furlora.eval.image_io import save_png
from furlora.eval.inpaint import MultiPassInpainter
from furlora.eval.report import json_safe
from furlora.eval.samples import EvalSample, samples_from_dataset
from furlora.eval.settings import EvalSettings
from furlora.train.settings import ValidationSettings

logger = logging.getLogger(__name__)


class ValidationImages:
    """Trainer callback rendering validation inpaintings (see the module docstring).

    ``settings``: the ``eval:`` section (passes, seeds, metrics, report look). ``validation``:
    the run's ``train.validation`` section: which held-out folder (``path``), how often
    (``every_n_steps``) and how many images (``num_images``). ``samples``: explicit samples
    instead of ``validation.path`` (loaded once, here, so a bad folder fails before training).
    ``out_dir``: where PNG / JSON go (default ``<trainer.output_dir>/validation``).
    """

    def __init__(self, settings: EvalSettings, validation: ValidationSettings | None = None,
                 samples: list[EvalSample] | None = None, out_dir: str | os.PathLike[str] | None = None,
                 data_settings: Any = None) -> None:
        self.settings = settings.model_copy(update={"progress": False})
        self.validation = validation or ValidationSettings()
        count = self.validation.num_images
        if samples is None:
            if not self.validation.path:
                raise EvaluationError("train.validation.path is not set: no validation images to render")
            chosen = settings.model_copy(update={"max_images": count})
            samples = samples_from_dataset(self.validation.path, chosen, data_settings)
        self.samples = list(samples)[:count]
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._base: dict[str, Any] = {}  # sample key -> base-model result (rendered once)
        self.history: list[dict[str, Any]] = []

    def __call__(self, trainer: Any) -> None:
        every = self.validation.every_n_steps
        step = int(trainer.global_step)
        if every <= 0 or step % every or not trainer.is_main:
            return
        out = self.out_dir or Path(trainer.output_dir) / "validation"
        self.render(trainer.components, step, out, manager=trainer.manager)

    def render(self, components: Any, step: int, out_dir: str | os.PathLike[str], manager: Any = None) -> dict[str, Any]:
        """Inpaint every sample with the current weights; write ``step_<N>_<key>.png`` and ``step_<N>.json``.

        Returns ``{"step", "samples": {key: metrics}, "grids": [paths]}``.
        """
        unet = components.unet
        was_training = unet.training
        unet.eval()
        rows: list[tuple[str, Any, list[tuple[str, Any, dict[str, float]]]]] = []
        entry: dict[str, Any] = {"step": step, "samples": {}}
        try:
            inpainter = MultiPassInpainter(components, self.settings)
            seed = self.settings.seeds[0]
            for sample in self.samples:
                if manager is not None and sample.key not in self._base:
                    with manager.disabled():  # the base model, rendered once
                        self._base[sample.key] = inpainter.inpaint(sample.image, sample.mask, prompt=sample.prompt, seed=seed)
                result = inpainter.inpaint(sample.image, sample.mask, prompt=sample.prompt, seed=seed)
                if result.skipped:
                    continue
                metrics = result.metrics(self.settings.metrics)
                entry["samples"][sample.key] = metrics
                base = self._base.get(sample.key)
                outputs = [("LoRA off", base, base.metrics(self.settings.metrics))] if base is not None else []
                rows.append((sample.key, result, outputs + [(f"step {step}", result, metrics)]))
        finally:
            unet.train(was_training)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        grids = []
        for key, result, outputs in rows:
            image = result_grid(result, outputs, self.settings.report, f"step {step}", input_title=key)
            grids.append(str(save_png(out / f"step_{step:06d}_{safe_name(key)}.png", image)))
        (out / f"step_{step:06d}.json").write_text(json.dumps(json_safe(entry), indent=2), encoding="utf-8")
        entry["grids"] = grids
        self.history.append(entry)
        logger.info("validation images of step %d written to %s", step, out)
        return entry
