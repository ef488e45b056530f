"""MultiPassInpainter: repaint a masked region in several passes with diffusers' SDXL inpainting
pipeline, and composite so that nothing outside the blend band changes.

How a run goes (see :mod:`furlora.eval.blend` for the blend formula):

1. The mask is binarised (``eval.mask_threshold``); each pass grows/shrinks and feathers it
   into its blend weight ``w_k``.
2. Each pass runs on a :class:`~furlora.eval.regions.Region`: the whole image (padded to
   multiples of 8), a crop around its band at a working resolution, or overlapping tiles.
3. Consecutive passes on the same region and model hand over in latent space (``chaining:
   latent``): the pass's latents replace the previous ones inside the latent cells that touch
   the band, with one VAE decode at the end. The decoded result is blended into the image with
   the union weight of those passes. ``chaining: pixel`` decodes and blends after every pass.
4. The output equals the input, bit for bit, outside the union of the bands.

Works with the base 4-channel UNet (the pipeline re-imposes the known latents outside the mask
at every step) and with the 9-channel inpainting UNet (mask and masked-image latents as extra
input channels; the hole of the masked image is 0 in [-1, 1], as in training). Seeds are explicit:
each pass (and tile) gets a ``torch.Generator`` seeded from (run seed, pass index, tile index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from furlora.errors import EvaluationError, format_problems
from furlora.eval.blend import binarize, blend_weight, cell_mask, composite, expand_cells, tile_ramp, union_weight
from furlora.eval.image_io import Layout, as_array, load_mask, match_mask_size, restore_layout, to_rgb_float
from furlora.eval.latents import decode_latents, encode_latents, keep_vae_fp32
from furlora.eval.metrics import compute_metrics
from furlora.eval.passes import pass_seed
from furlora.eval.regions import Region, crop_region, full_region, tile_regions
from furlora.eval.settings import EvalSettings, MetricSettings, PassSettings
from furlora.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class PassRecord:
    """What one pass did."""

    index: int
    settings: PassSettings
    engine: str
    """"base" or "refiner"."""
    seeds: list[int]
    """One seed per region the pass ran on (one, or one per tile)."""
    regions: list[tuple[int, int, int, int]]
    """Boxes (top, left, bottom, right) of the full image the pass ran on."""
    working_size: tuple[int, int]
    """(height, width) the model saw (of the last region)."""
    weight: np.ndarray
    """float32 [H, W] in [0, 1]: this pass's blend weight."""
    image: np.ndarray | None = None
    """float32 [H, W, 3] in [0, 1]: the image after this pass (kept with keep_pass_images or pixel chaining)."""


