"""PyTorch datasets over the VOC-layout reader for the training stages.

Training sets are indexed by ``(index, aug_seed)`` pairs from :class:`wsss.engine.train.StepBatchSampler`, so every
augmentation draw is reproducible from the step alone (exact resume, same batches under DDP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.data import transforms as T
from wsss.data.dataset import VOCLayoutDataset
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_label_png


def read_image_and_label(data: VOCLayoutDataset, image_id: str, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image and its label map from ``label_path`` (pseudo labels, IR labels or GT), sizes cross-checked."""
    image = data.image(image_id)
    label = read_label_png(label_path, data.num_classes)
    if label.shape != image.shape[:2]:
        raise InputError(label_path, f"label size {label.shape} differs from image {image.shape[:2]}")
    return image, label


class ClassificationTrainSet(torch.utils.data.Dataset):
    """Images with image-level labels, augmented as the VWL/IRN classifier recipe (docs/method.md#classifier-training):
    random long-side resize in ``resize_long``, ImageNet normalisation, flip, random ``crop`` (zero = mean padding)."""

    def __init__(self, data: VOCLayoutDataset, ids: list[str], resize_long: tuple[int, int], crop: int) -> None:
        self.data, self.ids = data, ids
        self.resize_long, self.crop = resize_long, crop

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, aug_seed = key
        rng = np.random.default_rng(aug_seed)
        image_id = self.ids[index]
        image = T.random_resize_long(self.data.image(image_id), *self.resize_long, rng)
        image = T.normalize(image)
        (image,) = T.random_hflip([image], rng)
        (image,) = T.random_crop([image], self.crop, [0.0], rng)
        return {
            "image": torch.from_numpy(T.to_chw(image)),
            "labels": torch.from_numpy(self.data.label_vector(image_id)),
            "id": image_id,
        }
