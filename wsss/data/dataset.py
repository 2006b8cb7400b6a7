"""The dataset contract: one reader over any VOC-layout root.

A prepared root holds::

    JPEGImages/{id}.jpg                 RGB images
    SegmentationClass/{id}.png          uint8 ids 0..C-1 (0 = background), 255 = ignore; mode L or P
    ImageSets/Segmentation/{split}.txt  one id per line
    labels.tsv                          image_id<TAB>space-separated class names (header line first)
    classes.txt                         class names in id order, background first
    dataset.yaml                        optional: ``images:``/``masks:`` folders (relative to the root or
                                        absolute) for a dataset read in place from elsewhere; ``max_pixels:``
                                        the largest image accepted (default :data:`wsss.runtime.io.DEFAULT_MAX_PIXELS`)

Every read validates what it reads and raises :class:`wsss.runtime.errors.InputError` naming the file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from wsss.runtime.errors import InputError
from wsss.runtime.io import DEFAULT_MAX_PIXELS, IGNORE, read_label_png, read_rgb

_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
LABELS_HEADER = "image_id\tclasses"


def _id_problem(image_id: str) -> str:
    """What is wrong with an id ``_ID_RE`` refuses, in words."""
    if not image_id:
        return "empty"
    if image_id.startswith("."):
        return "begins with '.'"
    if ".." in image_id:
        return "contains '..'"
    for ch in image_id:
        if ch in "/\\":
            return f"contains {ch!r}"
        if ch.isspace():
            return "contains a space" if ch == " " else f"contains whitespace {ch!r}"
        if not ch.isascii():
            return f"contains the non-ASCII character {ch!r}"
        if not (ch.isalnum() or ch in "_.-"):
            return f"contains {ch!r}"
    return "not a plain file stem"


def validate_id(image_id: str, source: str | Path) -> str:
    """Return ``image_id`` if it is a plain file stem (no path separators, no ``..``), else raise naming ``source``."""
    if not _ID_RE.match(image_id) or ".." in image_id or image_id.endswith("\n"):
        raise InputError(
            source,
            f"invalid image id {image_id!r}: {_id_problem(image_id)}; ids are file stems of "
            "ASCII letters, digits, '_', '.' and '-' (rename the file)",
        )
    return image_id


def read_id_list(path: str | Path) -> list[str]:
    """Read a split list: one id per line, blank lines skipped; empty lists, bad ids and an id listed twice
    (it would be counted twice in evaluation) are errors."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()  # a BOM is accepted, as in the labels CSV
    except FileNotFoundError:
        raise InputError(path, "split list is missing") from None
    except UnicodeDecodeError:
        raise InputError(path, "split list is not UTF-8 text") from None
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        image_id = validate_id(line.strip(), path)
        if image_id in first_line:
            raise InputError(
                f"{path}:{lineno}", f"duplicate image id {image_id!r} (first on line {first_line[image_id]})"
            )
        first_line[image_id] = lineno
        ids.append(image_id)
    if not ids:
        raise InputError(path, "split list is empty")
    return ids


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; a missing or non-UTF-8 file is an :class:`InputError` naming it and ``what``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, f"{what} is missing") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"{what} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def read_classes(path: str | Path) -> list[str]:
    """Read ``classes.txt`` (background first); at least one foreground class, no duplicates."""
    path = Path(path)
    names = [line.strip() for line in _read_text(path, "classes file").splitlines() if line.strip()]
    if len(names) < 2:
        raise InputError(path, "needs background plus at least one class")
    if len(set(names)) != len(names):
        raise InputError(path, "duplicate class names")
    return names


def read_labels_tsv(path: str | Path, classes: list[str]) -> dict[str, tuple[str, ...]]:
    """Read ``labels.tsv`` into {id: class names}; unknown class names and duplicate ids are errors."""
    path = Path(path)
    lines = _read_text(path, "labels file").splitlines()
    if not lines or lines[0].strip() != LABELS_HEADER:
        raise InputError(path, f"first line must be the header {LABELS_HEADER!r}")
    known = set(classes[1:])
    labels: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        image_id, _, names = line.partition("\t")
        validate_id(image_id, f"{path}:{lineno}")
        if image_id in labels:
            raise InputError(f"{path}:{lineno}", f"duplicate image id {image_id!r}")
        parts = tuple(names.split())
        unknown = [n for n in parts if n not in known]
        if unknown:
            raise InputError(f"{path}:{lineno}", f"unknown class names {unknown}")
        labels[image_id] = parts
    return labels


def format_labels_tsv(labels: dict[str, list[str] | tuple[str, ...]]) -> str:
    """Serialise {id: class names} as ``labels.tsv`` text, ids sorted."""
    rows = [LABELS_HEADER] + [f"{i}\t{' '.join(labels[i])}" for i in sorted(labels)]
    return "\n".join(rows) + "\n"


_LAYOUT_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "images": (str,), "masks": (str,), "max_pixels": (int,)}
"""The keys of ``dataset.yaml`` the reader uses and their types (a preparer may record others, e.g. its params)."""


