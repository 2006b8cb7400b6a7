"""MS COCO 2014 (instances JSON + images) → the VOC-layout dataset contract, with semantic masks and labels.

Input root::

    {root}/train2014/*.jpg  {root}/val2014/*.jpg
    {root}/annotations/instances_train2014.json  {root}/annotations/instances_val2014.json

Output (see :mod:`wsss.data.dataset`): ``JPEGImages/{id}.jpg`` are symlinks to the original files (absolute paths,
nothing copied); ids are the COCO file stems (``COCO_train2014_000000000009``). ``SegmentationClass/{id}.png``
holds the rendered semantic mask.

Rules (fixed here so that every run gives the same bytes):

* **Class ids.** Categories sorted by COCO category id get ids 1..K (K = 80 for COCO), 0 is background. Names in
  ``classes.txt`` and ``labels.tsv`` have whitespace replaced by ``_`` (``traffic light`` → ``traffic_light``)
  because ``labels.tsv`` separates names by spaces. Every subset's JSON must list the same categories.
* **Instance area** is the pixel count of the rendered instance mask (pycocotools ``area`` of its RLE), not the
  JSON ``area`` field.
* **min_area.** Non-crowd instances with fewer than ``min_area`` pixels are *small*: they give no image label and
  are treated like crowd regions in the mask. ``min_area = 0`` drops nothing.
* **Overlaps.** Kept non-crowd instances are painted in descending area order, ties in ascending annotation id, each
  overwriting what is under it: where instances overlap, the smallest wins (an object lying on a larger one
  keeps its pixels); among equal areas the higher annotation id wins.
* **Ignore.** Pixels of crowd (``iscrowd=1``) and small instances become 255 unless a kept non-crowd instance
  covers them. Everything else is 0 (background).
* **Labels** of an image are the classes of its kept non-crowd instances, in class-id order.
* **Dropped images.** An image without any kept non-crowd instance (no annotations, only crowds, or only small
  instances) is left out of the split lists, ``labels.tsv`` and the output folders, as WSSS works on COCO do; the
  counts are logged.
* Split lists are sorted by id.

Polygons and RLE (compressed or not) are rasterised with pycocotools. Polygons with fewer than 3 points are
skipped (COCO has a few; pycocotools would misread a 2-point polygon as a box). Malformed input — bad JSON, an
annotation naming an unknown image or category, an RLE whose runs do not add up to the image size, a missing or
mis-sized image file — raises :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from wsss.data.dataset import format_labels_tsv, validate_id
from wsss.runtime.errors import InputError
from wsss.runtime.io import DEFAULT_MAX_PIXELS, IGNORE, atomic_dir, check_apart, write_label_png, write_text
from wsss.runtime.progress import progress

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {"train": "train2014", "val": "val2014"}
MAX_CLASSES = 254  # ids 1..254 fit uint8 next to 0 (background) and 255 (ignore)
MAX_COORD = 1e6  # pycocotools rasterises polygons in int32 at 5x scale; far-out coordinates would overflow


@dataclass(frozen=True)
class Instance:
    """One annotation rendered to RLE: ``class_id`` is the contiguous id (1..K)."""

    ann_id: int
    class_id: int
    iscrowd: bool
    rle: dict


@dataclass(frozen=True)
class RawAnnotation:
    """One annotation as read from the JSON (segmentation not yet rasterised)."""

    ann_id: int
    class_id: int
    iscrowd: bool
    segmentation: Any


@dataclass(frozen=True)
class ImageRecord:
    """One image of a subset with its annotations."""

    image_id: str
    path: Path
    height: int
    width: int
    annotations: tuple[RawAnnotation, ...]


@dataclass(frozen=True)
class CocoSubset:
    """A parsed and validated instances JSON: category table and images in JSON order."""

    json_path: Path
    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    images: tuple[ImageRecord, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def class_table(categories: Any, source: str | Path) -> tuple[dict[int, int], list[str]]:
    """Map COCO category ids to contiguous ids 1..K (sorted by category id); return it and the class names.

    ``names[0]`` is ``background``; other names have whitespace runs replaced by ``_``.
    """
    if not isinstance(categories, list) or not categories:
        raise InputError(source, "'categories' must be a non-empty list")
    by_id: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise InputError(source, f"category entry {cat!r:.80} needs an integer 'id' and a string 'name'")
        if cat["id"] in by_id:
            raise InputError(source, f"duplicate category id {cat['id']}")
        name = "_".join(cat["name"].split())
        if not name:
            raise InputError(source, f"category {cat['id']} has an empty name")
        by_id[cat["id"]] = name
    if len(by_id) > MAX_CLASSES:
        raise InputError(source, f"{len(by_id)} categories do not fit uint8 masks (at most {MAX_CLASSES})")
    order = sorted(by_id)
    names = ["background"] + [by_id[c] for c in order]
    if len(set(names)) != len(names):
        raise InputError(
            source, "category names are not unique (after replacing spaces by '_'), or one is 'background'"
        )
    return {cat_id: k + 1 for k, cat_id in enumerate(order)}, names


def _compressed_run_total(counts: str | bytes, source: str) -> int:
    """Sum of the run lengths of a compressed COCO RLE string (pycocotools does not check it; we must)."""
    data = counts.encode() if isinstance(counts, str) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise InputError(source, "truncated compressed RLE counts")
            c = data[pos] - 48
            if not 0 <= c < 64:
                raise InputError(source, "invalid character in compressed RLE counts")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise InputError(source, "negative run length in compressed RLE counts")
        runs.append(value)
    return sum(runs)


def segmentation_to_rle(segmentation: Any, height: int, width: int, source: str) -> dict:
    """Rasterise a COCO segmentation (polygon list, uncompressed or compressed RLE) to one compressed RLE.

    ``source`` names the file and annotation in errors.
    """
    if isinstance(segmentation, list):
        polygons = []
        for poly in segmentation:
            if not isinstance(poly, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly
            ):
                raise InputError(source, "polygon must be a list of numbers")
            if len(poly) % 2:
                raise InputError(source, f"polygon has an odd number of coordinates ({len(poly)})")
            if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in poly):
                raise InputError(source, f"polygon coordinates must be finite and within +-{MAX_COORD:g}")
            if len(poly) >= 6:
                polygons.append([float(v) for v in poly])
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not isinstance(size, list) or size != [height, width]:
            raise InputError(source, f"RLE size {size!r:.40} differs from the image size {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise InputError(source, f"RLE run lengths must be non-negative integers adding up to {height * width}")
            return mask_utils.frPyObjects(segmentation, height, width)
        if isinstance(counts, (str, bytes)):
            total = _compressed_run_total(counts, source)
            if total != height * width:
                raise InputError(source, f"RLE run lengths add up to {total}, not {height * width}")
            return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
        raise InputError(source, "RLE 'counts' must be a list of integers or a string")
    raise InputError(source, "segmentation must be a list of polygons or an RLE object with 'counts' and 'size'")


def _decode(rles: list[dict]) -> np.ndarray:
    """Decode RLEs (at least one) into an H×W×N bool stack (pycocotools' numpy-2 copy-keyword DeprecationWarning
    silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning
        )
        return mask_utils.decode(rles).astype(bool)


