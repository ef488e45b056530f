"""Find the samples of a dataset folder in the layouts people have, and say which layout it was.

Layouts (``data.layout``; ``auto`` picks the first that matches, in this order):

* ``furlora`` / ``imagefolder`` with ``metadata.jsonl``: one JSON object per line with
  ``file_name`` (image path relative to the folder), the caption column (``text``), and masks as
  a ``regions`` mapping ``{"face": "dog.face.png"}`` (furlora) and / or ``<region>_file_name``
  columns (HF imagefolder style). Sidecar masks (below) are found too.
* ``labelme``: ``<stem>.json`` LabelMe files beside the images; each shape's label is a region.
* ``kohya``: the images (any sub-folders) plus a mask folder (``masks/`` or ``mask/``, or
  ``data.mask_dir``) holding ``<stem>.png`` (region ``data.default_region``) or
  ``<region>/<stem>.png``, paired by file stem; captions ``<stem>.txt`` beside the images.
* ``furlora`` (sidecars): ``dog.png`` + ``dog.face.png``, ``dog.tail.png`` ... + ``dog.txt``.
* ``alpha``: the alpha channel of each (RGBA) image is its mask, region ``data.default_region``.

Discovery only pairs files; decoding and checking them is :mod:`furlora.data.validate`'s job.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from furlora.data.images import ALPHA_MODES, IMAGE_EXTENSIONS, peek
from furlora.data.labelme import Shape, looks_like_labelme, read_labelme
from furlora.data.validation_report import Problem
from furlora.data.settings import REGION_NAME, DataSettings
from furlora.errors import DatasetError

METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class MaskSource:
    """Where one region mask of a sample comes from."""

    region: str
    path: Path  # the mask file, the image itself (alpha) or the LabelMe JSON
    kind: Literal["file", "alpha", "labelme"] = "file"
    shapes: tuple[Shape, ...] = ()
    declared_size: tuple[int, int] | None = None  # LabelMe imageHeight / imageWidth


@dataclass
class SampleRecord:
    """One image with its mask sources and caption, as found on disk (not yet decoded)."""

    image: Path
    key: str  # stable id: path relative to the dataset folder, without extension
    masks: list[MaskSource] = field(default_factory=list)
    caption: str | None = None
    caption_path: Path | None = None


@dataclass
class Discovery:
    root: Path
    layout: str
    reason: str
    records: list[SampleRecord]
    problems: list[Problem]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _walk(root: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Every file under ``root`` (sorted, hidden files and folders left out, ``skip`` folders pruned)."""
    out: list[Path] = []
    skip_resolved = {s.resolve() for s in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip_resolved)
        out.extend(here / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _key(root: Path, image: Path) -> str:
    return image.relative_to(root).with_suffix("").as_posix()


def safe_name(name: str) -> str:
    """A file-name-safe version of a sample key or variant name (keys may hold '/'): letters, digits
    and ``-_.@`` are kept, every other character becomes ``_``; an empty name becomes ``sample``."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name) or "sample"


def _record(root: Path, image: Path, settings: DataSettings, problems: list[Problem],
            masks: list[MaskSource] | None = None) -> SampleRecord:
    """The record of ``image`` with ``masks`` and its sidecar caption."""
    return SampleRecord(image, _key(root, image), masks or [], *_caption(image, settings, problems))


def _caption(image: Path, settings: DataSettings, problems: list[Problem]) -> tuple[str | None, Path | None]:
    path = image.with_name(image.stem + settings.captions.extension)
    if not path.is_file():
        return None, None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        problems.append(Problem(path, "caption is not UTF-8 text; re-save it as UTF-8", kind="caption", image=image))
        return None, path
    except OSError as exc:
        problems.append(Problem(path, f"caption cannot be read: {exc}", kind="caption", image=image))
        return None, path
    return (text or None), path


def _check_duplicates(records: list[SampleRecord], key_of, problems: list[Problem], why: str) -> None:
    groups: dict[str, list[SampleRecord]] = defaultdict(list)
    for rec in records:
        groups[key_of(rec)].append(rec)
    for key, group in groups.items():
        if len(group) > 1:
            names = ", ".join(str(r.image) for r in group)
            for rec in group:
                problems.append(
                    Problem(rec.image, f"duplicate stem {key!r} ({names}): {why}; rename or remove all but one", kind="duplicate", image=rec.image)
                )


def _sidecars(files: list[Path], settings: DataSettings) -> tuple[list[Path], dict[Path, list[tuple[str, Path]]], list[Path]]:
    """Split files into images, ``{dir/stem: [(region, mask)]}`` and orphan masks (no image)."""
    images = [f for f in files if _is_image(f)]
    stems = {(f.parent, f.stem) for f in images}
    masks: dict[Path, list[tuple[str, Path]]] = defaultdict(list)
    undecided: list[Path] = []
    plain: list[Path] = []
    for f in images:
        base, dot, region = f.stem.rpartition(".")
        if dot and (f.parent, base) in stems and REGION_NAME.match(region):
            masks[f.parent / base].append((region, f))
        elif dot and REGION_NAME.match(region):
            undecided.append(f)
        else:
            plain.append(f)
    regions = set(settings.regions) if settings.regions else {r for pairs in masks.values() for r, _ in pairs}
    orphans = [f for f in undecided if f.stem.rpartition(".")[2] in regions]
    plain += [f for f in undecided if f.stem.rpartition(".")[2] not in regions]
    return sorted(plain), masks, orphans


# ----------------------------------------------------------------------------- detection

def detect_layout(root: Path, settings: DataSettings, files: list[Path]) -> tuple[str, str]:
    """(layout, reason) for ``data.layout: auto``; the reason is logged and shown by ``dataset check``."""
    if (root / METADATA).is_file():
        for line in (root / METADATA).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "regions" in entry:
                return "furlora", f"found {METADATA} with a `regions` mapping"
        return "imagefolder", f"found {METADATA} (file_name / {settings.captions.column})"
    image_stems = {(f.parent, f.stem) for f in files if _is_image(f)}
    for f in files:
        if f.suffix.lower() == ".json" and (f.parent, f.stem) in image_stems and looks_like_labelme(f):
            return "labelme", f"found LabelMe annotations such as {f.name}"
    mask_dir = _mask_dir(root, settings)
    if mask_dir is not None:
        return "kohya", f"found mask folder {mask_dir.name}/ beside the images"
    _, masks, _ = _sidecars(files, settings)
    if masks:
        example = next(iter(masks.values()))[0][1].name
        return "furlora", f"found <stem>.<region> mask files such as {example}"
    for f in [f for f in files if _is_image(f)][:50]:
        info = peek(f)
        if info and info[0] in ALPHA_MODES:
            return "alpha", f"no mask files, but images such as {f.name} have an alpha channel"
    return "furlora", "no masks of any layout found (every image will be reported as having no mask)"


def _mask_dir(root: Path, settings: DataSettings) -> Path | None:
    if settings.mask_dir is not None:
        path = Path(settings.mask_dir)
        path = path if path.is_absolute() else root / path
        if not path.is_dir():
            raise DatasetError(f"data.mask_dir: folder {path} does not exist")
        return path
    for name in ("masks", "mask"):
        if (root / name).is_dir():
            return root / name
    return None


# ----------------------------------------------------------------------------- layouts

def _from_sidecars(root: Path, files: list[Path], settings: DataSettings, problems: list[Problem]) -> list[SampleRecord]:
    images, masks, orphans = _sidecars(files, settings)
    for f in orphans:
        base, _, region = f.stem.rpartition(".")
        problems.append(Problem(f, f"mask of region {region!r} has no image {base}.* beside it; add the image or remove the mask", kind="orphan_mask"))
    records = [_record(root, img, settings, problems, [MaskSource(*pair) for pair in sorted(masks.get(img.parent / img.stem, []))])
               for img in images]
    _check_duplicates(records, lambda r: r.key, problems, "masks and captions are paired by stem")
    return records


def _from_metadata(root: Path, files: list[Path], settings: DataSettings, problems: list[Problem]) -> list[SampleRecord]:
    meta = root / METADATA
    if not meta.is_file():
        raise DatasetError(f"layout {settings.layout}: {meta} does not exist (write one JSON line per image, or use data.layout: auto)")
    listed: dict[Path, SampleRecord] = {}
    referenced: set[Path] = set()
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta} cannot be read as UTF-8 text: {exc}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(meta, f"line {n} is not valid JSON ({exc.msg})", kind="metadata"))
            continue
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(Problem(meta, f"line {n} has no `file_name` (the image path relative to {root})", kind="metadata"))
            continue
        image = root / name
        if not image.is_file():
            problems.append(Problem(meta, f"line {n}: file_name {name!r} does not exist ({image})", kind="missing_image"))
            continue
        sources: list[MaskSource] = []
        regions = entry.get("regions", {})
        if not isinstance(regions, dict):
            problems.append(Problem(meta, f"line {n}: `regions` must map region names to mask files", kind="metadata", image=image))
            regions = {}
        columns = {k[: -len("_file_name")]: v for k, v in entry.items() if k.endswith("_file_name") and k != "file_name"}
        for region, rel in {**columns, **regions}.items():
            if not isinstance(rel, str):
                problems.append(Problem(meta, f"line {n}: mask of region {region!r} must be a file name", kind="metadata", image=image))
                continue
            mask = root / rel
            referenced.add(mask.resolve())
            if not mask.is_file():
                problems.append(Problem(mask, f"mask of region {region!r} listed in {METADATA} line {n} does not exist", kind="missing_mask_file", image=image))
                continue
            sources.append(MaskSource(region, mask))
        caption = entry.get(settings.captions.column)
        caption_path: Path | None = meta
        if caption is not None and not isinstance(caption, str):
            problems.append(Problem(meta, f"line {n}: caption column {settings.captions.column!r} must be text", kind="caption", image=image))
            caption = None
        if not caption:
            caption, caption_path = _caption(image, settings, problems)
        rec = SampleRecord(image, _key(root, image), sources, (caption or "").strip() or None, caption_path)
        if image.resolve() in listed:
            problems.append(Problem(meta, f"line {n}: {name!r} is listed twice; keep one line per image", kind="duplicate", image=image))
            continue
        listed[image.resolve()] = rec
    records = list(listed.values())
    # Sidecar masks beside listed images count too (a metadata.jsonl with captions only is common).
    _, side, _ = _sidecars(files, settings)
    side_files = {p.resolve() for pairs in side.values() for _, p in pairs}
    for rec in records:
        have = {m.region for m in rec.masks}
        for region, path in sorted(side.get(rec.image.parent / rec.image.stem, [])):
            if region not in have:
                rec.masks.append(MaskSource(region, path))
    for f in files:
        r = f.resolve()
        if _is_image(f) and r not in listed and r not in referenced and r not in side_files:
            problems.append(Problem(f, f"image is not listed in {METADATA}; it is ignored (add a line for it to use it)", "warning", kind="unlisted"))
    return records


def _from_mask_dir(root: Path, files: list[Path], settings: DataSettings, problems: list[Problem]) -> list[SampleRecord]:
    mask_dir = _mask_dir(root, settings)
    if mask_dir is None:
        raise DatasetError(f"layout kohya: no mask folder in {root} (create masks/ with <stem>.png, or set data.mask_dir)")
    records = [_record(root, img, settings, problems) for img in _walk(root, skip=(mask_dir,)) if _is_image(img)]
    _check_duplicates(records, lambda r: r.image.stem, problems, f"masks in {mask_dir.name}/ are paired by file stem")
    by_stem = {r.image.stem: r for r in records}
    for f in _walk(mask_dir):
        if not _is_image(f):
            continue
        parts = f.relative_to(mask_dir).parts
        if len(parts) == 1:
            region = settings.default_region
        elif len(parts) == 2 and REGION_NAME.match(parts[0]):
            region = parts[0]
        else:
            problems.append(Problem(f, f"mask is nested too deep or in a folder that is not a region name; use {mask_dir.name}/<stem>.png or {mask_dir.name}/<region>/<stem>.png", kind="orphan_mask"))
            continue
        rec = by_stem.get(f.stem)
        if rec is None:
            problems.append(Problem(f, f"mask (region {region!r}) has no image with stem {f.stem!r}; add the image or remove the mask", kind="orphan_mask"))
            continue
        rec.masks.append(MaskSource(region, f))
    return records


def _from_alpha(root: Path, files: list[Path], settings: DataSettings, problems: list[Problem]) -> list[SampleRecord]:
    records = [_record(root, img, settings, problems, [MaskSource(settings.default_region, img, "alpha")])
               for img in files if _is_image(img)]
    _check_duplicates(records, lambda r: r.key, problems, "captions are paired by stem")
    return records


def _from_labelme(root: Path, files: list[Path], settings: DataSettings, problems: list[Problem]) -> list[SampleRecord]:
    records = [_record(root, img, settings, problems) for img in files if _is_image(img)]
    by_stem = {(rec.image.parent, rec.image.stem): rec for rec in reversed(records)}  # the first of duplicates
    _check_duplicates(records, lambda r: r.key, problems, "LabelMe files are paired by stem")
    for f in files:
        if f.suffix.lower() != ".json":
            continue
        rec = by_stem.get((f.parent, f.stem))
        if rec is None:
            problems.append(Problem(f, f"LabelMe file has no image {f.stem}.* beside it; add the image or remove the file", kind="orphan_mask"))
            continue
        try:
            doc = read_labelme(f)
        except DatasetError as exc:
            problems.append(Problem(f, str(exc).replace(f"LabelMe file {f}", "LabelMe file").strip(), kind="labelme", image=rec.image))
            continue
        by_label: dict[str, list[Shape]] = defaultdict(list)
        for shape in doc.shapes:
            by_label[shape.label].append(shape)
        rec.masks.extend(MaskSource(label, f, "labelme", tuple(shapes), doc.size) for label, shapes in sorted(by_label.items()))
    return records


_READERS = {"furlora": _from_sidecars, "imagefolder": _from_metadata, "kohya": _from_mask_dir, "alpha": _from_alpha, "labelme": _from_labelme}


def discover(root: str | Path, settings: DataSettings) -> Discovery:
    """Pair images with masks and captions under ``root`` in ``settings.layout`` (or the detected one).

    Raises DatasetError at once for a missing or image-less folder; every other problem is
    collected into ``Discovery.problems`` for the validation report.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder (set data.path)")
    files = _walk(root)
    if not any(_is_image(f) for f in files):
        raise DatasetError(f"dataset folder {root} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)}, in sub-folders too)")
    if settings.layout == "auto":
        layout, reason = detect_layout(root, settings, files)
    else:
        layout, reason = settings.layout, "set by data.layout"
    problems: list[Problem] = []
    reader = _READERS[layout]
    if layout == "furlora" and (root / METADATA).is_file():
        reader = _from_metadata
    records = reader(root, files, settings, problems)
    if not records:
        raise DatasetError(f"dataset folder {root} ({layout} layout) has no usable images; see its {METADATA} or file names")
    return Discovery(root=root, layout=layout, reason=reason, records=records, problems=problems)