@dataclass
class InpaintResult:
    """The outcome of :meth:`MultiPassInpainter.inpaint`."""

    image: np.ndarray
    """The result in the input's dtype and channel layout; equal to the input outside ``band``."""
    rgb: np.ndarray
    """float32 [H, W, 3] in [0, 1]: the result as the model produced and blended it."""
    input_rgb: np.ndarray
    """float32 [H, W, 3] in [0, 1]: the input."""
    mask: np.ndarray
    """bool [H, W]: the binarised input mask (True = repaint)."""
    weight: np.ndarray
    """float32 [H, W]: union blend weight of all passes (0 outside the band)."""
    layout: Layout
    passes: list[PassRecord] = field(default_factory=list)
    skipped: str | None = None
    """Why nothing was repainted (empty mask), else None."""

    @property
    def band(self) -> np.ndarray:
        """bool [H, W]: pixels the run was allowed to change (``weight > 0``)."""
        return self.weight > 0

    @property
    def seam_mask(self) -> np.ndarray:
        """bool [H, W]: ``weight >= 0.5``, whose border is the middle of the blend (where seams show)."""
        return self.weight >= 0.5

    @property
    def output_rgb(self) -> np.ndarray:
        """float32 [H, W, 3] in [0, 1]: the delivered ``image`` (the input's format, quantised) as RGB."""
        return to_rgb_float(self.image, "output")[0]

    def metrics(self, settings: MetricSettings, regions: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Metrics of the delivered output against the input (``regions``: also per region mask)."""
        return compute_metrics(self.output_rgb, self.input_rgb, self.mask, self.band, seam_mask=self.seam_mask,
                               regions=regions, **settings.model_dump())


class MultiPassInpainter:
    """Multi-pass SDXL inpainting on diffusers' ``StableDiffusionXLInpaintPipeline``.

    ``model``: an :class:`~furlora.models.sdxl.SDXLComponents` or a diffusers SDXL pipeline (its
    modules are shared, not copied: LoRA adapters attached to them are used). ``refiner``: a
    pipeline from :func:`~furlora.eval.refiner.load_refiner_pipeline` for passes with ``refiner``.
    """

    def __init__(self, model: Any, settings: EvalSettings | None = None, *, refiner: Any = None,
                 prediction_type: str = "auto") -> None:
        self.settings = settings or EvalSettings()
        self.pipeline = _as_inpaint_pipeline(model)
        self.refiner = refiner
        for pipe in (self.pipeline, refiner):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
                keep_vae_fp32(pipe)
        if prediction_type != "auto":
            # A LoRA trained with a forced prediction type (train.prediction_type) is sampled with it.
            scheduler = self.pipeline.scheduler
            if scheduler.config.prediction_type != prediction_type:
                scheduler.register_to_config(prediction_type=prediction_type)

    @classmethod
    def from_pretrained(
        cls, source: str, settings: EvalSettings | None = None, *, dtype: str = "fp32", vae_dtype: str = "fp32",
        device: str | None = None, prediction_type: str = "auto",
    ) -> MultiPassInpainter:
        """Load the model (and ``settings.refiner``) and build an inpainter; folders are checked first.

        ``device``: None = ``settings.device`` (auto: the GPU when present); the UNet and text
        encoders in ``dtype``, the VAE in ``vae_dtype`` (the trainer's rules,
        :func:`furlora.models.device.placement`).
        """
        from furlora.eval.refiner import check_refiner_folder, load_refiner_pipeline
        from furlora.models.device import placement
        from furlora.models.sdxl import load_sdxl

        settings = settings or EvalSettings()
        where = placement(device or settings.device, dtype, vae_dtype,
                          device_key="--device" if device else "eval.device")
        if settings.refiner:
            check_refiner_folder(settings.refiner)
        components = load_sdxl(source, dtype=dtype, vae_dtype=vae_dtype, device=where.device)
        refiner = (load_refiner_pipeline(settings.refiner, where.dtype, where.device, where.vae_dtype)
                   if settings.refiner else None)
        return cls(components, settings, refiner=refiner, prediction_type=prediction_type)

    @property
    def is_inpainting(self) -> bool:
        """True for the 9-channel inpainting UNet, False for the base 4-channel UNet."""
        return self.pipeline.unet.config.in_channels == 9

    @property
    def model_resolution(self) -> int:
        """The model's native side in pixels (UNet sample size x VAE factor; 1024 for SDXL)."""
        return int(self.pipeline.unet.config.sample_size) * self.pipeline.vae_scale_factor

    # ------------------------------------------------------------------------- public

    def inpaint(
        self,
        image: Any,
        mask: Any,
        *,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        seed: int = 0,
        passes: list[PassSettings] | None = None,
        progress: Any = None,
    ) -> InpaintResult:
        """Repaint ``mask`` (1 = repaint) of ``image`` with the passes (default ``settings.passes``).

        ``image``: a path, PIL image or array (uint8 / uint16 / float in [0, 1]; gray, RGB or
        RGBA); ``mask``: the same kinds, same size (see ``eval.resize_mask``). ``progress``: a
        tqdm-like object updated once per pass (else a bar of its own when ``settings.progress``).
        """
        settings = self.settings
        passes = list(passes if passes is not None else settings.passes)
        if not passes:
            raise EvaluationError("no passes given: eval.passes needs at least one pass")
        if int(seed) < 0:
            raise EvaluationError(f"seed {seed} is negative; seeds are integers >= 0")
        original = as_array(image, "image")
        rgb, layout = to_rgb_float(original, "image")
        soft = match_mask_size(load_mask(mask, "mask"), rgb.shape[:2], settings.resize_mask)
        binary = binarize(soft, settings.mask_threshold)
        self._check(passes, rgb.shape[:2])
        if not binary.any():
            reason = f"the mask has no pixel >= eval.mask_threshold ({settings.mask_threshold}): nothing to repaint"
            logger.warning("%s; returning the input unchanged", reason)
            return InpaintResult(original.copy(), rgb, rgb.copy(), binary, np.zeros(binary.shape, np.float32), layout,
                                 skipped=reason)
        if binary.all():
            logger.warning("the mask covers the whole image: the result is fully generated (no context is kept)")
        weights = [blend_weight(binary, p.grow, p.feather, f"eval.passes[{i}]") for i, p in enumerate(passes)]
        run = _Run(self, passes, weights, prompt, negative_prompt, seed)
        bar = progress if progress is not None else progress_bar(len(passes), "inpaint passes", "pass", leave=False,
                                                                 disable=not settings.progress)
        canvas = rgb.copy()
        try:
            for group, region in self._plan(passes, weights):
                canvas = run.tiled(canvas, group[0]) if region is None else run.segment(canvas, group, region)
                bar.update(len(group))
        finally:
            if progress is None:
                bar.close()
        weight = union_weight(weights)
        out = restore_layout(original, layout, canvas, weight > 0)
        return InpaintResult(out, canvas, rgb, binary, weight, layout, passes=run.records)

    # ------------------------------------------------------------------------- planning

    def _check(self, passes: list[PassSettings], size: tuple[int, int]) -> None:
        """All problems of the pass list for this image, before anything runs."""
        problems = []
        limit = int(self.model_resolution * self.settings.max_side_factor)
        for i, p in enumerate(passes):
            if p.refiner and self.refiner is None:
                problems.append(f"eval.passes[{i}] has refiner: true but no refiner model is loaded (eval.refiner)")
            if not (p.tile or p.crop_to_mask) and max(size) > limit:
                problems.append(
                    f"eval.passes[{i}]: the image is {size[1]}x{size[0]} px, larger than {limit} px (model "
                    f"resolution {self.model_resolution} x eval.max_side_factor {self.settings.max_side_factor}); "
                    f"set eval.passes[{i}].tile: true or crop_to_mask: true, or downscale the image"
                )
        if problems:
            raise EvaluationError(format_problems("cannot run these inpainting passes", problems))

    def _plan(self, passes: list[PassSettings], weights: list[np.ndarray]) -> list[tuple[list[int], Region | None]]:
        """Group passes: consecutive passes on the same region and model share one latent chain.

        Returns (pass indices, region); region None = a tiled pass (always alone).
        """
        groups: list[tuple[list[int], Region | None]] = []
        previous_key: tuple[Any, ...] | None = None
        for i, p in enumerate(passes):
            if p.tile:
                groups.append(([i], None))
                previous_key = None
                continue
            if p.crop_to_mask:
                region = crop_region(weights[i], p.crop_padding, p.working_resolution or self.model_resolution)
            else:
                region = full_region(*weights[i].shape)
            key = (region, p.refiner)
            if self.settings.chaining == "latent" and key == previous_key:
                groups[-1][0].append(i)
            else:
                groups.append(([i], region))
            previous_key = key
        return groups

    def pipe_for(self, p: PassSettings) -> Any:
        return self.refiner if p.refiner else self.pipeline


class _Run:
    """The state of one :meth:`MultiPassInpainter.inpaint` call (prompt cache, records)."""

    def __init__(self, owner: MultiPassInpainter, passes: list[PassSettings], weights: list[np.ndarray],
                 prompt: str | None, negative: str | None, seed: int) -> None:
        self.owner, self.passes, self.weights, self.seed = owner, passes, weights, seed
        self.prompt = prompt if prompt is not None else owner.settings.prompt
        self.negative = negative if negative is not None else owner.settings.negative_prompt
        self.keep = owner.settings.keep_pass_images or owner.settings.chaining == "pixel"  # keep every pass's image
        self.records: list[PassRecord] = []
        self._embeds: dict[tuple[int, str, str], tuple[Any, ...]] = {}
        self._masked: dict[tuple[int, bytes], Any] = {}  # masked-image latents of the current start image

    def segment(self, canvas: np.ndarray, indices: list[int], region: Region) -> np.ndarray:
        """Run passes ``indices`` on one region as one latent chain; returns the new canvas."""
        first = self.passes[indices[0]]
        pipe = self.owner.pipe_for(first)
        factor = pipe.vae_scale_factor
        start = region.cut(canvas)
        x0 = region.to_work(start)
        self._masked = {}
        latents = encode_latents(pipe, x0)
        done = np.zeros((x0.shape[0] // factor, x0.shape[1] // factor), bool)  # cells repainted so far
        for n, i in enumerate(indices):
            p = self.passes[i]
            cells = cell_mask(region.to_work(region.cut(self.weights[i]), is_weight=True), factor)
            seed = pass_seed(p, self.seed, i)
            known = None
            if pipe.unet.config.in_channels == 9 and (done & ~cells).any():
                # Cells repainted by earlier passes of the chain lie outside this pass's hole: the
                # 9-channel UNet must see them as they are now, not as at the segment start.
                repainted = expand_cells(done, factor)[..., None] > 0
                known = np.where(repainted, decode_latents(pipe, latents), x0)
            latents = self._denoise(pipe, p, latents, x0, cells, seed, known=known)
            done |= cells
            image = None
            if self.keep or n == len(indices) - 1:
                generated = region.from_work(decode_latents(pipe, latents))
                blend = union_weight([region.cut(self.weights[j]) for j in indices[: n + 1]])
                image = canvas.copy()
                region.cut(image)[...] = composite(start, generated, blend)
            self._record(i, [seed], [region.box], (region.work_height, region.work_width), image)
        return image

    def tiled(self, canvas: np.ndarray, i: int) -> np.ndarray:
        """Run pass ``i`` tile by tile; tiles blend into each other, then into the canvas with ``w_i``."""
        p = self.passes[i]
        pipe = self.owner.pipe_for(p)
        size = p.working_resolution or self.owner.model_resolution
        weight = self.weights[i]
        generated = canvas.copy()  # the pass's generated content, tiles ramped into each other
        seeds = []
        tiles = tile_regions(weight, size, min(p.tile_overlap, size // 2))
        for t, (region, ramp_top, ramp_left) in enumerate(tiles):
            start = composite(region.cut(canvas), region.cut(generated), region.cut(weight))
            x0 = region.to_work(start)
            cells = cell_mask(region.to_work(region.cut(weight), is_weight=True), pipe.vae_scale_factor)
            seed = pass_seed(p, self.seed, i, t)
            self._masked = {}
            latents = self._denoise(pipe, p, encode_latents(pipe, x0), x0, cells, seed)
            tile_out = region.from_work(decode_latents(pipe, latents))
            ramp = tile_ramp(region.height, region.width, ramp_top, ramp_left)
            view = region.cut(generated)
            view[...] = ramp[..., None] * tile_out + (1.0 - ramp[..., None]) * view
            seeds.append(seed)
        result = composite(canvas, generated, weight)
        work = (size, size) if not tiles else (tiles[-1][0].work_height, tiles[-1][0].work_width)
        self._record(i, seeds, [region.box for region, _, _ in tiles], work, result)
        return result

    def _record(self, i: int, seeds: list[int], boxes: list[tuple[int, int, int, int]], work: tuple[int, int],
                image: np.ndarray | None) -> None:
        p = self.passes[i]
        self.records.append(PassRecord(i, p, "refiner" if p.refiner else "base", seeds, boxes, work, self.weights[i],
                                       image if self.keep else None))

    def _denoise(self, pipe: Any, p: PassSettings, latents: Any, x0: np.ndarray, cells: np.ndarray, seed: int,
                 known: np.ndarray | None = None) -> Any:
        """One diffusers pipeline call in latent space; returns ``latents`` [1, 4, h/8, w/8] with the
        latent cells ``cells`` replaced by the call's result.

        ``known``: the image the 9-channel UNet sees outside the hole (default ``x0``, the start image).
        """
        import torch

        factor = pipe.vae_scale_factor
        mask_px = expand_cells(cells, factor)  # constant per latent cell: the pipeline's resize is exact
        kwargs: dict[str, Any] = {}
        if pipe.unet.config.in_channels == 9:
            # The 9-channel UNet sees the image with the hole at 0 in [-1, 1] (0.5 in [0, 1]);
            # passes with the same cells on the same start image share one VAE encode.
            hole = mask_px[..., None]
            if known is not None:
                kwargs["masked_image_latents"] = encode_latents(pipe, known * (1.0 - hole) + 0.5 * hole)
            else:
                key = (id(pipe), cells.tobytes())
                if key not in self._masked:
                    self._masked[key] = encode_latents(pipe, x0 * (1.0 - hole) + 0.5 * hole)
                kwargs["masked_image_latents"] = self._masked[key]
        embeds = self._prompt_embeds(pipe, p)
        result = pipe(
            image=latents,
            mask_image=torch.from_numpy(mask_px)[None, None],
            height=x0.shape[0],
            width=x0.shape[1],
            strength=p.strength,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="latent",
            prompt_embeds=embeds[0],
            negative_prompt_embeds=embeds[1],
            pooled_prompt_embeds=embeds[2],
            negative_pooled_prompt_embeds=embeds[3],
            **kwargs,
        )
        return torch.where(torch.from_numpy(cells)[None, None].to(latents.device), result.images.to(latents), latents)

    def _prompt_embeds(self, pipe: Any, p: PassSettings) -> tuple[Any, ...]:
        """(prompt, negative, pooled, negative pooled) embeddings, encoded once per pipe and prompt pair."""
        prompt = p.prompt if p.prompt is not None else self.prompt
        negative = p.negative_prompt if p.negative_prompt is not None else self.negative
        key = (id(pipe), prompt, negative)
        if key not in self._embeds:
            import torch

            with torch.no_grad():
                self._embeds[key] = pipe.encode_prompt(
                    prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1,
                    do_classifier_free_guidance=True, negative_prompt=negative,
                )
        return self._embeds[key]


# ----------------------------------------------------------------------------- helpers

def _as_inpaint_pipeline(model: Any) -> Any:
    from diffusers import StableDiffusionXLInpaintPipeline

    if isinstance(model, StableDiffusionXLInpaintPipeline):
        return model
    if hasattr(model, "pipeline_components"):
        return StableDiffusionXLInpaintPipeline(**model.pipeline_components())
    components = getattr(model, "components", None)
    if isinstance(components, dict) and "unet" in components and "text_encoder_2" in components:
        keep = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
        return StableDiffusionXLInpaintPipeline(**{k: components[k] for k in keep})
    raise EvaluationError(
        f"MultiPassInpainter needs SDXLComponents (furlora.models.sdxl.load_sdxl) or a diffusers SDXL "
        f"pipeline, got {type(model).__name__}"
    )