def semantic_mask(
    height: int, width: int, instances: Sequence[Instance], min_area: int = 0
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Render instances into an H×W uint8 id map and return it with the image's class ids (sorted).

    Implements the module's rules: kept non-crowd instances painted largest first (ties by ascending annotation
    id), crowd and small (< ``min_area`` pixels) regions 255 where no kept instance lies, background 0.
    """
    if not instances:
        return np.zeros((height, width), dtype=np.uint8), ()
    areas = [int(a) for a in mask_utils.area([inst.rle for inst in instances])]
    kept = sorted(
        (-area, inst.ann_id, k)
        for k, (inst, area) in enumerate(zip(instances, areas))
        if not inst.iscrowd and area >= max(min_area, 1)
    )  # one that draws no pixel gives no label
    pixels = _decode([inst.rle for inst in instances])
    label = np.zeros((height, width), dtype=np.uint8)
    for _, _, k in kept:
        label[pixels[:, :, k]] = instances[k].class_id
    kept_index = [k for _, _, k in kept]
    ignored = sorted(set(range(len(instances))) - set(kept_index))
    if ignored:
        claimed = pixels[:, :, kept_index].any(axis=2)
        label[pixels[:, :, ignored].any(axis=2) & ~claimed] = IGNORE
    return label, tuple(sorted({instances[k].class_id for k in kept_index}))


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(path, "annotation file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"invalid JSON ({err})") from None


def load_subset(json_path: str | Path, image_dir: str | Path) -> CocoSubset:
    """Parse and validate an instances JSON; image paths are ``image_dir/file_name`` (not opened here)."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    log.info("reading %s", json_path)
    data = _read_json(json_path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise InputError(json_path, "expected a COCO instances object with 'images', 'annotations', 'categories' lists")
    cat_to_class, names = class_table(data.get("categories"), json_path)

    images: dict[int, tuple[str, Path, int, int]] = {}
    stems: set[str] = set()
    for entry in data["images"]:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("file_name"), str):
            raise InputError(json_path, f"image entry {entry!r:.80} needs an integer 'id' and a string 'file_name'")
        h, w = entry.get("height"), entry.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            raise InputError(json_path, f"image {entry['id']}: 'height' and 'width' must be positive integers")
        file_name = entry["file_name"]
        stem = validate_id(Path(file_name).stem, json_path)
        if Path(file_name).name != file_name:
            raise InputError(json_path, f"image {entry['id']}: file_name {file_name!r} must be a plain file name")
        if entry["id"] in images:
            raise InputError(json_path, f"duplicate image id {entry['id']}")
        if stem in stems:
            raise InputError(json_path, f"two images share the file stem {stem!r}")
        stems.add(stem)
        images[entry["id"]] = (stem, image_dir / file_name, h, w)

    per_image: dict[int, list[RawAnnotation]] = {i: [] for i in images}
    ann_ids: set[int] = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise InputError(json_path, f"annotation entry {ann!r:.80} needs an integer 'id'")
        aid = ann["id"]
        if aid in ann_ids:
            raise InputError(json_path, f"duplicate annotation id {aid}")
        ann_ids.add(aid)
        if ann.get("image_id") not in per_image:
            raise InputError(json_path, f"annotation {aid}: unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_to_class:
            raise InputError(json_path, f"annotation {aid}: unknown category_id {ann.get('category_id')!r}")
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise InputError(json_path, f"annotation {aid}: iscrowd must be 0 or 1, got {iscrowd!r}")
        if "segmentation" not in ann:
            raise InputError(json_path, f"annotation {aid}: no 'segmentation'")
        per_image[ann["image_id"]].append(
            RawAnnotation(aid, cat_to_class[ann["category_id"]], bool(iscrowd), ann["segmentation"])
        )

    records = tuple(ImageRecord(stem, path, h, w, tuple(per_image[i])) for i, (stem, path, h, w) in images.items())
    return CocoSubset(json_path, tuple(sorted(cat_to_class)), tuple(names), records)


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (symlink at a temp name, then rename)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _render_record(task: tuple[ImageRecord, str, str, int]) -> tuple[str, tuple[int, ...] | None, str | None, int]:
    """Worker: render one image's mask and link its image; returns (id, class ids, None, number of non-crowd
    annotations that draw no pixel) or (path, None, problem, 0).

    Errors come back as values because InputError does not survive pickling between processes.
    """
    record, out, json_path, min_area = task
    try:
        try:
            with Image.open(record.path) as img:
                size = img.size
        except FileNotFoundError:
            raise InputError(record.path, "image file is missing") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise InputError(record.path, f"cannot read image ({err})") from None
        if size != (record.width, record.height):
            raise InputError(
                record.path, f"image is {size[0]}x{size[1]} but {json_path} says {record.width}x{record.height}"
            )
        instances = [
            Instance(
                a.ann_id,
                a.class_id,
                a.iscrowd,
                segmentation_to_rle(a.segmentation, record.height, record.width, f"{json_path}: annotation {a.ann_id}"),
            )
            for a in record.annotations
        ]
        label, classes = semantic_mask(record.height, record.width, instances, min_area)
        areas = mask_utils.area([inst.rle for inst in instances])  # a candidate has a non-crowd annotation
        empty = sum(1 for inst, area in zip(instances, areas) if not inst.iscrowd and area == 0)
        if classes:
            write_label_png(Path(out) / "SegmentationClass" / f"{record.image_id}.png", label)
            _link(record.path, Path(out) / "JPEGImages" / f"{record.image_id}.jpg")
        return record.image_id, classes, None, empty
    except InputError as err:
        return err.path, None, err.problem, 0


def _render_subset(subset: CocoSubset, out: Path, min_area: int, pool: Any) -> dict[str, tuple[int, ...]]:
    """Render every image that has a non-crowd annotation; return {id: class ids} of the images kept."""
    candidates = [r for r in subset.images if any(not a.iscrowd for a in r.annotations)]
    tasks = [(r, str(out), str(subset.json_path), min_area) for r in candidates]
    if pool is None:
        results: Iterable = map(_render_record, tasks)
    else:
        results = pool.imap(_render_record, tasks, chunksize=max(1, min(32, len(tasks) // 64)))
    kept: dict[str, tuple[int, ...]] = {}
    empty = 0
    for key, classes, problem, no_pixels in progress(
        results, total=len(tasks), desc=f"coco {subset.json_path.stem}", unit="img"
    ):
        if problem is not None:
            raise InputError(key, problem)
        empty += no_pixels
        if classes:
            kept[key] = classes
    n_ann = sum(len(r.annotations) for r in subset.images)
    n_crowd = sum(a.iscrowd for r in subset.images for a in r.annotations)
    if empty and empty == n_ann - n_crowd:
        raise InputError(
            subset.json_path,
            f"none of its {empty} non-crowd annotations draws a pixel (empty "
            "segmentation or outside the image: a detection-only export?)",
        )
    if empty:
        log.warning(
            "%s: %d non-crowd annotations draw no pixel (empty segmentation or outside the image) and give no label",
            subset.json_path,
            empty,
        )
    log.info(
        "%s: %d images, %d annotations (%d crowd); kept %d images, dropped %d without a kept non-crowd instance",
        subset.json_path.name,
        len(subset.images),
        n_ann,
        n_crowd,
        len(kept),
        len(subset.images) - len(kept),
    )
    return kept


def _check_params(root: Any, splits: Any, subsets: Any, min_area: Any, workers: Any) -> dict[str, tuple[Path, Path]]:
    """{split: (instances JSON, image folder)} from the COCO 2014 layout under ``root`` (``splits``) or from
    explicit ``subsets`` (paths relative to ``root`` if set, else to the working directory)."""
    if root is not None and (not isinstance(root, (str, os.PathLike)) or not str(root)):
        raise InputError("params.root", f"must be a folder path, got {root!r}")
    base = Path(os.path.abspath(root)) if root is not None else None
    if base is not None and not base.is_dir():
        raise InputError(base, "COCO root is not a directory")
    if not _is_int(min_area) or min_area < 0:
        raise InputError("params.min_area", f"must be an integer >= 0, got {min_area!r}")
    if not _is_int(workers) or workers < 1:
        raise InputError("params.workers", f"must be an integer >= 1, got {workers!r}")
    if subsets is not None:
        if not isinstance(subsets, dict) or not subsets:
            raise InputError("params.subsets", "must be a non-empty mapping of split name to {images, annotations}")
        start = base or Path(os.getcwd())
        files: dict[str, tuple[Path, Path]] = {}
        for name, entry in subsets.items():
            validate_id(str(name), "params.subsets")
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("images", "annotations")):
                raise InputError("params.subsets", f"{name}: needs 'images' (folder) and 'annotations' (JSON file)")
            files[name] = (start / entry["annotations"], start / entry["images"])
        return files
    if base is None:
        raise InputError(
            "params.root",
            "required: the COCO 2014 folder (train2014/, val2014/, annotations/), "
            "or give subsets: {split: {images: DIR, annotations: FILE}}",
        )
    splits = DEFAULT_SPLITS if splits is None else splits
    if not isinstance(splits, dict) or not splits:
        raise InputError("params.splits", "must be a non-empty mapping of split name to COCO subset")
    for name, subset in splits.items():
        if not isinstance(name, str) or not isinstance(subset, str):
            raise InputError("params.splits", "split names and subsets must be strings")
        validate_id(name, "params.splits")
        validate_id(subset, "params.splits")
    return {name: (base / "annotations" / f"instances_{subset}.json", base / subset) for name, subset in splits.items()}


def prepare_coco(
    root: str | Path | None,
    out: str | Path,
    splits: dict[str, str] | None = None,
    min_area: int = 0,
    workers: int = 1,
    subsets: dict[str, dict[str, str]] | None = None,
    max_pixels: int | None = None,
) -> dict[str, list[str]]:
    """Turn COCO-format instances into the VOC-layout contract under ``out``; return {split: ids}.

    ``max_pixels`` (recorded in ``dataset.yaml``; default :data:`wsss.runtime.io.DEFAULT_MAX_PIXELS`) is the largest
    image the dataset's readers accept.

    ``splits`` maps split names to COCO 2014 subsets under ``root`` (``{"train": "train2014", "val": "val2014"}``
    by default); each subset needs ``{root}/{subset}/`` and ``{root}/annotations/instances_{subset}.json``.
    ``subsets`` instead maps split names to any ``{"images": folder, "annotations": instances JSON}`` (COCO 2017,
    exports of annotation tools). ``workers`` processes render masks (output identical for any count).
    The dataset is built in a temp folder beside ``out`` and swapped in whole on success, so a failed or
    interrupted run leaves the previous output (and no partial masks or links).
    """
    files = _check_params(root, splits, subsets, min_area, workers)
    final = Path(out)
    if root is not None:
        check_apart(root, final, "COCO root")
    for json_path, image_dir in files.values():
        check_apart(image_dir, final, "COCO image folder")
        if Path(os.path.realpath(final)) in Path(os.path.realpath(json_path)).parents:
            raise InputError(
                json_path,
                f"instances JSON lies inside the output folder {final}, which is replaced "
                "whole: keep your data outside resources/ and results/",
            )
    with atomic_dir(final) as tmp:
        lists = _prepare_coco_into(files, tmp, min_area, workers, max_pixels)
    return lists


def _prepare_coco_into(
    files: dict[str, tuple[Path, Path]], out: Path, min_area: int, workers: int, max_pixels: int | None
) -> dict[str, list[str]]:
    """:func:`prepare_coco`'s work, into the fresh folder ``out`` (a temp folder swapped in on success)."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    sources = list(dict.fromkeys(files.values()))  # (JSON, image folder) pairs, each rendered once
    for source in sources:
        shared = [split for split, other in files.items() if other == source]
        if len(shared) > 1:
            log.warning(
                "splits %s are the same images and annotations (%s): evaluation on one of them measures "
                "training images",
                " and ".join(shared),
                source[0],
            )
    reference: tuple[tuple[int, ...], tuple[str, ...], str] | None = None  # categories, names, JSON file name
    kept: dict[tuple[Path, Path], dict[str, tuple[int, ...]]] = {}
    ctx = multiprocessing.get_context()
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for source in sources:
            subset = load_subset(*source)
            if reference is None:
                reference = (subset.category_ids, subset.class_names, subset.json_path.name)
            elif (subset.category_ids, subset.class_names) != reference[:2]:
                raise InputError(subset.json_path, f"categories differ from those of {reference[2]}")
            for record in subset.images:
                if not record.path.is_file():
                    raise InputError(record.path, "image file is missing")
            seen = {i for ids in kept.values() for i in ids}
            clash = next((r.image_id for r in subset.images if r.image_id in seen), None)
            if clash is not None:
                raise InputError(subset.json_path, f"image id {clash!r} also appears in another subset")
            kept[source] = _render_subset(subset, out, min_area, pool)
            if not kept[source]:
                raise InputError(subset.json_path, "no image has a non-crowd annotation (nothing to prepare)")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    assert reference is not None
    names = list(reference[1])

    lists = {split: sorted(kept[source]) for split, source in files.items()}
    for split, ids in lists.items():
        write_text(out / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        log.info("split %s: %d images", split, len(ids))
    labels = {i: [names[c] for c in classes] for per in kept.values() for i, classes in per.items()}
    write_text(out / "classes.txt", "".join(f"{n}\n" for n in names))
    write_text(out / "labels.tsv", format_labels_tsv(labels))
    meta = {
        "kind": "coco",
        "splits": {k: {"annotations": str(a), "images": str(i)} for k, (a, i) in files.items()},
        "min_area": min_area,
        "num_classes": len(names),
        "max_pixels": DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
    }
    write_text(out / "dataset.yaml", yaml.safe_dump(meta, sort_keys=True))
    return lists


__all__ = [
    "DEFAULT_SPLITS",
    "CocoSubset",
    "ImageRecord",
    "Instance",
    "RawAnnotation",
    "class_table",
    "load_subset",
    "prepare_coco",
    "segmentation_to_rle",
    "semantic_mask",
]
