"""A user's own folder of images → the VOC-layout dataset contract, read in place (nothing copied).

Input (names configurable, see ``datasets.<name>`` of kind ``folder`` in the config schema)::

    {root}/images/*.jpg|*.jpeg|*.png           any size; RGB, grey, RGBA or palette
    {root}/labels.csv                          header "image,labels"; image = file name or stem; labels separated
                                               by spaces or ';'
    {root}/masks/{stem}.png                    optional class-id maps (0 = background, 255 = ignore), any subset
    {root}/ImageSets/Segmentation/{split}.txt  optional split lists (win over val_fraction)

Output (:mod:`wsss.data.dataset`): ``JPEGImages/{stem}.jpg`` and ``SegmentationClass/{stem}.png`` are symlinks to
the user's files (absolute; the reader decodes by content, so a PNG behind a ``.jpg`` link is fine),
``ImageSets/Segmentation/{train,val,...}.txt``, ``labels.tsv``, ``classes.txt`` and ``dataset.yaml``. The whole
folder is built next to the output and swapped in at the end, so a failed preparation leaves the previous one.

Rules:

* **Ids** are the file stems; they must be plain ids (letters, digits, ``_ . -``) and unique across extensions.
* **Labels** come from the CSV; without a CSV file, from the masks (the ids present, 0 and 255 left out), which
  then needs ``classes``. Every image needs a non-empty label set; every CSV row must name an existing image.
* **Classes**: ``classes`` (background added first) or the sorted names found in the CSV.
* **Splits**: ``ImageSets/Segmentation/*.txt`` under the root if ``train.txt`` or ``val.txt`` is there (every
  image of a list must exist; train and val must not share an id); a lone ``train.txt`` makes every other image
  val (a lone ``val.txt``: every other image train). Without either, ``val`` holds the stems whose SHA-256 falls
  below ``val_fraction`` of the hash range and ``train`` the rest: deterministic, and adding images never moves
  the others. Stages train on ``train`` unless a run's ``train_split`` names another list (a ``train_aug.txt``
  is never picked implicitly).
* **Hidden files** (names beginning with ``.``, e.g. macOS ``._*``) are skipped in every folder, with a count in
  the log.
* **Masks** (``.png`` in any case; a JPEG is an error) must have their image's size and only ids 0..C-1 and 255;
  a class in a mask that its image's CSV row does not list is warned about (count per class).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from wsss.data.dataset import format_labels_tsv, read_id_list, validate_id
from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_dir, check_apart, read_label_png, visible_files, write_text
from wsss.runtime.progress import progress

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CSV_HEADER = ["image", "labels"]
_SEP = re.compile(r"[\s;]+")
DEFAULTS = {"images": "images", "labels": "labels.csv", "masks": "masks", "classes": None, "val_fraction": 0.1}


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULTS) - {"root", "max_pixels"})
    if unknown:
        raise InputError("--params", f"unknown keys {unknown}; known: {['root', *DEFAULTS]}")
    opts = {**DEFAULTS, **params}
    if not isinstance(opts.get("root"), str) or not opts["root"]:
        raise InputError("--params", "root: required, the dataset folder")
    if not 0 < float(opts["val_fraction"]) < 1:
        raise InputError("--params", f"val_fraction: must lie in (0, 1), got {opts['val_fraction']!r}")
    return opts


def list_images(image_dir: Path) -> dict[str, Path]:
    """{stem: file} of the images in ``image_dir`` (suffixes case-insensitive); bad or repeated stems are errors."""
    if not image_dir.is_dir():
        raise InputError(image_dir, "image folder is missing")
    images: dict[str, Path] = {}
    for path in visible_files(image_dir, "images"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        stem = validate_id(path.stem, path)
        if stem in images:
            raise InputError(path, f"two images share the stem {stem!r} ({images[stem].name}, {path.name})")
        images[stem] = path
    if not images:
        raise InputError(image_dir, f"no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def list_masks(mask_dir: Path) -> dict[str, Path]:
    """{stem: file} of the masks in ``mask_dir`` (``.png`` in any case; hidden files skipped); a JPEG there is an
    error (lossy compression changes class ids at edges), a stem twice too. No folder: no masks."""
    if not mask_dir.is_dir():
        return {}
    masks: dict[str, Path] = {}
    for path in visible_files(mask_dir, "masks"):
        if path.suffix.lower() in (".jpg", ".jpeg"):
            raise InputError(path, "mask is a JPEG; lossy compression changes class ids: save masks as PNG")
        if path.suffix.lower() != ".png" or not path.is_file():
            continue
        if path.stem in masks:
            raise InputError(path, f"two masks share the stem {path.stem!r} ({masks[path.stem].name}, {path.name})")
        masks[path.stem] = path
    return masks


def split_names(text: str) -> list[str]:
    """Class names of one CSV cell: separated by whitespace or ';', Unicode-normalised (NFC), so that ``café``
    typed with a combining accent and with a precomposed one are one class."""
    return [unicodedata.normalize("NFC", n) for n in _SEP.split(text.strip()) if n]


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (None if it can): names are written one per line to ``classes.txt``
    and into file names of reports, so no separators (space, ';', ','), control characters, path separators or
    ``.``/``..``."""
    if not name:
        return "is empty"
    if any(unicodedata.category(ch).startswith("C") or ch.isspace() for ch in name):
        return "contains a control or space character"
    for bad in (",", ";", "/", "\\"):
        if bad in name:
            return f"contains {bad!r}"
    if name in (".", "..") or ".." in name:
        return "contains '..'"
    return None


