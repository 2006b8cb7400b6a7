"""Segmentation metrics from a confusion matrix accumulated over images (rows = GT, columns = prediction).

Per class c, with TP_c = cm[c, c], gt_c = row sum, pred_c = column sum and union_c = gt_c + pred_c - TP_c:

- ``iou[c] = TP_c / union_c``; NaN when union_c == 0 (class neither in GT nor predicted).
- ``fp[c] = (pred_c - TP_c) / union_c`` and ``fn[c] = (gt_c - TP_c) / union_c``, as IRNet's ``eval_sem_seg``
  reports them, so ``iou + fp + fn == 1`` wherever the union is non-empty; NaN where it is empty.
- ``miou_present``: mean IoU over classes that occur in GT (gt_c > 0). A class predicted but absent from GT
  is left out, so false positives of such a class are not counted against this number.
- ``miou_all``: NaN-mean of ``iou`` over all classes: a class absent from GT but predicted contributes IoU 0;
  only classes absent from both GT and prediction (NaN) are skipped.
- ``pixel_accuracy``: sum(TP) / number of scored pixels (GT != 255).
- ``mean_class_accuracy``: mean of TP_c / gt_c over classes present in GT.
- ``bg_fp``/``bg_fn``: ``fp[0]``/``fn[0]``; ``fg_fp_mean``/``fg_fn_mean``: NaN-mean of ``fp[1:]``/``fn[1:]``
  (foreground classes with an empty union are skipped, as in ``miou_all``).
Any mean over no classes is NaN.

GT pixels equal to 255 are ignored. GT values outside 0..C-1 (other than 255) raise ``ValueError``; so do
predictions outside 0..C-1, unless ``pred_ignore_as_background=True``, which maps predicted 255 to background (0)
as IRNet does for its saved label PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wsss.runtime.io import IGNORE


def _check_labels(arr: np.ndarray, num_classes: int, what: str, allow_ignore: bool) -> None:
    """Raise ValueError unless every value of ``arr`` is in 0..num_classes-1 (or 255 when ``allow_ignore``)."""
    vals = arr[arr != IGNORE] if allow_ignore else arr
    if vals.size and (vals.min() < 0 or vals.max() >= num_classes):
        bad = vals[(vals < 0) | (vals >= num_classes)]
        allowed = f"0..{num_classes - 1}" + (" or 255" if allow_ignore else "")
        raise ValueError(f"{what} has value {int(bad[0])} outside {allowed} ({bad.size} pixels)")


def _check_num_classes(num_classes: int) -> None:
    """Class ids must fit below the ignore value 255."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be an integer in 1..255, got {num_classes!r}")


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, *, pred_ignore_as_background: bool = False
) -> np.ndarray:
    """Return the int64 (C, C) confusion of one image (or batch): rows = GT id, columns = predicted id.

    ``pred`` and ``gt`` are integer arrays of the same (any) shape. GT 255 pixels are not counted.
    """
    _check_num_classes(num_classes)
    pred, gt = np.asarray(pred), np.asarray(gt)
    for name, arr in (("prediction", pred), ("ground truth", gt)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    pred, gt = pred.ravel(), gt.ravel()
    if pred_ignore_as_background:
        pred = np.where(pred == IGNORE, 0, pred)
    _check_labels(gt, num_classes, "ground truth", allow_ignore=True)
    _check_labels(pred, num_classes, "prediction", allow_ignore=False)
    valid = gt != IGNORE
    index = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den as float64, NaN where den == 0 (no warnings)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _check_confusion(cm: np.ndarray) -> np.ndarray:
    """Validate a (C, C) non-negative integer matrix and return it as int64."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    if cm.dtype.kind not in "iu" or (cm.size and cm.min() < 0):
        raise ValueError("confusion matrix must hold non-negative integers")
    return cm.astype(np.int64)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (gt + pred - TP) as float64; NaN for classes with an empty union."""
    cm = _check_confusion(cm)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(1) + cm.sum(0) - tp)


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """All metrics of the module docstring from a (C, C) confusion; per-class values are lists of floats (NaN kept)."""
    cm = _check_confusion(cm)
    tp = np.diag(cm).astype(np.float64)
    gt, pr = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
    union = gt + pr - tp
    iou, fp, fn = _ratio(tp, union), _ratio(pr - tp, union), _ratio(gt - tp, union)
    present = gt > 0
    return {
        "miou_present": float(iou[present].mean()) if present.any() else math.nan,
        "miou_all": _nanmean(iou),
        "iou": iou.tolist(),
        "pixel_accuracy": float(_ratio(tp.sum(), gt.sum())),
        "mean_class_accuracy": float((tp[present] / gt[present]).mean()) if present.any() else math.nan,
        "fp": fp.tolist(),
        "fn": fn.tolist(),
        "bg_fp": float(fp[0]),
        "bg_fn": float(fn[0]),
        "fg_fp_mean": _nanmean(fp[1:]),
        "fg_fn_mean": _nanmean(fn[1:]),
    }


def _json_value(v: Any) -> Any:
    """Float NaN/inf → None, recursively through lists and dicts."""
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class ConfusionMatrix:
    """A confusion matrix accumulated image by image; shards combine with ``merge`` or ``+``."""

    def __init__(self, num_classes: int, *, pred_ignore_as_background: bool = False) -> None:
        _check_num_classes(num_classes)
        self.num_classes = int(num_classes)
        self.pred_ignore_as_background = pred_ignore_as_background
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, *, pred_ignore_as_background: bool = False) -> ConfusionMatrix:
        """Wrap a saved (C, C) non-negative integer matrix, e.g. one shard's result."""
        matrix = _check_confusion(matrix)
        out = cls(matrix.shape[0], pred_ignore_as_background=pred_ignore_as_background)
        out.matrix = matrix.copy()
        return out

    def update(self, pred: np.ndarray, gt: np.ndarray) -> ConfusionMatrix:
        """Add one image's (or batch's) pixels; returns self."""
        self.matrix += confusion_matrix(
            pred, gt, self.num_classes, pred_ignore_as_background=self.pred_ignore_as_background
        )
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts in place; returns self."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only merge a ConfusionMatrix with the same num_classes")
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return ConfusionMatrix.from_matrix(self.matrix, pred_ignore_as_background=self.pred_ignore_as_background).merge(
            other
        )

    def scores(self) -> dict[str, Any]:
        """The metrics of ``scores_from_confusion`` (floats, NaN where undefined)."""
        return scores_from_confusion(self.matrix)

    def to_json_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-serialisable scores: per-class ``iou``/``fp``/``fn`` keyed by class name, NaN → null, plus counts."""
        names = [str(n) for n in class_names]
        if len(names) != self.num_classes or len(set(names)) != len(names):
            raise ValueError(f"need {self.num_classes} distinct class names, got {names}")
        s = self.scores()
        per_class = {key: dict(zip(names, s.pop(key))) for key in ("iou", "fp", "fn")}
        out = {**s, **per_class}
        out["num_classes"] = self.num_classes
        out["num_pixels"] = int(self.matrix.sum())
        out["gt_pixels"] = dict(zip(names, self.matrix.sum(1).tolist()))
        out["pred_pixels"] = dict(zip(names, self.matrix.sum(0).tolist()))
        return _json_value(out)
