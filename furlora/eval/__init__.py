"""Inpainting evaluation: multi-pass SDXL inpainting, seamless compositing, LoRA comparisons,
fur-aware metrics and visual reports.

One job per module (imports point down this list, never up):

* ``settings``       EvalSettings / PassSettings, the ``eval:`` config section
* ``passes``         per-pass and per-tile seeds, pass-list helpers
* ``image_io``       reading images and masks; results back in the input's format
* ``blend``          grow / shrink / feather, compositing (bit-identical outside the band)
* ``regions``        whole image, crop-to-mask and tiles: the canvas the model sees
* ``metrics``        pure numpy metrics (PSNR, SSIM, drift, seam error, detail, colour)
* ``latents``        VAE encode / decode scaled like the pipeline
* ``refiner``        the optional SDXL refiner pipeline
* ``inpaint``        MultiPassInpainter
* ``lora_variants``  LoRA files in the pipeline (checked first), off / on / scale variants
* ``samples``        images + masks + prompts from a dataset folder or files
* ``grid``, ``report``  comparison grids (PNG), tables (CSV, JSON) and the HTML page
* ``compare``        run_comparison (the report) and inpaint_one (one image)
* ``token_variants`` learned-token embedding files in a comparison (the token variants)
* ``validation_images``  ValidationImages, a trainer callback rendering validation inpaintings

The names below are imported lazily (``furlora.config`` imports ``furlora.eval.settings`` and
must not wait for torch / diffusers).
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {
    "EvalSettings": "furlora.eval.settings",
    "PassSettings": "furlora.eval.settings",
    "MultiPassInpainter": "furlora.eval.inpaint",
    "InpaintResult": "furlora.eval.inpaint",
    "run_comparison": "furlora.eval.compare",
    "inpaint_one": "furlora.eval.compare",
    "ComparisonResult": "furlora.eval.compare",
    "EvalSample": "furlora.eval.samples",
    "compute_metrics": "furlora.eval.metrics",
    "ValidationImages": "furlora.eval.validation_images",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports('furlora.eval', _EXPORTS)
