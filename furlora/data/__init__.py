"""Training data: region masks, layouts, augmentation, buckets, caches and validation.

One job per module (imports point down this list, never up):

* ``settings``      DataSettings, the ``data:`` config section
* ``masks``         mask algebra (binarise, merge regions with weights, dilate/erode/feather: the one morphology)
* ``random_masks``  inpainting holes drawn from generators seeded by (seed, epoch, index)
* ``images``        decoding of images and masks (any mode, EXIF rotation)
* ``labelme``       LabelMe polygons -> masks
* ``validation_report``  Problem / ValidationReport
* ``layouts``       which files form a sample (furlora, imagefolder, kohya, alpha, labelme)
* ``validate``      open and check everything before training
* ``transforms``    geometric augmentation on image + masks alike, colour on the image only
* ``buckets``       aspect buckets and the resumable BucketBatchSampler
* ``cache``         content-keyed safetensors cache for latents and text embeddings
* ``dataset``       MaskedDataset and collate_samples
* ``preview``       PNG overlays and contact sheets

The names below are imported lazily, so that ``import furlora.data.settings`` stays cheap.
"""

from __future__ import annotations

from furlora.lazy import lazy_exports

_EXPORTS = {"DataSettings": "furlora.data.settings", "MaskedDataset": "furlora.data.dataset", "collate_samples": "furlora.data.dataset",
            "BucketBatchSampler": "furlora.data.buckets", "validate_dataset": "furlora.data.validate",
            "ValidationReport": "furlora.data.validation_report", "merge_regions": "furlora.data.masks", "write_preview": "furlora.data.preview"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("furlora.data", _EXPORTS)
