"""Validation images during training: a callback that inpaints held-out images with the LoRA as it
is being trained and writes a grid and metrics, every ``train.validation.every_n_steps`` steps.

The trainer never imports this module; a recipe or the CLI passes an instance in the trainer's
``callbacks`` (called as ``callback(trainer)`` after every optimizer step). It reads
``trainer.components`` (the live model, adapters attached), ``trainer.global_step``,
``trainer.output_dir``, and optionally ``trainer.manager`` (a LoraAdapters: its ``disabled()``
context renders the base-model column once) and ``trainer.is_main``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from furlora.errors import EvaluationError
from furlora.eval.grid import Column, mask_overlay, render_grid
from furlora.eval.image_io import save_png, to_rgb_float
from furlora.eval.inpaint import MultiPassInpainter
from furlora.eval.metrics import compute_metrics
from furlora.eval.report import grid_caption
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
        if every <= 0 or step % every or not getattr(trainer, "is_main", True):
            return
        out = self.out_dir or Path(trainer.output_dir) / "validation"
        self.render(trainer.components, step, out, manager=getattr(trainer, "manager", None))

    def render(self, components: Any, step: int, out_dir: str | os.PathLike[str], manager: Any = None) -> dict[str, Any]:
        """Inpaint every sample with the current weights; write ``step_<N>_<key>.png`` and ``step_<N>.json``.

        Returns ``{"step", "samples": {key: metrics}, "grids": [paths]}``.
        """
        unet = components.unet
        was_training = unet.training
        unet.eval()
        rows: list[tuple[str, list[Column], Any]] = []
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
                metrics = self._metrics(result)
                entry["samples"][sample.key] = metrics
                columns = [Column(sample.key, result.input_rgb, []),
                           Column("mask", mask_overlay(result.input_rgb, result.mask, result.band), [])]
                if sample.key in self._base:
                    base = self._base[sample.key]
                    columns.append(Column("LoRA off", to_rgb_float(base.image)[0], grid_caption(self._metrics(base))))
                columns.append(Column(f"step {step}", to_rgb_float(result.image)[0], grid_caption(metrics)))
                rows.append((sample.key, columns, result.seam_mask))
        finally:
            unet.train(was_training)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        r = self.settings.report
        grids = []
        for key, columns, seam in rows:
            image = render_grid(columns, seam, r.thumbnail_size, r.zoom_crops, r.zoom_size, title=f"step {step}")
            grids.append(str(save_png(out / f"step_{step:06d}_{_safe(key)}.png", image)))
        (out / f"step_{step:06d}.json").write_text(json.dumps(_finite(entry), indent=2), encoding="utf-8")
        entry["grids"] = grids
        self.history.append(entry)
        logger.info("validation images of step %d written to %s", step, out)
        return entry

    def _metrics(self, result: Any) -> dict[str, float]:
        m = self.settings.metrics
        output, _ = to_rgb_float(result.image, "output")
        return compute_metrics(output, result.input_rgb, result.mask, result.band, seam_mask=result.seam_mask,
                               seam_width=m.seam_width, ring_width=m.ring_width, detail_sigma=m.detail_sigma,
                               ssim_sigma=m.ssim_sigma)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