def read_layout(path: Path) -> dict:
    """Read ``dataset.yaml`` (absent: ``{}``); malformed YAML or a used key of the wrong type is an InputError."""
    if not path.exists():
        return {}
    try:
        layout = yaml.safe_load(_read_text(path, "dataset description")) or {}
    except yaml.YAMLError as err:
        raise InputError(path, f"invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(layout, dict):
        raise InputError(path, "must be a mapping")
    for key, types in _LAYOUT_TYPES.items():
        value = layout.get(key)
        if key in layout and (isinstance(value, bool) or not isinstance(value, types)):
            want = "an integer" if types == (int,) else "a string"
            raise InputError(path, f"{key}: must be {want}, got {value!r}")
    if "max_pixels" in layout and layout["max_pixels"] < 1:
        raise InputError(path, f"max_pixels: must be at least 1, got {layout['max_pixels']}")
    return layout


@dataclass(frozen=True)
class Sample:
    """One image of a split: RGB uint8 H×W×3, multi-hot foreground labels, and the mask (None if absent)."""

    image_id: str
    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None


class VOCLayoutDataset:
    """Reader over a VOC-layout root (see module doc). Cheap to construct; files are read on access."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "dataset root is not a directory")
        layout = read_layout(self.root / "dataset.yaml")
        self.image_dir = self.root / layout.get("images", "JPEGImages")
        self.mask_dir = self.root / layout.get("masks", "SegmentationClass")
        self.max_pixels: int = layout.get("max_pixels", DEFAULT_MAX_PIXELS)

    @cached_property
    def classes(self) -> list[str]:
        return read_classes(self.root / "classes.txt")

    @property
    def num_classes(self) -> int:
        """Number of ids including background."""
        return len(self.classes)

    @cached_property
    def _labels(self) -> dict[str, tuple[str, ...]]:
        return read_labels_tsv(self.root / "labels.tsv", self.classes)

    def split_path(self, split: str) -> Path:
        validate_id(split, self.root / "ImageSets/Segmentation")
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def ids(self, split: str, labelled: bool = True) -> list[str]:
        """The ids of ``split``; every id must have image-level labels unless ``labelled=False`` (stages that
        apply the trained DeepLab, e.g. to the unlabelled VOC test split)."""
        path = self.split_path(split)
        ids = read_id_list(path)
        if not labelled:
            return ids
        missing = [i for i in ids if i not in self._labels]
        if missing:
            raise InputError(
                self.root / "labels.tsv", f"no labels for {len(missing)} ids of {path.name}, e.g. {missing[0]!r}"
            )
        return ids

    def label_names(self, image_id: str) -> tuple[str, ...]:
        try:
            return self._labels[image_id]
        except KeyError:
            raise InputError(self.root / "labels.tsv", f"no labels for image id {image_id!r}") from None

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 vector over the C-1 foreground classes (index k ↔ mask id k+1)."""
        vec = np.zeros(self.num_classes - 1, dtype=np.float32)
        index = {name: k for k, name in enumerate(self.classes[1:])}
        for name in self.label_names(image_id):
            vec[index[name]] = 1.0
        return vec

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{validate_id(image_id, self.image_dir)}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{validate_id(image_id, self.mask_dir)}.png"

    def image(self, image_id: str) -> np.ndarray:
        """The H×W×3 uint8 image; one above ``max_pixels`` (from ``dataset.yaml``) is refused before decoding."""
        return read_rgb(
            self.image_path(image_id), max_pixels=self.max_pixels, limit_key=f"datasets.{self.root.name}.max_pixels"
        )

    def mask(self, image_id: str) -> np.ndarray:
        """The H×W uint8 mask, values validated against the class count (255 = ignore)."""
        return read_label_png(self.mask_path(image_id), self.num_classes)

    def has_mask(self, image_id: str) -> bool:
        return self.mask_path(image_id).exists()

    def mask_ids(self, split: str) -> list[str]:
        """The ids of ``split`` that have a mask, for evaluation: a split without any is one error naming it (a
        dataset of one's own may have masks for some images, or none)."""
        ids = self.ids(split)
        with_mask = [i for i in ids if self.has_mask(i)]
        if not with_mask:
            raise InputError(
                self.split_path(split),
                f"split {split!r} has no masks ({len(ids)} images): nothing to "
                "evaluate; its CAMs, pseudo labels and predictions need none",
            )
        if len(with_mask) < len(ids):
            logging.getLogger(__name__).warning(
                "split %s: evaluating the %d of %d images that have masks", split, len(with_mask), len(ids)
            )
        return with_mask

    def sample(self, image_id: str, with_mask: bool = True) -> Sample:
        """Read one image, its labels and (if present and asked for) its mask; shapes are cross-checked."""
        image = self.image(image_id)
        mask = self.mask(image_id) if with_mask and self.has_mask(image_id) else None
        if mask is not None and mask.shape != image.shape[:2]:
            raise InputError(
                self.mask_path(image_id), f"mask size {mask.shape} differs from image size {image.shape[:2]}"
            )
        return Sample(image_id, image, self.label_vector(image_id), mask)


__all__ = [
    "IGNORE",
    "Sample",
    "VOCLayoutDataset",
    "format_labels_tsv",
    "read_id_list",
    "read_labels_tsv",
    "validate_id",
]
