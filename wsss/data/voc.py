"""PASCAL VOC 2012 (+ SBD "aug" masks) as a VOC-layout dataset root.

Two ways in: read an extracted ``VOC2012`` folder in place (``root``), or download the VOC tarball and the aug
masks, verify them (md5; required for every download over the network) and extract them under the output folder.
The aug masks come either as the official SBD release ``benchmark.tgz`` (the default: its ``cls/*.mat`` class
annotations are converted to id PNGs, and VOC's own ``SegmentationClass`` masks take precedence where both
exist, which is how the community's ``SegmentationClassAug`` was made) or as such a ready-made
``SegmentationClassAug`` zip. Either way the output folder gets the split lists (packaged copies of the standard
lists), ``labels.tsv`` built from ``Annotations/*.xml``, ``classes.txt`` and a ``dataset.yaml`` that points at
the images and masks.
"""

from __future__ import annotations

import logging
import os
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wsss.data.dataset import format_labels_tsv, read_id_list, read_labels_tsv, validate_id
from wsss.data.download import download, extract, require_md5, url_filename
from wsss.runtime.errors import InputError
from wsss.runtime.io import DEFAULT_MAX_PIXELS, atomic_dir, write_label_png, write_text
from wsss.runtime.progress import progress

log = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 foreground classes in VOC order; class ``VOC_CLASSES[k]`` has mask id ``k + 1`` (0 = background)."""

DEFAULT_LISTS_DIR = Path(__file__).parent / "voc_lists"
"""The packaged split lists and reference labels (from IRN's ``voc12`` folder)."""

AUG_MASK_DIR = "SegmentationClassAug"
"""The SBD-converted masks (train_aug ∪ val); a ready-made aug zip holds this folder at its top level."""

SBD_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
SBD_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"
"""The official SBD release, pinned as ``torchvision.datasets.SBDataset`` pins it."""

SBD_CLS_DIR = "benchmark_RELEASE/dataset/cls"
"""The folder of ``benchmark.tgz`` holding one ``<id>.mat`` class annotation (``GTcls.Segmentation``) per image."""

SPLITS_WITHOUT_MASKS = frozenset({"test"})
"""VOC splits that have no public masks."""

DEFAULT_PARAMS: dict[str, Any] = {
    "root": None,
    "mask_dir": "SegmentationClassAug",
    "voc_url": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "voc_md5": "6cd6e144f989b92b3379bac3b3de84fd",
    "aug_url": SBD_URL,
    "aug_md5": SBD_MD5,
    "splits": ["train_aug", "train", "val"],
    "require_masks": ["train", "val"],
    "max_pixels": DEFAULT_MAX_PIXELS,
}
"""Params of :func:`prepare_voc` and their defaults (config key ``voc``)."""

_EXTRACTED_MARKER = ".wsss_extracted"


def labels_from_xml(path: str | os.PathLike[str]) -> list[str]:
    """The image-level labels of one VOC annotation: every ``<object><name>`` that is a VOC class.

    Difficult and truncated objects count (as in the standard ``cls_labels``); names of body parts
    (``<object><part><name>``) and non-VOC names do not. Result: deduplicated, in VOC order. A missing or
    malformed file raises :class:`InputError` naming it. ElementTree does not fetch external entities.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(path, "annotation XML is missing") from None
    except ET.ParseError as err:
        raise InputError(path, f"malformed annotation XML ({err})") from None
    found = {(obj.findtext("name") or "").strip() for obj in root.iter("object")}
    return [name for name in VOC_CLASSES if name in found]


def build_labels(annotation_dir: str | os.PathLike[str], ids: Iterable[str]) -> dict[str, list[str]]:
    """{id: labels_from_xml(annotation_dir/id.xml)} for every id; a missing XML is an error naming it."""
    annotation_dir = Path(annotation_dir)
    ids = list(ids)
    return {
        i: labels_from_xml(annotation_dir / f"{validate_id(i, annotation_dir)}.xml")
        for i in progress(ids, desc="annotations", unit="xml", leave=False)
    }


def cross_check(labels: dict[str, list[str]], reference: dict[str, tuple[str, ...]]) -> list[str]:
    """Ids present in both whose label sets differ (sorted); the caller decides whether that matters."""
    return sorted(i for i in labels.keys() & reference.keys() if set(labels[i]) != set(reference[i]))


def read_reference_labels(path: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """Read a ``cls_labels.tsv``-style table over the VOC classes."""
    return read_labels_tsv(path, ["background", *VOC_CLASSES])


def check_voc_root(root: str | os.PathLike[str], mask_dir: str) -> Path:
    """Return ``root`` (absolute) if it holds ``JPEGImages``, ``Annotations`` and ``mask_dir``; else raise."""
    root = Path(os.path.abspath(os.path.expanduser(root)))
    if not root.is_dir():
        raise InputError(root, "VOC root is not a directory")
    for sub in ("JPEGImages", "Annotations", mask_dir):
        if not (root / sub).is_dir():
            hint = ""
            for candidate in (root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
                if (candidate / sub).is_dir():
                    hint = f" (did you mean {candidate}?)"
                    break
            raise InputError(
                root / sub,
                f"missing folder: the VOC root must be a VOC2012 folder with "
                f"JPEGImages, Annotations and {mask_dir}{hint}",
            )
    return root


def _fetch_voc(out_dir: Path, params: dict[str, Any]) -> Path:
    """Download and extract VOC (+ aug masks) under ``out_dir``; return the VOC2012 folder."""
    voc_root = out_dir / "VOCdevkit" / "VOC2012"
    downloads = out_dir / "downloads"
    mask_dir = params["mask_dir"]
    if not params.get("voc_url"):
        raise InputError("params.voc_url", "is empty: set voc.root to an extracted VOC2012 folder or give voc_url")
    voc_tar = download(params["voc_url"], downloads / url_filename(params["voc_url"]), params.get("voc_md5"))
    _extract_once(voc_tar, voc_root, "VOCdevkit/VOC2012", params.get("voc_md5"))
    if mask_dir != AUG_MASK_DIR:
        log.info("mask_dir is %r: not downloading the %s masks", mask_dir, AUG_MASK_DIR)
    elif params.get("aug_url"):
        aug = download(params["aug_url"], downloads / url_filename(params["aug_url"]), params.get("aug_md5"))
        if zipfile.is_zipfile(aug):
            _extract_once(aug, voc_root / AUG_MASK_DIR, AUG_MASK_DIR, params.get("aug_md5"))
        else:
            _extract_once(aug, out_dir / "sbd_cls", SBD_CLS_DIR, params.get("aug_md5"))
            _convert_sbd_once(out_dir / "sbd_cls", voc_root, params.get("aug_md5"))
    else:
        raise InputError(
            "params.aug_url",
            f"is empty but mask_dir is {AUG_MASK_DIR}: give aug_url (SBD's "
            f"benchmark.tgz or a {AUG_MASK_DIR}.zip) or set mask_dir: SegmentationClass",
        )
    return voc_root


def _check_pins(params: dict[str, Any]) -> None:
    """Every archive that will be fetched over the network must have its md5 configured (checked before any)."""
    if params["root"]:
        return
    if params.get("voc_url"):
        require_md5(params["voc_url"], params.get("voc_md5"), "datasets.voc.voc_md5")
    if params["mask_dir"] == AUG_MASK_DIR and params.get("aug_url"):
        require_md5(params["aug_url"], params.get("aug_md5"), "datasets.voc.aug_md5")


def read_sbd_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """The H×W uint8 class ids of one SBD annotation (``GTcls.Segmentation`` of ``cls/<id>.mat``, 0..20).

    Read with ``scipy.io.loadmat`` (a MATLAB v5 parser; nothing is executed or unpickled). A file that is not
    such an annotation, or ids outside 0..20 and 255, is an :class:`InputError` naming it.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        seg = loadmat(path, struct_as_record=False, squeeze_me=True)["GTcls"].Segmentation
    except FileNotFoundError:
        raise InputError(path, "SBD annotation is missing") from None
    except (MatReadError, KeyError, AttributeError, ValueError, TypeError, OSError, NotImplementedError) as err:
        raise InputError(
            path, f"not an SBD class annotation with GTcls.Segmentation ({type(err).__name__}: {err})"
        ) from None
    arr = np.asarray(seg)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise InputError(path, f"GTcls.Segmentation must be a 2-D integer array, got {arr.dtype} {arr.shape}")
    bad = (arr > len(VOC_CLASSES)) & (arr != 255) | (arr < 0)
    if bad.any():
        values = sorted(set(np.unique(arr[bad]).tolist()))[:5]
        raise InputError(path, f"class ids {values} outside 0..{len(VOC_CLASSES)} and 255")
    return arr.astype(np.uint8)


def _convert_sbd_once(cls_dir: Path, voc_root: Path, md5: str | None) -> None:
    """Write ``voc_root/SegmentationClassAug`` (atomically) from SBD's ``cls/*.mat`` plus VOC's own masks.

    Every SBD annotation becomes an id PNG; then every ``SegmentationClass`` PNG of VOC is copied over it (VOC's
    masks, with their 255 boundaries, win where both exist). Skipped when the folder already holds this
    conversion (marker = the SBD extraction's marker)."""
    key = (cls_dir / _EXTRACTED_MARKER).read_text().strip()
    dest = voc_root / AUG_MASK_DIR
    marker = dest / _EXTRACTED_MARKER
    if marker.is_file() and marker.read_text().strip() == key:
        log.info("reusing converted %s", dest)
        return
    mats = sorted(cls_dir.glob("*.mat"))
    if not mats:
        raise InputError(cls_dir, "the SBD archive has no cls/*.mat annotations")
    voc_masks = sorted((voc_root / "SegmentationClass").glob("*.png"))
    if not voc_masks:
        log.warning("no %s in %s: the aug masks are SBD's alone", "SegmentationClass", voc_root)
    with atomic_dir(dest) as tmp:
        for mat in progress(mats, desc="SBD masks", unit="mat", leave=False):
            write_label_png(tmp / f"{validate_id(mat.stem, mat)}.png", read_sbd_mask(mat))
        for png in voc_masks:
            shutil.copyfile(png, tmp / png.name)
        (tmp / _EXTRACTED_MARKER).write_text(key + "\n")
    log.info("converted %d SBD annotations (+ %d VOC masks) into %s", len(mats), len(voc_masks), dest)


def _extract_once(archive: Path, dest: Path, subdir: str, md5: str | None) -> None:
    """Extract unless ``dest`` already holds this archive's extraction (marker = md5, or size and mtime)."""
    stat = archive.stat()
    key = f"{archive.name} {md5 or f'{stat.st_size}:{stat.st_mtime_ns}'}"
    marker = dest / _EXTRACTED_MARKER
    if marker.is_file() and marker.read_text().strip() == key:
        log.info("reusing extracted %s", dest)
        return
    extract(archive, dest, subdir)
    write_text(marker, key + "\n")


def prepare_voc(
    out_dir: str | os.PathLike[str], params: dict[str, Any], lists_dir: str | os.PathLike[str] = DEFAULT_LISTS_DIR
) -> None:
    """Materialise the VOC-layout root ``out_dir`` (see module doc); params as in :data:`DEFAULT_PARAMS`.

    Every id of every prepared split must have its JPEG and XML (and, for ``require_masks`` splits, its mask);
    a missing file is an :class:`InputError` naming it, so a broken VOC copy is never silently shrunk. Labels
    are cross-checked against ``lists_dir/cls_labels.tsv`` when present (disagreements are logged only).
    ``dataset.yaml``, ``classes.txt`` and ``labels.tsv`` are removed first and written last.
    """
    out_dir = Path(out_dir)
    lists_dir = Path(lists_dir)
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise InputError("params", f"unknown voc params {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    params = {**DEFAULT_PARAMS, **params}
    mask_dir = params["mask_dir"]
    if not mask_dir or Path(mask_dir).name != mask_dir or mask_dir in (".", ".."):
        raise InputError("params.mask_dir", f"must be a folder name inside VOC2012, got {mask_dir!r}")
    for key in ("splits", "require_masks"):
        if not isinstance(params[key], list) or not all(isinstance(s, str) for s in params[key]):
            raise InputError(f"params.{key}", f"must be a list of split names, got {params[key]!r}")
    splits = [validate_id(s, "params.splits") for s in params["splits"]]
    if not splits:
        raise InputError("params.splits", "must name at least one split")
    require_masks = set(params["require_masks"])
    max_pixels = params["max_pixels"]
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InputError("params.max_pixels", f"must be a positive integer, got {max_pixels!r}")
    _check_pins(params)

    final_outputs = [out_dir / "dataset.yaml", out_dir / "classes.txt", out_dir / "labels.tsv"]
    for path in final_outputs:
        path.unlink(missing_ok=True)

    split_ids = {s: read_id_list(lists_dir / f"{s}.txt") for s in splits}

    if params["root"]:
        voc_root = check_voc_root(params["root"], mask_dir)
        image_dir, mask_path = voc_root / "JPEGImages", voc_root / mask_dir
    else:
        voc_root = check_voc_root(_fetch_voc(out_dir, params), mask_dir)
        image_dir = Path("VOCdevkit/VOC2012/JPEGImages")
        mask_path = Path("VOCdevkit/VOC2012") / mask_dir

    _check_split_files(voc_root, mask_dir, split_ids, require_masks)
    all_ids = sorted({i for ids in split_ids.values() for i in ids})
    labels = build_labels(voc_root / "Annotations", all_ids)
    unlabelled = [i for i in all_ids if not labels[i]]
    if unlabelled:
        log.warning("%d ids have no VOC class in their annotation, e.g. %s", len(unlabelled), unlabelled[0])
    _log_cross_check(labels, lists_dir / "cls_labels.tsv")

    for split, ids in split_ids.items():
        write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(ids) + "\n")
    meta = {"name": "voc", "images": str(image_dir), "masks": str(mask_path), "max_pixels": max_pixels}
    write_text(out_dir / "dataset.yaml", yaml.safe_dump(meta, sort_keys=False))
    write_text(out_dir / "classes.txt", "\n".join(["background", *VOC_CLASSES]) + "\n")
    write_text(out_dir / "labels.tsv", format_labels_tsv(labels))
    log.info("prepared VOC at %s: %s", out_dir, {s: len(ids) for s, ids in split_ids.items()})


def _check_split_files(voc_root: Path, mask_dir: str, split_ids: dict[str, list[str]], require_masks: set[str]) -> None:
    """Every listed id needs its JPEG; ids of ``require_masks`` splits need their mask (others: warning)."""
    image_dir, masks = voc_root / "JPEGImages", voc_root / mask_dir
    for split, ids in split_ids.items():
        for i in ids:
            if not (image_dir / f"{i}.jpg").is_file():
                raise InputError(image_dir / f"{i}.jpg", f"image of split {split!r} is missing")
        missing = [i for i in ids if not (masks / f"{i}.png").is_file()]
        if missing and split in require_masks:
            raise InputError(
                masks / f"{missing[0]}.png",
                f"mask is missing ({len(missing)} of {len(ids)} ids of split {split!r} lack masks)",
            )
        if missing and split not in SPLITS_WITHOUT_MASKS:
            log.warning("%d of %d ids of split %r have no mask in %s", len(missing), len(ids), split, masks)


def _log_cross_check(labels: dict[str, list[str]], reference_path: Path) -> None:
    """Log how many ids disagree with the reference labels (never fails: the XMLs are the source of truth)."""
    if not reference_path.is_file():
        log.warning("no reference labels at %s: labels not cross-checked", reference_path)
        return
    reference = read_reference_labels(reference_path)
    disagree = cross_check(labels, reference)
    compared = len(labels.keys() & reference.keys())
    if disagree:
        first = disagree[0]
        log.warning(
            "labels of %d of %d ids disagree with %s, e.g. %s: %s vs %s",
            len(disagree),
            compared,
            reference_path,
            first,
            labels[first],
            list(reference[first]),
        )
    else:
        log.info("labels agree with %s on all %d shared ids", reference_path, compared)


__all__ = [
    "DEFAULT_LISTS_DIR",
    "DEFAULT_PARAMS",
    "VOC_CLASSES",
    "build_labels",
    "check_voc_root",
    "cross_check",
    "labels_from_xml",
    "prepare_voc",
    "read_reference_labels",
]
