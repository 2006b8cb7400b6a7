"""The dataset-kind registry: a kind is one preparer registered with :func:`register_kind`.

Every preparer has the one signature ``prepare(out, params)``: write the VOC-layout contract (wsss/data/dataset.py)
under ``out`` from a validated dataset entry without its ``kind`` (:func:`preparer_params`). Its registration says,
before anything is prepared, which splits the dataset will have and which files the preparation reads (the rule's
inputs, so that a change to them prepares it again), and its job's resources. The config schema's ``kind`` enum and
its per-kind definitions (``definitions.<kind>``), the built-in dataset names and the single ``prepare_dataset``
rule all read this registry.

Adding a kind: its preparer module in wsss/data/, a ``register_kind`` entry here, ``definitions.<kind>`` in
schemas/config.schema.yaml, its tests. This module imports no preparer (nor torch) at import time: the Snakefile
reads it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.runtime.errors import InputError

Entry = Mapping[str, Any]
Preparer = Callable[[str, dict[str, Any]], object]


@dataclass(frozen=True)
class DatasetKind:
    """A registered dataset kind (see the module docstring)."""

    name: str
    prepare: Preparer
    splits: Callable[[Entry], list[str]]
    inputs: Callable[[Entry], list[str]] = lambda entry: []
    builtin: bool = False  # a dataset of this name always exists (an entry of that name may leave out its kind)
    local: bool = False  # downloads: run on the submitting host (Snakemake localrules), not on a compute node
    threads: Callable[[Entry], int] = lambda entry: 1
    mem_mb: int = 2000
    runtime: int = 60
    neutral: Mapping[str, Any] = field(default_factory=dict)
    """Keys added after datasets of this kind were first prepared, at the values that reproduce them: left out of
    the preparer's params while at them, so that adding the keys did not prepare (and retrain) existing runs."""


_KINDS: dict[str, DatasetKind] = {}


def register_kind(name: str, *, splits: Callable[[Entry], list[str]], **options: Any) -> Callable[[Preparer], Preparer]:
    """Decorator of a preparer ``prepare(out, params)``: register it as dataset kind ``name``."""

    def wrap(prepare: Preparer) -> Preparer:
        if name in _KINDS:
            raise ValueError(f"dataset kind {name!r} is registered twice")
        _KINDS[name] = DatasetKind(name, prepare, splits, **options)
        return prepare

    return wrap


def kind_names() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_KINDS)


def builtin_datasets() -> tuple[str, ...]:
    """The kinds whose dataset of the same name always exists (synth, voc, coco)."""
    return tuple(name for name, kind in _KINDS.items() if kind.builtin)


def get_kind(name: str) -> DatasetKind:
    """The registered kind ``name``; an unknown one is an InputError naming the known ones."""
    try:
        return _KINDS[name]
    except KeyError:
        raise InputError("kind", f"{name!r} is not a dataset kind (kinds: {', '.join(_KINDS)})") from None


def preparer_params(entry: Entry) -> dict[str, Any]:
    """A validated dataset entry as its preparer's params: without ``kind`` (which picked the preparer) and
    without its kind's :attr:`DatasetKind.neutral` keys at their neutral values."""
    neutral = get_kind(entry["kind"]).neutral
    return {k: v for k, v in entry.items() if k != "kind" and not (k in neutral and v == neutral[k])}


def dataset_splits(entry: Entry) -> list[str]:
    """The split names a (validated) dataset entry will have once prepared, known before it is."""
    return get_kind(entry["kind"]).splits(entry)


def _call(target: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``module:function`` (imported only now: preparers pull in image and annotation libraries)."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the built-in kinds


@register_kind(
    "synth",
    splits=lambda entry: ["train_aug", "train", "val"],
    builtin=True,
    runtime=30,
    neutral={
        "texture_scale": 1.0,
        "classes": None,
        "frequent_class": None,
        "frequent_fraction": 0.97,
        "paired_classes": None,
        "shared_body": False,
    },
)
def prepare_synth(out: str, params: dict[str, Any]) -> object:
    """The synthetic dataset (textured shapes on clutter), generated deterministically from its seed."""
    return _call("wsss.data.synth:generate_dataset", out, params)


@register_kind("voc", splits=lambda entry: list(entry["splits"]), builtin=True, local=True, runtime=240)
def prepare_voc(out: str, params: dict[str, Any]) -> object:
    """PASCAL VOC 2012 + SBD aug masks, read in place or downloaded (with the packaged split lists)."""
    return _call("wsss.data.voc:prepare_voc", out, params)


COCO_PARAMS = ("root", "splits", "subsets", "min_area", "workers", "max_pixels")


@register_kind(
    "coco",
    splits=lambda entry: list(entry["subsets"] or entry["splits"]),
    builtin=True,
    threads=lambda entry: int(entry["workers"]),
    mem_mb=8000,
    runtime=240,
)
def prepare_coco(out: str, params: dict[str, Any]) -> object:
    """COCO-format instances (the 2014 layout, or any instances JSON + image folder per split) as semantic masks."""
    unknown = sorted(set(params) - set(COCO_PARAMS))
    if unknown:
        raise InputError("--params", f"unknown keys {unknown}; known: {list(COCO_PARAMS)}")
    # the rule sends the validated section (schema defaults filled in); a by-hand run with sparse params gets
    # prepare_coco's signature defaults, which equal the schema's
    return _call(
        "wsss.data.coco:prepare_coco",
        params.get("root"),
        out,
        splits=params.get("splits"),
        **{key: params[key] for key in ("min_area", "workers") if key in params},
        subsets=params.get("subsets"),
        max_pixels=params.get("max_pixels"),
    )


def _folder_splits(entry: Entry) -> list[str]:
    lists = Path(entry["root"]) / "ImageSets" / "Segmentation"
    extra = sorted(p.stem for p in lists.glob("*.txt") if not p.name.startswith(".")) if lists.is_dir() else []
    return list(dict.fromkeys(["train", "val", *extra]))


def _folder_inputs(entry: Entry) -> list[str]:
    """What a folder dataset is read from, where it exists: the images, the labels CSV, the masks and the split
    lists."""
    root = entry["root"]
    paths = [os.path.join(root, entry[k]) for k in ("images", "labels", "masks")]
    paths.append(os.path.join(root, "ImageSets", "Segmentation"))
    return [p for p in paths if os.path.exists(p)]


@register_kind("folder", splits=_folder_splits, inputs=_folder_inputs)
def prepare_folder(out: str, params: dict[str, Any]) -> object:
    """A user's folder of images with a labels CSV and optional masks, read in place."""
    return _call("wsss.data.folder:prepare_folder", params, out)
