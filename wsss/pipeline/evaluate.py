"""Evaluation of CAMs (and, later, label maps) against ground-truth masks, accumulated over a split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.metrics import ConfusionMatrix
from wsss.runtime.errors import InputError


def labels_at_thresholds(cams: np.ndarray, keys: np.ndarray, bg_scores: Sequence[float]) -> list[np.ndarray]:
    """Label maps of ``cam_to_labels`` for several background scores at once (argmax computed once).

    A pixel is background when its best class score is ≤ the background score (ties go to background)."""
    if cams.shape[0] == 0:
        return [np.zeros(cams.shape[1:], np.uint8) for _ in bg_scores]
    best = cams.max(axis=0)
    cls = (np.asarray(keys, np.int64) + 1).astype(np.uint8)[cams.argmax(axis=0)]
    return [np.where(best > t, cls, 0).astype(np.uint8) for t in bg_scores]


@dataclass
class F1Counter:
    """Image-level multi-label counts: predicted = probability > 0.5."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def zeros(cls, num: int) -> F1Counter:
        return cls(np.zeros(num, np.int64), np.zeros(num, np.int64), np.zeros(num, np.int64))

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        pred, true = scores > 0.5, labels > 0.5
        self.tp += pred & true
        self.fp += pred & ~true
        self.fn += ~pred & true

    def micro_f1(self) -> float:
        tp, fp, fn = self.tp.sum(), self.fp.sum(), self.fn.sum()
        return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


@dataclass
class CamEvaluation:
    """Confusions at the configured background score and at each sweep score, and the image-level F1 counts."""

    main: ConfusionMatrix
    sweep: dict[float, ConfusionMatrix] = field(default_factory=dict)
    f1: F1Counter | None = None
    baselines: dict[str, ConfusionMatrix] = field(default_factory=dict)


# Trivial predictors the CAMs must beat: every pixel background, and every pixel foreground (the image's
# best-scoring ground-truth class, background never predicted). As background scores: +inf and -inf.
BASELINES = {"all_background": float("inf"), "all_foreground": float("-inf")}


def evaluate_cams(
    data: VOCLayoutDataset,
    ids: Sequence[str],
    cam_dirs: Sequence[str | os.PathLike[str]],
    bg_score: float,
    sweep: Sequence[float],
) -> CamEvaluation:
    """Score the stored CAMs of ``ids`` (upsampled to image size) against the masks, per background score."""
    n = data.num_classes
    result = CamEvaluation(
        ConfusionMatrix(n),
        {t: ConfusionMatrix(n) for t in sweep},
        F1Counter.zeros(n - 1),
        {name: ConfusionMatrix(n) for name in BASELINES},
    )
    cam_paths = index_cam_dirs(cam_dirs, ids)
    for image_id in ids:
        path = cam_paths[image_id]
        rec = load_cam(path)
        gt = data.mask(image_id)
        if rec.size != gt.shape:
            raise InputError(path, f"CAM of image size {rec.size} but the mask is {gt.shape}")
        cams = rec.full_res()
        thresholds = [bg_score, *sweep, *BASELINES.values()]
        matrices = [result.main, *result.sweep.values(), *result.baselines.values()]
        for cm, pred in zip(matrices, labels_at_thresholds(cams, rec.keys, thresholds)):
            cm.update(pred, gt)
        result.f1.update(rec.scores, data.label_vector(image_id))
    return result


def sweep_table(evaluation: CamEvaluation) -> list[dict[str, Any]]:
    """One row per swept background score: mIoU over GT-present classes, pixel accuracy."""
    rows = []
    for t, cm in sorted(evaluation.sweep.items()):
        s = cm.scores()
        rows.append({"bg_score": t, "miou": s["miou_present"], "pixel_accuracy": s["pixel_accuracy"]})
    return rows
