"""Training data: region masks, layouts, augmentation, buckets, caches and validation.

One job per module (imports point down this list, never up):

* ``settings``      DataSettings, the ``data:`` config section
* ``masks``         mask algebra (binarise, merge regions with weights, dilate/erode/feather, latent downsampling)
* ``random_masks``  inpainting holes drawn from generators seeded by (seed, epoch, index)
* ``images``        decoding of images and masks (any mode, EXIF rotation)
* ``labelme``       LabelMe polygons -> masks
* ``report``        Problem / ValidationReport
* ``layouts``       which files form a sample (furlora, imagefolder, kohya, alpha, labelme)
* ``validate``      open and check everything before training
* ``transforms``    geometric augmentation on image + masks alike, colour on the image only
* ``buckets``       aspect buckets and the resumable BucketBatchSampler
* ``cache``         content-keyed safetensors cache for latents and text embeddings
* ``dataset``       MaskedDataset and collate_samples
* ``preview``       PNG overlays and contact sheets

Import what you need from the module (``from furlora.data.dataset import MaskedDataset``); this
package imports nothing so that ``import furlora.data.settings`` stays cheap.
"""
