"""Side-by-side comparison of LoRA variants by inpainting: :func:`run_comparison`.

For every image x seed x variant (off / each LoRA at each scale) the same passes run with the
same seeds, so outputs differ only by the LoRA. With embedding files of learned tokens, every
variant also runs with the tokens in its prompt (base / LoRA / token / LoRA + token). Metrics are computed on the saved output (in
the input's own format) against the input, and the report folder is written
(:mod:`furlora.eval.report`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from furlora.data.layouts import safe_name
from furlora.errors import EvaluationError
from furlora.eval.grid import result_grid
from furlora.eval.image_io import as_array, layout_of, load_mask, match_mask_size, save_png
from furlora.eval.inpaint import InpaintResult, MultiPassInpainter
from furlora.eval.token_variants import (
    check_embedding_files,
    embedding_widths,
    load_embeddings,
    token_prompt,
    token_variants,
)
from furlora.eval.lora_variants import Variant, apply_variant, build_variants, check_lora_files, load_loras, unload_loras
from furlora.eval.report import summarize, write_html, write_tables
from furlora.eval.samples import EvalSample, resolve_samples
from furlora.eval.settings import EvalSettings

logger = logging.getLogger(__name__)


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` wrote and measured."""

    out_dir: Path
    rows: list[dict[str, Any]]
    """One dict per image x seed x variant: sample, seed, variant and every metric (floats)."""
    summary: dict[str, dict[str, float]]
    """variant -> mean of each metric."""
    variants: list[str]
    grids: list[Path]
    table_csv: Path
    table_json: Path
    html: Path
    outputs: dict[tuple[str, int, str], Path] = field(default_factory=dict)
    """(sample key, seed, variant) -> full-resolution output PNG."""
    skipped: list[str] = field(default_factory=list)
    """Samples that were not repainted (empty masks), with the reason."""


def prepare_inpainter(model: Any, lora_files: list[Any], settings: EvalSettings, *, dtype: str = "fp32",
                      vae_dtype: str = "fp32", device: str | None = None, prediction_type: str = "auto",
                      embedding_files: list[Any] | None = None) -> MultiPassInpainter:
    """An inpainter for ``model`` (a source string, SDXLComponents, pipeline or inpainter).

    With a source string, LoRA and embedding files are checked against the model's configs
    before any weight loads, and the model loads on ``device`` (None: ``settings.device``) in
    ``dtype`` with the VAE in ``vae_dtype``. ``prediction_type``: what the LoRA was trained to
    predict (``train.prediction_type``; auto = the model's scheduler config).
    """
    if isinstance(model, MultiPassInpainter):
        return model
    if isinstance(model, (str, os.PathLike)):
        from furlora.models.architecture import build_meta_sdxl
        from furlora.models.sdxl import inspect_model_folder, resolve_model_path

        path = resolve_model_path(model)
        inspect_model_folder(path)
        if lora_files or embedding_files:
            modules = build_meta_sdxl(str(path), ("unet", "text_encoder", "text_encoder_2"))
            if lora_files:
                check_lora_files(lora_files, modules)
            if embedding_files:
                check_embedding_files(embedding_files, embedding_widths(modules))
        return MultiPassInpainter.from_pretrained(str(path), settings, dtype=dtype, vae_dtype=vae_dtype,
                                                  device=device, prediction_type=prediction_type)
    return MultiPassInpainter(model, settings, prediction_type=prediction_type)


