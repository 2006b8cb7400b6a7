"""DeepLabV2's training set (docs/method.md#deeplabv2) and the input normalisation of the two initialisation styles.

Normalisation depends on what the initial weights were trained with:

* ``torchvision`` (ImageNet weights from torchvision, or none): RGB scaled to [0, 1], minus the ImageNet mean
  (0.485, 0.456, 0.406), divided by the std (0.229, 0.224, 0.225).
* ``caffe`` (the converted Caffe COCO init ``deeplabv1_resnet101-coco.pth`` that the references use): channels
  reordered to BGR, minus the mean BGR (104.008, 116.669, 122.675) on the 0..255 scale, no division.

In both the mean maps to 0, so padding the normalised image with 0 is padding with the mean, as the references do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsss.data import transforms as T
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.loaders import read_image_and_label
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE, index_label_dirs

CAFFE_MEAN_BGR = np.array([104.008, 116.669, 122.675], dtype=np.float32)
SCALE_SAMPLING = ("discrete", "uniform")
LABEL_SOURCES = ("pseudo", "gt")


def normalize_image(image: np.ndarray, style: str = "torchvision") -> np.ndarray:
    """uint8 RGB H×W×3 → float32 H×W×3 as the initial weights expect (module doc)."""
    if style == "torchvision":
        return T.normalize(image)
    if style == "caffe":
        return image[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR
    raise ValueError(f"unknown normalisation style {style!r}")


def resize_bilinear(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 image to (H, W) (the references' image resampling for DeepLab)."""
    if image.shape[:2] == tuple(size_hw):
        return image
    return np.asarray(Image.fromarray(image).resize((size_hw[1], size_hw[0]), resample=Image.BILINEAR))


def draw_scale(rng: np.random.Generator, scales: Sequence[float], sampling: str = "discrete") -> float:
    """One of ``scales`` (``discrete``, the references' {0.5, …, 1.5}) or uniform in [min, max] (``uniform``)."""
    if sampling == "discrete":
        return float(scales[int(rng.integers(len(scales)))])
    if sampling == "uniform":
        return float(rng.uniform(min(scales), max(scales)))
    raise ValueError(f"scale sampling must be one of {SCALE_SAMPLING}, got {sampling!r}")


def training_label_paths(
    data: VOCLayoutDataset, ids: Sequence[str], source: str, dirs: Sequence[str | os.PathLike[str]] = ()
) -> dict[str, Path]:
    """Where each training id's label PNG is: the dataset's masks (``gt``, the fully supervised upper bound) or the
    pseudo-label shard folders ``dirs`` (``pseudo``). A missing label is an InputError."""
    if source == "pseudo":
        if not dirs:
            raise InputError("seg.label_source", "pseudo labels requested but no pseudo-label folders were given")
        return index_label_dirs(dirs, ids)
    if source == "gt":
        paths = {i: data.mask_path(i) for i in ids}
        missing = [i for i, p in paths.items() if not p.exists()]
        if missing:
            raise InputError(
                data.mask_dir,
                f"no ground-truth mask for {len(missing)} of {len(ids)} training ids, e.g. {missing[0]!r}",
            )
        return paths
    raise InputError("seg.label_source", f"must be one of {LABEL_SOURCES}, got {source!r}")


class SegmentationTrainSet(torch.utils.data.Dataset):
    """Images + label maps with DeepLab's augmentation, indexed by ``(index, aug_seed)``.

    Per item: a scale from :func:`draw_scale` (size (round(H·s), round(W·s)); image PIL-bilinear, label nearest),
    normalisation (:func:`normalize_image`), horizontal flip with p = 1/2 (if ``flip``), then a random
    ``crop``×``crop`` window after padding bottom-right to at least the crop (image with 0 = mean, label with 255).
    Items: ``image`` float32 3×crop×crop, ``label`` int64 crop×crop (values 0..C-1 or 255), ``id``.
    """

    def __init__(
        self,
        data: VOCLayoutDataset,
        ids: Sequence[str],
        label_paths: dict[str, Path],
        crop: int = 321,
        scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5),
        scale_sampling: str = "discrete",
        flip: bool = True,
        style: str = "torchvision",
    ) -> None:
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {list(scales)}")
        if scale_sampling not in SCALE_SAMPLING:
            raise ValueError(f"scale_sampling must be one of {SCALE_SAMPLING}, got {scale_sampling!r}")
        self.data, self.ids, self.label_paths = data, list(ids), label_paths
        self.crop, self.scales, self.scale_sampling = int(crop), [float(s) for s in scales], scale_sampling
        self.flip, self.style = flip, style

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, aug_seed = key
        rng = np.random.default_rng(aug_seed)
        image_id = self.ids[index]
        image, label = read_image_and_label(self.data, image_id, self.label_paths[image_id])
        size = T.scaled_size(image.shape[:2], draw_scale(rng, self.scales, self.scale_sampling))
        image, label = resize_bilinear(image, size), T.resize(label, size, nearest=True)
        image = normalize_image(image, self.style)
        if self.flip:
            image, label = T.random_hflip([image, label], rng)
        image, label = T.random_crop([image, label], self.crop, [0.0, IGNORE], rng, pad_mode="bottom_right")
        return {
            "image": torch.from_numpy(T.to_chw(image)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "id": image_id,
        }


__all__ = [
    "CAFFE_MEAN_BGR",
    "LABEL_SOURCES",
    "SCALE_SAMPLING",
    "SegmentationTrainSet",
    "draw_scale",
    "normalize_image",
    "resize_bilinear",
    "training_label_paths",
]
