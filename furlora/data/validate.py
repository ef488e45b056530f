"""Validation before training: open every file, pair and check every mask, report all problems.

:func:`validate_dataset` decodes every image and every mask once, and returns the usable
samples plus a :class:`~furlora.data.validation_report.ValidationReport` that lists every problem with its
file path. ``data.bad_samples`` decides what errors do: ``error`` raises one DatasetError with
the whole list, ``skip`` leaves the bad samples out (logged and counted).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from furlora.data.buckets import assign_bucket, make_buckets
from furlora.data.images import LoadedImage, LoadedMask, load_image, load_mask
from furlora.data.labelme import rasterize
from furlora.data.layouts import Discovery, MaskSource, SampleRecord, discover
from furlora.data.masks import coverage, grey_fraction, prepare_mask
from furlora.data.validation_report import Problem, ValidationReport
from furlora.data.settings import DataSettings
from furlora.errors import DatasetError
from furlora.progress import progress_bar

logger = logging.getLogger(__name__)

#: Region of samples trained on the whole image (``data.missing_mask: full``).
FULL_REGION = "whole_image"
#: An image enlarged more than this many times (linear) to reach its bucket is reported (warning) ...
UPSCALE_WARNING = 2.0
#: ... and past this many times it is an error: 8x turns one pixel into an 8x8 block, no fur left to learn.
UPSCALE_LIMIT = 8.0


@dataclass(frozen=True)
class SampleInfo:
    """A sample that passed validation: everything needed to build it, nothing decoded."""

    key: str
    image: Path
    size: tuple[int, int]  # (height, width) after EXIF rotation
    orientation: int  # EXIF orientation of the image file (also applied to its mask files)
    masks: dict[str, MaskSource] = field(default_factory=dict)  # used region -> source
    caption: str = ""  # prefix + caption (or the default caption)
    full_image: bool = False  # no mask: trained on the whole image (data.missing_mask: full)


def decode_mask(source: MaskSource, image: LoadedImage) -> LoadedMask:
    """One region's mask: ``.values`` is raw float32 ``[H, W]`` in ``[0, 1]`` (not binarised). Raises DatasetError."""
    if source.kind == "alpha":
        if image.alpha is None:
            raise DatasetError(f"image {source.path} has no alpha channel, so it has no mask (layout alpha)")
        return LoadedMask(image.alpha, False)
    if source.kind == "labelme":
        return LoadedMask(rasterize(source.shapes, image.size), False)
    return load_mask(source.path, image.orientation, image.size)


def upscale_factor(size: tuple[int, int], settings: DataSettings) -> float:
    """How much an image of (h, w) ``size`` is enlarged to cover its bucket at ``data.resolution``."""
    bh, bw = assign_bucket(size, make_buckets(settings.resolution, settings.buckets))
    return max(bh / size[0], bw / size[1])


def _size_problems(image: LoadedImage, record: SampleRecord, settings: DataSettings) -> list[Problem]:
    """A warning for an image enlarged more than UPSCALE_WARNING times, an error past UPSCALE_LIMIT."""
    factor = upscale_factor(image.size, settings)
    if factor <= UPSCALE_WARNING:
        return []
    h, w = image.size
    what = f"image is {w}x{h}, so training at data.resolution {settings.resolution} enlarges it {factor:.1f}x"
    if factor > UPSCALE_LIMIT:
        return [Problem(record.image, f"{what} (more than {UPSCALE_LIMIT:g}x): it would train on blur; use a larger image, lower data.resolution, or remove it", kind="too_small", image=record.image)]
    return [Problem(record.image, f"{what}: expect blurred detail; a larger image or a lower data.resolution keeps the fur sharp", "warning", kind="too_small", image=record.image)]