def read_labels_csv(path: Path, images: Mapping[str, Path]) -> dict[str, list[str]]:
    """{stem: class names} from the labels CSV; every row names an existing image, once, with at least one label."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "labels CSV is not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != CSV_HEADER:
        raise InputError(path, f"first line must be the header {','.join(CSV_HEADER)!r}")
    by_name = {p.name: stem for stem, p in images.items()}
    labels: dict[str, list[str]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != 2:
            raise InputError(where, f"expected 2 columns (image, labels), got {len(row)}")
        name = row[0].strip()
        stem = by_name.get(name, name if name in images else None)
        if stem is None:
            raise InputError(where, f"no image {name!r} in {next(iter(images.values())).parent}")
        if stem in labels:
            raise InputError(where, f"duplicate row for image {stem!r}")
        names = split_names(row[1])
        if not names:
            raise InputError(where, f"image {stem!r} has no labels")
        for name in names:
            if (problem := class_name_problem(name)) is not None:
                raise InputError(
                    where,
                    f"class name {name!r} {problem} (separate labels by spaces or ';'; a quoted cell is one name)",
                )
        labels[stem] = list(dict.fromkeys(names))
    return labels


def _class_list(classes: list[str] | None, labels: Mapping[str, list[str]] | None, source: Path) -> list[str]:
    """Background + foreground names: ``classes`` as given, else the sorted names of the CSV."""
    if classes is None:
        if labels is None:
            raise InputError(
                source,
                "labels CSV is missing: without it, list the class names in the dataset's "
                "`classes` (mask id k = k-th name) so labels can come from the masks",
            )
        classes = sorted({n for names in labels.values() for n in names})
    classes = [unicodedata.normalize("NFC", str(c)) for c in classes]
    if classes and classes[0] == "background":
        classes = classes[1:]
    if "background" in classes:
        raise InputError("--params", "classes: 'background' may only come first (it is id 0)")
    bad = [(c, problem) for c in classes if (problem := class_name_problem(c)) is not None]
    if bad:
        raise InputError("--params", f"classes: name {bad[0][0]!r} {bad[0][1]}")
    if len(set(classes)) != len(classes):
        raise InputError("--params", "classes: duplicate names")
    if not classes:
        raise InputError(source, "no foreground class")
    return ["background", *classes]


def _warn_mask_classes_not_labelled(
    derived: Mapping[str, list[str]], labels: Mapping[str, list[str]], csv_path: Path
) -> None:
    """One warning line when masks hold classes their image's CSV row does not list, with the count per class."""
    counts: dict[str, int] = {}
    for stem, names in derived.items():
        for name in names:
            if name not in labels.get(stem, ()):
                counts[name] = counts.get(name, 0) + 1
    if counts:
        log.warning(
            "%s: masks hold classes their image's row does not list (images per class: %s); training uses "
            "the CSV's labels, evaluation the masks",
            csv_path,
            ", ".join(f"{n} {c}" for n, c in sorted(counts.items())),
        )


