"""Evaluation against ground-truth masks, accumulated over a split: CAMs, pseudo labels, DeepLab with and without CRF;
and the pseudo labels' class coverage against the classifier's (no mask read).

No model is built here: torch is imported only to upsample a stored CAM or logits, torchvision never."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.artifacts.logits import index_logit_dirs, labels_from_logits, load_logits
from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.metrics import ConfusionMatrix
from wsss.runtime.errors import InputError
from wsss.runtime.io import index_label_dirs, read_label_png
from wsss.runtime.progress import progress


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


def evaluate_segmentation(
    data: VOCLayoutDataset,
    ids: Sequence[str],
    logit_dirs: Sequence[str | os.PathLike[str]],
    crf_dirs: Sequence[str | os.PathLike[str]],
) -> dict[str, ConfusionMatrix]:
    """Confusions over ``ids`` of the argmax of the upsampled logits (``no_crf``) and of the CRF labels (``crf``)."""
    n = data.num_classes
    logit_paths = index_logit_dirs(logit_dirs, ids)
    crf_paths = index_label_dirs(crf_dirs, ids)
    result = {"no_crf": ConfusionMatrix(n), "crf": ConfusionMatrix(n)}
    for image_id in progress(ids, desc="eval", mininterval=5.0, file=sys.stderr):
        gt = data.mask(image_id)
        rec = load_logits(logit_paths[image_id])
        if rec.size != gt.shape:
            raise InputError(logit_paths[image_id], f"logits of image size {rec.size} but the mask is {gt.shape}")
        if rec.logits.shape[0] != n:
            raise InputError(logit_paths[image_id], f"{rec.logits.shape[0]} classes, the dataset has {n}")
        result["no_crf"].update(labels_from_logits(rec.logits, rec.size), gt)
        refined = read_label_png(crf_paths[image_id], n)
        if refined.shape != gt.shape:
            raise InputError(crf_paths[image_id], f"CRF labels of size {refined.shape} but the mask is {gt.shape}")
        result["crf"].update(refined, gt)
    return result


def segmentation_report(cms: dict[str, ConfusionMatrix], class_names: Sequence[str], split: str) -> dict[str, Any]:
    """The ``deeplab_<split>_metrics.json`` content: mIoU (%) with and without CRF and both full score sets."""
    out: dict[str, Any] = {"split": split}
    for key, cm in cms.items():
        out[f"miou_{key}"] = round(100 * cm.scores()["miou_present"], 4)
    for key, cm in cms.items():
        out[key] = cm.to_json_dict(class_names)
    return out


def evaluate_labels(data: VOCLayoutDataset, ids: Iterable[str], label_paths: Mapping[str, Path]) -> ConfusionMatrix:
    """Confusion of label PNGs (predicted 255 counted as background, as IRN) against the masks of ``ids``."""
    cm = ConfusionMatrix(data.num_classes, pred_ignore_as_background=True)
    for image_id in ids:
        pred = read_label_png(label_paths[image_id], data.num_classes)
        gt = data.mask(image_id)
        if pred.shape != gt.shape:
            raise InputError(label_paths[image_id], f"label size {pred.shape} differs from the mask {gt.shape}")
        cm.update(pred, gt)
    return cm


def pseudo_coverage(
    num_classes: int, ids: Sequence[str], cam_paths: dict[str, Any], label_paths: dict[str, Any], min_pixels: float
) -> dict[str, np.ndarray]:
    """Per foreground class over ``ids``: ``classifier`` = images whose stored image-level probability (the CAM
    record's ``scores``) exceeds 0.5, ``pseudo`` = images whose pseudo-label map gives the class at least
    ``min_pixels`` of the image's non-ignored pixels, ``labelled`` = images labelled with it (the CAM keys)."""
    counts = {k: np.zeros(num_classes - 1, np.int64) for k in ("classifier", "pseudo", "labelled")}
    for image_id in ids:
        rec = load_cam(cam_paths[image_id])
        counts["classifier"] += np.asarray(rec.scores, np.float64).ravel()[: num_classes - 1] > 0.5
        counts["labelled"][np.asarray(rec.keys, np.int64)] += 1
        labels = read_label_png(label_paths[image_id], num_classes)
        valid = max(1, int((labels != 255).sum()))
        area = np.bincount(labels[labels != 255].ravel(), minlength=num_classes)[1:num_classes]
        counts["pseudo"] += area >= min_pixels * valid
    return counts


def coverage_warnings(
    counts: dict[str, np.ndarray], classes: Sequence[str], images: int, ratio: float, min_pixels: float
) -> list[str]:
    """One line per foreground class whose classifier and pseudo-label image counts disagree: the larger is at least
    5 images and 5 % of ``images``, and the smaller is below ``ratio`` times it. ``classes``: foreground names."""
    lines = []
    many = max(5, 0.05 * images)
    for k, name in enumerate(classes):
        found, covered = int(counts["classifier"][k]), int(counts["pseudo"][k])
        where = f"(of {images} images; covered = at least {100 * min_pixels:g} % of the pixels)"
        if found >= many and covered < ratio * found:
            lines.append(
                f"class {name!r}: the classifier finds it in {found} images but the pseudo labels cover it "
                f"in only {covered} {where}"
            )
        elif covered >= many and found < ratio * covered:
            lines.append(
                f"class {name!r}: the pseudo labels cover it in {covered} images but the classifier finds "
                f"it in only {found} {where}"
            )
    return lines