def _check_mask(source: MaskSource, raw: np.ndarray, image: LoadedImage, record: SampleRecord, settings: DataSettings) -> tuple[list[Problem], float]:
    """Problems of one decoded region mask, and its coverage after binarisation (-1 if unusable)."""
    problems: list[Problem] = []
    img = record.image
    if source.kind == "labelme" and source.declared_size and source.declared_size != image.size:
        (dh, dw), (h, w) = source.declared_size, image.size
        problems.append(Problem(source.path, f"region {source.region!r}: LabelMe says the image is {dw}x{dh} but {img.name} is {w}x{h}; re-annotate the right image", kind="size_mismatch", image=img))
        return problems, -1.0
    if raw.shape != image.size:
        h, w = raw.shape
        ih, iw = image.size
        exif = f" (after applying the image's EXIF orientation {image.orientation})" if image.orientation != 1 else ""
        if image.orientation in (5, 6, 7, 8) and raw.shape[::-1] == image.size:
            exif += (
                "; it looks drawn on the rotated (displayed) image: masks follow the image file's stored"
                " pixels unless they carry their own EXIF orientation, so save it with orientation 1"
            )
        problems.append(Problem(source.path, f"mask is {w}x{h} but its image {img.name} is {iw}x{ih}{exif}; masks must have the image's size", kind="size_mismatch", image=img))
        return problems, -1.0
    masks = settings.masks
    if masks.mode == "binary" and source.kind == "file":
        grey = grey_fraction(raw)
        if grey > masks.non_binary_tolerance:
            problems.append(Problem(source.path, f"mask is not binary ({grey:.1%} grey pixels); it is thresholded at {masks.threshold} (set data.masks.mode: grey to use grey levels as weights)", "warning", kind="non_binary", image=img))
    cov = coverage(prepare_mask(raw, masks.mode, masks.threshold))
    if cov == 0.0:
        problems.append(Problem(source.path, f"mask of region {source.region!r} is all black (empty): nothing to learn there; draw the region or delete the mask", "warning", kind="empty_mask", image=img))
    elif cov >= 1.0 and not masks.allow_full:
        problems.append(Problem(source.path, f"mask of region {source.region!r} is all white (covers the whole image); white = 1 = the region to learn, so an inverted mask looks like this. Invert it, or set data.masks.allow_full: true if intended", kind="full_mask", image=img))
    return problems, cov


