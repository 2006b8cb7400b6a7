"""What a dataset's image-level labels can teach, before anything trains: images per class, prevalence, the class
co-occurrence matrix, labels per image, and the warnings of the co-occurrence problem of weakly-supervised
segmentation (a class in nearly every image, or two classes that almost always appear together, cannot be located
from image-level labels: the classifier may use either object, or the scene, as evidence for both).

Pure numpy on a multi-hot label matrix (no image read), so the gates can name the cause of a failure in a moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Warning limits. Nearly every image: a class without at least 10 % of the images free of it leaves the classifier
# few negatives (the driving data: car in 95 %, pole in 94 %). Almost always together: of the images with
# either class, 90 % have both (the Jaccard index of their image sets). Few images: fewer than 20 images of a class.
NEARLY_ALL = 0.90
ALMOST_ALWAYS_TOGETHER = 0.90
FEW_IMAGES = 20


def label_matrix(labels: Sequence[Sequence[float]]) -> np.ndarray:
    """N×C boolean matrix from multi-hot rows."""
    return np.asarray(labels, np.float64).reshape(len(labels), -1) > 0.5


def label_statistics(labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Images per class, prevalence, the co-occurrence counts (C×C, diagonal = images per class), the Jaccard index
    of every class pair's image sets, and the histogram of labels per image. ``classes``: foreground names."""
    y = np.asarray(labels, bool)
    n = int(y.shape[0])
    both = y.T.astype(np.int64) @ y.astype(np.int64)
    count = np.diag(both).copy()
    either = count[:, None] + count[None, :] - both
    jaccard = np.where(either > 0, both / np.maximum(either, 1), 0.0)
    per_image = np.bincount(y.sum(axis=1), minlength=y.shape[1] + 1) if n else np.zeros(y.shape[1] + 1, np.int64)
    return {
        "images": n,
        "classes": list(classes),
        "images_per_class": count.tolist(),
        "prevalence": (count / max(n, 1)).tolist(),
        "cooccurrence": both.tolist(),
        "jaccard": jaccard.tolist(),
        "labels_per_image": per_image.tolist(),
    }


def frequent_classes(stats: dict[str, Any], limit: float = NEARLY_ALL) -> list[tuple[str, float]]:
    """(name, prevalence) of the classes present in more than ``limit`` of the images."""
    return [(c, p) for c, p in zip(stats["classes"], stats["prevalence"]) if p > limit]


def cooccurring_pairs(stats: dict[str, Any], limit: float = ALMOST_ALWAYS_TOGETHER) -> list[tuple[str, str, float]]:
    """(a, b, Jaccard) of the class pairs whose image sets overlap by more than ``limit`` (of the images with
    either, the share with both)."""
    names, jac = stats["classes"], stats["jaccard"]
    return [
        (names[i], names[j], jac[i][j])
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if jac[i][j] > limit
    ]


def label_warnings(stats: dict[str, Any]) -> list[str]:
    """One line per problem the labels show: a class in nearly every image, a class with few images, a pair that
    almost always co-occurs."""
    lines = []
    n = stats["images"]
    for name, p in frequent_classes(stats):
        lines.append(
            f"class {name!r} is present in {100 * p:.0f} % of the {n} images (> {100 * NEARLY_ALL:.0f} %): "
            f"image-level labels say little about where it is; remove or merge it, or add images without it"
        )
    for name, count in zip(stats["classes"], stats["images_per_class"]):
        if count < FEW_IMAGES:
            lines.append(f"class {name!r} has only {count} of the {n} images (< {FEW_IMAGES}): too few to learn it")
    for a, b, j in cooccurring_pairs(stats):
        lines.append(
            f"classes {a!r} and {b!r} appear together in {100 * j:.0f} % of the images with either "
            f"(> {100 * ALMOST_ALWAYS_TOGETHER:.0f} %): image-level labels cannot tell them apart; add images "
            f"with only one of them, or merge them"
        )
    return lines


__all__ = [
    "ALMOST_ALWAYS_TOGETHER",
    "FEW_IMAGES",
    "NEARLY_ALL",
    "cooccurring_pairs",
    "frequent_classes",
    "label_matrix",
    "label_statistics",
    "label_warnings",
]