def run_comparison(
    model: Any,
    lora_files: list[str | os.PathLike[str]] | None,
    samples: Any,
    out_dir: str | os.PathLike[str],
    settings: EvalSettings | None = None,
    *,
    data_settings: Any = None,
    dtype: str = "fp32",
    vae_dtype: str = "fp32",
    device: str | None = None,
    prediction_type: str = "auto",
    embeddings: list[str | os.PathLike[str]] | None = None,
    token_settings: Any = None,
) -> ComparisonResult:
    """Inpaint every sample with every variant and write the report folder.

    ``model``: a model source (tiny name, folder, cached hub id), SDXLComponents, a diffusers SDXL
    pipeline or a :class:`MultiPassInpainter`. ``lora_files``: diffusers or kohya safetensors
    files (None / [] = the base model only). ``samples``: a dataset folder, EvalSamples or
    (image, mask[, prompt]) tuples. ``embeddings``: SDXL embedding files of learned tokens
    (``clip_l`` + ``clip_g``); each variant then also runs with the tokens in its prompt
    (variants ``token`` and ``<lora>@<scale>+token``). ``token_settings``: the run's ``tokens:``
    section, whose caption rule puts the tokens into prompts (default: in front). The tokens
    stay loaded in a pipeline that was passed in. ``dtype`` / ``vae_dtype`` / ``device`` /
    ``prediction_type``: see :func:`prepare_inpainter`. Returns the metrics and the paths written.
    """
    settings = settings or EvalSettings()
    lora_files = list(lora_files or [])
    embedding_files = list(embeddings or [])
    sample_list = resolve_samples(samples, settings, data_settings)  # dataset problems before any weight
    inputs = [_load_sample(s, settings) for s in sample_list]
    inpainter = prepare_inpainter(model, lora_files, settings, dtype=dtype, vae_dtype=vae_dtype, device=device,
                                  prediction_type=prediction_type, embedding_files=embedding_files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = load_embeddings(inpainter.pipeline, embedding_files) if embedding_files else []
    loras = load_loras(inpainter.pipeline, lora_files)
    try:
        variants = build_variants(loras, settings)
        if tokens:
            variants += token_variants(variants)
        prompts = partial(_prompt, settings=settings, tokens=[t.token for t in tokens], token_settings=token_settings)
        rows, grids, outputs, skipped = _run_all(inpainter, sample_list, inputs, variants, settings, out, prompts)
    finally:
        if loras:
            unload_loras(inpainter.pipeline)
    extra = {
        "model": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
        "loras": [str(x.path) for x in loras],
        "embeddings": [str(x.path) for x in tokens],
        "tokens": [x.token for x in tokens],
        "variants": [v.name for v in variants],
        "seeds": list(settings.seeds),
        "passes": [p.model_dump(mode="json") for p in settings.passes],
        "unet_channels": inpainter.pipeline.unet.config.in_channels,
        "skipped": skipped,
    }
    table_csv, table_json = write_tables(out, rows, extra)
    html_path = write_html(out, "furlora inpainting comparison", rows, grids, extra)
    logger.info("comparison report written to %s", html_path)
    return ComparisonResult(out, rows, summarize(rows), [v.name for v in variants], [g for _, g in grids],
                            table_csv, table_json, html_path, outputs, skipped)


def _load_sample(sample: EvalSample, settings: EvalSettings) -> tuple[np.ndarray, Any]:
    """The sample's image array (checked now, so a bad file fails before the model loads) and mask."""
    image = as_array(sample.image, f"image of sample {sample.key}")
    layout_of(image, f"image of sample {sample.key}")
    mask = match_mask_size(load_mask(sample.mask, f"mask of sample {sample.key}"), image.shape[:2],
                           settings.resize_mask, f"mask of sample {sample.key}")
    return image, mask


def _prompt(sample: EvalSample, variant: Variant, settings: EvalSettings, tokens: list[str], token_settings: Any) -> str | None:
    """The prompt of a variant for a sample: the sample's (or ``eval.prompt``), with the learned
    tokens inserted for token variants."""
    if not variant.tokens:
        return sample.prompt  # None: the inpainter uses eval.prompt
    base = sample.prompt if sample.prompt is not None else settings.prompt
    regions = [k for k, v in sample.regions.items() if float(np.asarray(v).max()) > 0]
    return token_prompt(base, tokens, token_settings, regions)


def _run_all(inpainter: MultiPassInpainter, samples: list[EvalSample], inputs: list[tuple[np.ndarray, Any]],
             variants: list[Variant], settings: EvalSettings, out: Path, prompts: Callable[..., str | None]) -> tuple[Any, ...]:
    from furlora.progress import progress_bar

    rows: list[dict[str, Any]] = []
    grids: list[tuple[str, Path]] = []
    outputs: dict[tuple[str, int, str], Path] = {}
    skipped: list[str] = []
    total = len(samples) * len(settings.seeds) * len(variants) * len(settings.passes)
    with progress_bar(total, "compare", "pass", disable=not settings.progress) as bar:
        for sample, (image, mask) in zip(samples, inputs):
            for seed in settings.seeds:
                results: list[tuple[str, InpaintResult, dict[str, float]]] = []
                for variant in variants:
                    bar.set_postfix_str(f"{sample.key} seed {seed} {variant.name}")
                    apply_variant(inpainter.pipeline, variant, settings.component_scales)
                    result = inpainter.inpaint(image, mask, prompt=prompts(sample, variant), seed=seed, progress=bar)
                    if result.skipped:  # the same for every variant: report once, move on
                        if f"{sample.key}: {result.skipped}" not in skipped:
                            skipped.append(f"{sample.key}: {result.skipped}")
                        bar.update(len(settings.passes) * len(variants))
                        break
                    regions = {k: np.asarray(v) for k, v in sample.regions.items() if np.asarray(v).shape == result.mask.shape}
                    metrics = result.metrics(settings.metrics, regions)
                    rows.append({"sample": sample.key, "seed": seed, "variant": variant.name, **metrics})
                    results.append((variant.name, result, metrics))
                    if settings.report.save_images:
                        path = out / "images" / safe_name(sample.key) / f"{safe_name(variant.name)}_s{seed}.png"
                        outputs[(sample.key, seed, variant.name)] = save_png(path, result.image)
                if results:
                    grid = result_grid(results[0][1], results, settings.report, f"{sample.key}  seed {seed}")
                    grids.append((f"{sample.key} seed {seed}", save_png(grid_path(out, sample.key, seed), grid)))
    return rows, grids, outputs, skipped


def grid_path(report_dir: Path, sample_key: str, seed: int) -> Path:
    """Where a comparison report keeps the grid of one sample and seed."""
    return report_dir / "grids" / f"{safe_name(sample_key)}_s{seed}.png"


def inpaint_one(model: Any, image: Any, mask: Any, out: str | os.PathLike[str], *, prompt: str | None = None,
                lora_files: list[Any] | None = None, lora_scale: float = 1.0, seed: int = 0,
                settings: EvalSettings | None = None, dtype: str = "fp32", vae_dtype: str = "fp32",
                device: str | None = None, prediction_type: str = "auto") -> InpaintResult:
    """Inpaint one image (optionally with LoRA files at ``lora_scale``) and save the result to ``out`` (PNG).

    ``dtype`` / ``vae_dtype`` / ``device`` / ``prediction_type``: see :func:`prepare_inpainter`.
    """
    settings = settings or EvalSettings()
    target = Path(out)
    if target.suffix.lower() != ".png":
        raise EvaluationError(f"output {target}: furlora writes PNG (lossless, keeps 16-bit); use a .png name")
    as_array(image, "image")
    inpainter = prepare_inpainter(model, list(lora_files or []), settings, dtype=dtype, vae_dtype=vae_dtype,
                                  device=device, prediction_type=prediction_type)
    loras = load_loras(inpainter.pipeline, list(lora_files or []))
    try:
        if loras:
            apply_variant(inpainter.pipeline, Variant("lora", {x.adapter: lora_scale for x in loras}), settings.component_scales)
        result = inpainter.inpaint(image, mask, prompt=prompt, seed=seed)
    finally:
        if loras:
            unload_loras(inpainter.pipeline)
    save_png(target, result.image)
    return result


def demo_comparison(config: Any, summary: Any, output_dir: str | Path) -> Path | None:
    """The with/without-LoRA comparison of a finished training run (``furlora demo`` calls this).

    ``summary``: the run summary (its ``lora_files`` and ``embedding_files``, as attributes or
    dict keys). Uses the run's exported LoRA file (the diffusers one if present)
    and its embedding files of learned tokens (then the report
    shows base / LoRA / token / LoRA + token, prompts built by the run's ``tokens:`` rule),
    the held-out images (``train.validation.path``), the ``eval:`` settings (``eval.max_images``
    images at most), and the run's model, precision (``model.dtype`` / ``model.vae_dtype``),
    ``eval.device`` and ``train.prediction_type``. Returns the report's index.html, or None
    without LoRA or images.
    """
    files = _summary_field(summary, "lora_files")
    lora = files.get("diffusers") or files.get("kohya") or next(iter(files.values()), None)
    dataset = config.train.validation.path
    if lora is None or dataset is None:
        return None
    embeddings = list(_summary_field(summary, "embedding_files").values())
    result = run_comparison(config.model.source, [lora], dataset, Path(output_dir), config.eval,
                            data_settings=config.data, dtype=config.model.dtype, vae_dtype=config.model.vae_dtype,
                            prediction_type=config.train.prediction_type, embeddings=embeddings,
                            token_settings=config.tokens)
    return result.html


def _summary_field(summary: Any, name: str) -> dict[str, str]:
    """``name`` of a run summary: a typed summary's attribute or a plain dict's key (JSON read back)."""
    value = summary.get(name) if isinstance(summary, dict) else getattr(summary, name, None)
    return dict(value or {})