def _check_record(record: SampleRecord, settings: DataSettings, layout: str, report: ValidationReport) -> tuple[SampleInfo | None, list[Problem]]:
    problems: list[Problem] = []
    try:
        image = load_image(record.image)
    except DatasetError as exc:
        return None, [Problem(record.image, str(exc).replace(f" {record.image}", "", 1), kind="unreadable", image=record.image)]
    problems += _size_problems(image, record, settings)
    if image.alpha is not None and layout != "alpha":
        problems.append(Problem(record.image, f"image has an alpha channel ({image.mode}); it is ignored and the RGB values are used (set data.layout: alpha to use it as the mask)", "warning", kind="alpha_ignored", image=record.image))
    used: dict[str, MaskSource] = {}
    coverages: dict[str, float] = {}
    # An image without alpha in the alpha layout simply has no mask (data.missing_mask decides).
    sources = [m for m in record.masks if not (m.kind == "alpha" and image.alpha is None)]
    for source in sources:
        if source.region in settings.ignored_regions:
            report.counts["masks of data.ignored_regions left out"] += 1
            continue
        if settings.regions is not None and source.region not in settings.regions:
            close = difflib.get_close_matches(source.region, settings.regions, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(Problem(
                source.path,
                f"unknown region {source.region!r}{hint}: data.regions is [{', '.join(settings.regions)}]; "
                "rename the mask, add the region to data.regions, or list it in data.ignored_regions",
                kind="unknown_region", image=record.image,
            ))
            continue
        if source.region in used:
            problems.append(Problem(source.path, f"second mask for region {source.region!r} (first: {used[source.region].path}); keep one", kind="duplicate_mask", image=record.image))
            continue
        try:
            loaded = decode_mask(source, image)
        except DatasetError as exc:
            problems.append(Problem(source.path, str(exc).replace(f" {source.path}", "", 1), kind="unreadable" if source.kind != "alpha" else "missing_mask", image=record.image))
            continue
        raw = loaded.values
        if loaded.drawn_on_displayed:
            report.counts["masks drawn on the displayed (EXIF-rotated) image, used as drawn"] += 1
            logger.info("%s: mask has the displayed size of %s (EXIF orientation %d), not its stored size: used as drawn on the displayed image", source.path, record.image.name, image.orientation)
        mask_problems, cov = _check_mask(source, raw, image, record, settings)
        problems += mask_problems
        if cov >= 0:
            used[source.region] = source
            coverages[source.region] = cov
    errors = [p for p in problems if p.severity == "error"]
    full_image = False
    if not [m for m in sources if m.region not in settings.ignored_regions]:
        if settings.missing_mask == "error":
            problems.append(Problem(record.image, f"image has no mask ({_expected(record, layout, settings)}); add one, or set data.missing_mask: full to train on the whole image", kind="missing_mask", image=record.image))
            return None, problems
        full_image = True
        report.counts["images without mask, trained on the whole image"] += 1
    elif not errors and used and all(c == 0.0 for c in coverages.values()):
        problems.append(Problem(record.image, "every mask of this image is empty (all black): the sample would train nothing", kind="empty_mask", image=record.image))
    caption = record.caption
    if caption is None:
        if settings.captions.missing == "error":
            problems.append(Problem(record.image, f"image has no caption ({record.image.stem}{settings.captions.extension} or a metadata.jsonl `{settings.captions.column}`); add one, or set data.captions.missing: default", kind="missing_caption", image=record.image))
        else:
            report.counts["captions missing (default caption used)"] += 1
            caption = settings.captions.default
    if any(p.severity == "error" for p in problems):
        return None, problems
    for region, cov in coverages.items():
        if cov > 0:
            report.regions_found[region] = report.regions_found.get(region, 0) + 1
    info = SampleInfo(
        key=record.key, image=record.image, size=image.size, orientation=image.orientation, masks=used,
        caption=settings.captions.prefix + (caption or ""), full_image=full_image,
    )
    return info, problems


def _expected(record: SampleRecord, layout: str, settings: DataSettings) -> str:
    stem = record.image.stem
    return {
        "furlora": f"looked for {stem}.<region>.png beside it",
        "imagefolder": "no mask column (<region>_file_name) in metadata.jsonl and no sidecar mask",
        "kohya": f"looked for {stem}.png in the mask folder",
        "alpha": "the image has no alpha channel",
        "labelme": f"looked for {stem}.json",
    }.get(layout, "no mask found")


def validate_dataset(
    root: str | Path, settings: DataSettings, *, strict: bool | None = None
) -> tuple[list[SampleInfo], list[str], ValidationReport]:
    """Check a dataset folder: returns (usable samples, region names used, report).

    Raises DatasetError when the folder is missing or has no images, and, when ``strict``
    (default: ``data.bad_samples == "error"``), when any error-level problem was found (all of
    them listed) or no sample is usable. ``strict=False`` always returns the report.
    """
    discovery: Discovery = discover(root, settings)
    report = ValidationReport(root=Path(root), layout=discovery.layout, layout_reason=discovery.reason, images_found=len(discovery.records))
    report.problems.extend(discovery.problems)
    bad_images = {p.image for p in discovery.problems if p.severity == "error" and p.image is not None}
    samples: list[SampleInfo] = []
    records = discovery.records
    with progress_bar(len(records), "checking dataset", "img", disable=len(records) < 100) as bar:
        for record in records:
            info, problems = _check_record(record, settings, discovery.layout, report)
            report.problems.extend(problems)
            if info is None or record.image in bad_images:
                report.skipped.append(record.image)
            else:
                samples.append(info)
            bar.update()
    found = sorted(report.regions_found)
    regions = list(settings.regions) if settings.regions is not None else found
    if any(s.full_image for s in samples) and FULL_REGION not in regions:
        regions.append(FULL_REGION)
    for name in settings.regions or []:
        if name not in report.regions_found:
            report.problems.append(Problem(report.root, f"region {name!r} of data.regions has no non-empty mask in any sample", "warning", kind="unused_region"))
    for name in settings.region_weights:
        if settings.regions is None and name not in report.regions_found:
            report.problems.append(Problem(report.root, f"data.region_weights names region {name!r}, but no sample has a mask for it (found: {', '.join(found) or 'none'})", "warning", kind="unused_region"))
    report.regions_used = regions
    report.samples_used = len(samples)
    logger.info(
        "dataset %s: layout %s (%s); %d images, %d samples used, %d skipped; regions used: %s; %d error(s), %d warning(s)",
        report.root, report.layout, report.layout_reason, report.images_found, len(samples), len(report.skipped),
        ", ".join(f"{r} ({report.regions_found.get(r, 0)})" for r in regions) or "none", len(report.errors), len(report.warnings),
    )
    for problem in report.warnings:
        logger.warning("%s", problem)
    if (settings.bad_samples == "error") if strict is None else strict:
        report.raise_for_errors()
    for problem in report.errors:
        logger.warning("skipped: %s", problem)
    if not samples and strict is not False:
        raise DatasetError(f"dataset {report.root}: no usable samples left after validation\n{report.summary()}")
    return samples, regions, report
