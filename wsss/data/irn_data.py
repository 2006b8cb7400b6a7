"""IRNet's training set (docs/method.md#irnet-training): images with their IR labels, augmented, label at stride 4.

Indexed by ``(index, aug_seed)`` pairs from :class:`wsss.engine.train.StepBatchSampler`, so every draw follows from the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.data import transforms as T
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.loaders import read_image_and_label
from wsss.runtime.io import IGNORE


class AffinityTrainSet(torch.utils.data.Dataset):
    """Images + IR labels (0 / class id / 255), IRN's augmentation.

    Per item: random scale in ``scale_range`` (image bicubic, label nearest; size (round(H·s), round(W·s))),
    ImageNet normalisation, flip with p = 1/2, random ``crop``×``crop`` window (image padded with 0, i.e. the mean,
    label with 255, at a random offset when smaller), label reduced to ``crop/4`` (nearest).
    Items: ``image`` float32 3×crop×crop, ``label`` int64 (crop/4)×(crop/4), ``id``.
    """

    def __init__(
        self,
        data: VOCLayoutDataset,
        ids: Sequence[str],
        label_paths: dict[str, Path],
        crop: int,
        scale_range: tuple[float, float] = (0.5, 1.5),
    ) -> None:
        if crop % 4:
            raise ValueError(f"crop must be a multiple of 4, got {crop}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.data, self.ids, self.label_paths = data, list(ids), label_paths
        self.crop, self.scale_range = crop, (float(scale_range[0]), float(scale_range[1]))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, aug_seed = key
        rng = np.random.default_rng(aug_seed)
        image_id = self.ids[index]
        image, label = read_image_and_label(self.data, image_id, self.label_paths[image_id])
        size = T.scaled_size(image.shape[:2], float(rng.uniform(*self.scale_range)))
        image, label = T.resize(image, size), T.resize(label, size, nearest=True)
        image = T.normalize(image)
        image, label = T.random_hflip([image, label], rng)
        image, label = T.random_crop([image, label], self.crop, [0.0, IGNORE], rng)
        small = self.crop // 4
        label = T.resize(label, (small, small), nearest=True)
        return {
            "image": torch.from_numpy(T.to_chw(image)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "id": image_id,
        }


__all__ = ["AffinityTrainSet"]