def in_val(stem: str, fraction: float) -> bool:
    """Whether ``stem`` falls in val: its SHA-256 (first 8 bytes) below ``fraction`` of the range."""
    return int.from_bytes(hashlib.sha256(stem.encode("utf-8")).digest()[:8], "big") < fraction * 2.0**64


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header; an unreadable file is an error naming it."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(path, f"cannot read image ({err})") from None
    return h, w


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def prepare_folder(params: Mapping[str, Any], out: str | Path) -> dict[str, list[str]]:
    """Turn a user's folder into the VOC-layout contract under ``out`` (links, lists, labels); return {split: ids}."""
    opts = _options(params)
    root = Path(os.path.abspath(opts["root"]))
    if not root.is_dir():
        raise InputError(root, "dataset root is not a directory")
    check_apart(root, out, "dataset root")
    images = list_images(root / opts["images"])
    csv_path = root / opts["labels"]
    labels = read_labels_csv(csv_path, images) if csv_path.is_file() else None
    classes = _class_list(opts["classes"], labels, csv_path)
    index = {name: k for k, name in enumerate(classes)}

    masks = list_masks(root / opts["masks"])
    stray = sorted(set(masks) - set(images))
    if stray:
        raise InputError(masks[stray[0]], f"mask without an image (no {stray[0]}.jpg/.jpeg/.png in {opts['images']}/)")

    max_pixels = params.get("max_pixels")
    derived: dict[str, list[str]] = {}
    for stem, path in progress(sorted(images.items()), desc="check images", unit="img", mininterval=5.0):
        size = _image_size(path)
        if max_pixels is not None and size[0] * size[1] > max_pixels:
            raise InputError(
                path,
                f"image has {size[0] * size[1]} pixels ({size[1]}x{size[0]}), above max_pixels "
                f"{max_pixels}; downscale it or raise the dataset's max_pixels",
            )
        if stem in masks:
            mask = read_label_png(masks[stem], len(classes))
            if mask.shape != size:
                raise InputError(
                    masks[stem],
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {path.name} is {size[1]}x{size[0]}",
                )
            ids = sorted(int(v) for v in np.unique(mask) if 0 < v < 255)
            derived[stem] = [classes[i] for i in ids]
    if labels is not None:
        _warn_mask_classes_not_labelled(derived, labels, csv_path)
    if labels is None:
        no_mask = sorted(set(images) - set(masks))
        if no_mask:
            raise InputError(images[no_mask[0]], "image has no labels (no labels CSV and no mask)")
        labels = derived
    for stem in sorted(images):
        names = labels.get(stem)
        if names is None:  # not in the CSV (a CSV row never has an empty label set)
            raise InputError(images[stem], f"image {stem!r} has no labels")
        if not names:  # labels from the masks (every image has one then): its mask holds only 0 and 255
            raise InputError(masks[stem], f"image {stem!r} has no labels")
        unknown = [n for n in names if n not in index or n == "background"]
        if unknown:
            raise InputError(csv_path, f"image {stem!r}: labels {unknown} not in classes {classes[1:]}")

    lists_dir = root / "ImageSets" / "Segmentation"
    given = (
        {p.stem: p for p in visible_files(lists_dir, "split lists") if p.suffix == ".txt" and p.is_file()}
        if lists_dir.is_dir()
        else {}
    )
    if "train" in given or "val" in given:
        splits = {stem: read_id_list(p) for stem, p in given.items()}
        for split, ids in splits.items():
            missing = [i for i in ids if i not in images]
            if missing:
                raise InputError(lists_dir / f"{split}.txt", f"no image for id {missing[0]!r}")
        if "train" in splits and "val" in splits:
            both = sorted(set(splits["train"]) & set(splits["val"]))
            if both:
                raise InputError(
                    lists_dir / "val.txt",
                    f"id {both[0]!r} is also in train.txt ({len(both)} shared); "
                    "val must hold images the model does not train on",
                )
            source = f"split lists in {lists_dir}"
        else:
            lone, rest = ("train", "val") if "train" in splits else ("val", "train")
            listed = set(splits[lone])
            splits[rest] = [s for s in sorted(images) if s not in listed]
            source = f"{lone}.txt in {lists_dir}, {rest} = the other images"
    else:
        val = [s for s in sorted(images) if in_val(s, float(opts["val_fraction"]))]
        chosen = set(val)
        splits = {"train": [s for s in sorted(images) if s not in chosen], "val": val}
        source = f"hash of the file stem, val_fraction {opts['val_fraction']}"
    for split in ("train", "val"):
        if not splits.get(split):
            raise InputError(root, f"split {split!r} is empty ({source}); add images or change val_fraction")

    out = Path(out)
    with atomic_dir(out) as tmp:
        for stem, path in images.items():
            _link(path, tmp / "JPEGImages" / f"{stem}.jpg")
        for stem, path in masks.items():
            _link(path, tmp / "SegmentationClass" / f"{stem}.png")
        for split, ids in splits.items():
            write_text(tmp / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
            with_masks = sum(i in masks for i in ids)
            log.info("split %s: %d images, %d with masks (%s)", split, len(ids), with_masks, source)
        write_text(tmp / "classes.txt", "".join(f"{c}\n" for c in classes))
        write_text(tmp / "labels.tsv", format_labels_tsv({s: labels[s] for s in images}))
        meta = {"kind": "folder", "source": str(root), "num_classes": len(classes)}
        if params.get("max_pixels") is not None:
            meta["max_pixels"] = params["max_pixels"]
        write_text(tmp / "dataset.yaml", yaml.safe_dump(meta, sort_keys=True))
    return splits


__all__ = ["in_val", "list_images", "prepare_folder", "read_labels_csv"]
