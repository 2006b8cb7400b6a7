"""Image-level validation without pixel labels: a held-out slice of the classifier's training images, its mAP and
micro-F1 during training, and the bookkeeping of ``cls.epochs: auto`` (best weights, patience, resumable state).

The held-out slice is a hash of each image id (salted, so it is independent of a folder dataset's val split, which
hashes the plain stem): adding images never moves the others, and no evaluation mask is ever read.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.pipeline.classify import image_scores
from wsss.pipeline.evaluate import F1Counter

log = logging.getLogger(__name__)

HOLDOUT_SALT = b"wsss-cls-holdout\0"
COLUMNS = ("heldout_map", "heldout_f1")


def holdout_hash(image_id: str) -> float:
    """A number in [0, 1) from the SHA-256 of the salted id (first 8 bytes)."""
    digest = hashlib.sha256(HOLDOUT_SALT + image_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def holdout_split(ids: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids), both in the order of ``ids``: an id is held out when its salted hash is below
    ``fraction``. With ``fraction > 0`` and at least two ids, at least one id (the smallest hash) is held out, so a
    tiny dataset still measures something; ``fraction == 0`` holds out nothing."""
    if fraction <= 0 or len(ids) < 2:
        return list(ids), []
    hashes = {i: holdout_hash(i) for i in ids}
    held = {i for i in ids if hashes[i] < fraction}
    if not held:
        held = {min(ids, key=lambda i: hashes[i])}
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated average precision of one class: Σ_n (R_n − R_{n−1}) · P_n over the distinct score
    thresholds, highest first (tied scores enter together), as scikit-learn's ``average_precision_score``.
    NaN when the class has no positive."""
    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(labels).ravel() > 0.5
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last position of every distinct score
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes (columns) with at least one positive of :func:`average_precision`; NaN if none."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def micro_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Micro-F1 of the predictions ``score > 0.5`` (:class:`wsss.pipeline.evaluate.F1Counter`)."""
    counter = F1Counter.zeros(np.asarray(labels).shape[1])
    for row_scores, row_labels in zip(np.asarray(scores), np.asarray(labels)):
        counter.update(row_scores, row_labels)
    return counter.micro_f1()


class HeldoutEvaluator:
    """``evaluator(model) -> {"heldout_map", "heldout_f1"}``: the classifier's image-level probabilities
    (:func:`wsss.pipeline.classify.image_scores`, the image at its own size as infer_cam's scale 1.0) on the held-out ids,
    in eval mode, batched over consecutive images of one size. Draws no random numbers, so training resumes
    exactly."""

    columns = COLUMNS

    def __init__(
        self,
        data: VOCLayoutDataset,
        ids: Sequence[str],
        device: torch.device,
        batch_size: int,
        score_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = image_scores,
    ) -> None:
        if not ids:
            raise ValueError("no held-out images")
        self.data, self.ids, self.device, self.batch_size = data, list(ids), device, max(1, batch_size)
        self.score_fn = score_fn  # the method's image scores (wsss.methods.Method.image_scores)
        self.labels = np.stack([data.label_vector(i) for i in self.ids])

    @torch.no_grad()
    def scores(self, model: torch.nn.Module) -> np.ndarray:
        """[N, C-1] probabilities of the held-out images (the model is put back in its previous mode)."""
        was_training = model.training
        model.eval()
        out: list[np.ndarray] = []
        chunk: list[np.ndarray] = []

        def flush() -> None:
            if chunk:
                batch = torch.from_numpy(np.stack(chunk)).to(self.device)
                out.append(self.score_fn(model, batch).cpu().numpy())
                chunk.clear()

        try:
            for image_id in self.ids:
                image = to_chw(normalize(self.data.image(image_id)))
                if chunk and (image.shape != chunk[0].shape or len(chunk) == self.batch_size):
                    flush()
                chunk.append(image)
            flush()
        finally:
            model.train(was_training)
        return np.concatenate(out).astype(np.float64)

    def baseline_f1(self) -> float:
        """The micro-F1 of predicting every class on every held-out image (no model)."""
        return micro_f1(np.ones_like(self.labels), self.labels)

    def class_report(self, model: torch.nn.Module, classes: Sequence[str]) -> dict[str, Any]:
        """The label prior's baselines and the classifier's per-class scores on the held-out images
        (:func:`prior_report`); ``classes``: the foreground names."""
        return prior_report(self.scores(model), self.labels, classes)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        scores = self.scores(model)
        return {"heldout_map": mean_average_precision(scores, self.labels), "heldout_f1": micro_f1(scores, self.labels)}


class HeldoutTracker:
    """What :func:`wsss.engine.train.fit` remembers of the held-out evaluations: their history, the best by ``key``
    (higher is better; an improvement must exceed the best by more than ``min_delta``) with its weights when
    ``keep_best``, and the evaluations since the best. ``patience`` (evaluations without improvement; None = never)
    decides :attr:`should_stop`. The whole state goes into the training checkpoint, so a resumed run stops at the
    same step and keeps the same weights as an uninterrupted one."""

    def __init__(
        self, key: str = "heldout_map", min_delta: float = 0.0, patience: int | None = None, keep_best: bool = False
    ) -> None:
        self.key, self.min_delta, self.patience, self.keep_best = key, min_delta, patience, keep_best
        self.history: list[dict[str, float]] = []
        self.best_index: int | None = None
        self.since_best = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def best(self) -> dict[str, float] | None:
        return None if self.best_index is None else self.history[self.best_index]

    @property
    def last(self) -> dict[str, float] | None:
        return self.history[-1] if self.history else None

    def record(self, step: int, metrics: dict[str, float], model: torch.nn.Module | None = None) -> bool:
        """Add the evaluation after training step ``step`` (0-based, as the log's rows); True if it is the new best.
        A NaN value never improves."""
        self.history.append({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
        value = float(metrics[self.key])
        best = -math.inf if self.best is None else self.best[self.key]
        if math.isfinite(value) and value > best + self.min_delta:
            self.best_index, self.since_best = len(self.history) - 1, 0
            if self.keep_best and model is not None:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(h) for h in self.history],
            "best_index": -1 if self.best_index is None else self.best_index,
            "since_best": self.since_best,
            "best_state": self.best_state or {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state["history"]]
        self.best_index = None if int(state["best_index"]) < 0 else int(state["best_index"])
        self.since_best = int(state["since_best"])
        self.best_state = dict(state["best_state"]) or None


def prior_report(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """What the label prior alone scores on these images against what ``scores`` (N×C probabilities) score.

    ``prior_map``: the mAP of constant scores (every image tied, so a class's AP is its prevalence ``p``: the mean
    prevalence over the classes with a positive); ``prior_f1`` of a class: the F1 of predicting it on every image,
    2p/(1+p). ``classes``: per class the held-out positives and negatives, the prevalence, the classifier's AP and
    F1 (probability > 0.5) and the prior's F1 (None where undefined)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    rows = {}
    for c, name in enumerate(classes):
        y, s = labels[:, c], scores[:, c]
        pos = int(y.sum())
        p = pos / max(len(y), 1)
        pred = s > 0.5
        tp = int((pred & y).sum())
        f1 = 2 * tp / (int(pred.sum()) + pos) if pred.sum() + pos else None
        rows[name] = {
            "positives": pos,
            "negatives": int(len(y) - pos),
            "prevalence": p,
            "ap": _finite(average_precision(s, y)) if pos else None,
            "f1": f1,
            "prior_f1": 2 * p / (1 + p) if pos else None,
        }
    measured = [r["prevalence"] for r in rows.values() if r["positives"]]
    return {
        "prior_map": float(np.mean(measured)) if measured else None,
        "map": _finite(mean_average_precision(scores, labels)),
        "classes": rows,
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def training_report(
    tracker: HeldoutTracker,
    result: dict[str, Any],
    *,
    auto: bool,
    held_images: int,
    train_images: int,
    min_delta: float,
    patience: int,
    baseline_f1: float | None = None,
    prior: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str, bool]:
    """(``cls/heldout.json`` contents, the log line, whether it is a warning) after :func:`wsss.engine.train.fit`.

    The reported metrics are those of the weights kept: the best evaluation under ``epochs: auto``, else the last
    one (after the final step). ``still_improving``: training ran to ``max_steps`` without using up the patience,
    i.e. it was cut short by ``max_epochs``, not by the held-out mAP. ``baseline_f1``: the micro-F1 of predicting
    every class on the held-out images (what a classifier that learned only "say yes" would score); ``prior``: the
    label prior's baselines and the kept weights' per-class scores (:func:`prior_report`), under ``prior``."""
    steps, max_steps = int(result["steps"]), int(result["max_steps"])
    kept = tracker.best if auto else tracker.last
    still_improving = bool(auto and not result["stopped_early"] and tracker.best is not None)
    report = {
        "held_out_images": held_images,
        "train_images": train_images,
        "epochs": "auto" if auto else "fixed",
        "steps": steps,
        "max_steps": max_steps,
        "stopped_early": bool(result["stopped_early"]),
        "still_improving": still_improving,
        "kept_step": None if kept is None else int(kept["step"]),
        "map": _finite(kept["heldout_map"]) if kept else None,
        "f1": _finite(kept["heldout_f1"]) if kept else None,
        "baseline_f1": _finite(baseline_f1),
        "prior": prior,
        "evaluations": [{k: (_finite(v) if k != "step" else int(v)) for k, v in h.items()} for h in tracker.history],
    }
    if kept is None:
        return (
            report,
            (f"trained {steps} steps; no held-out images (cls.holdout_fraction 0): the classifier is not measured"),
            True,
        )
    measured = f"held-out mAP {kept['heldout_map']:.3f}, micro-F1 {kept['heldout_f1']:.3f} on {held_images} images"
    if not auto:
        return report, f"trained {steps} steps (fixed epochs); {measured} (final weights)", False
    if result["stopped_early"]:
        return (
            report,
            (
                f"epochs auto: stopped after {steps} of at most {max_steps} steps: held-out mAP did not "
                f"improve by more than {min_delta} in {patience} evaluations; kept the weights of step "
                f"{kept['step']}: {measured}"
            ),
            False,
        )
    return (
        report,
        (
            f"epochs auto: reached cls.max_epochs ({max_steps} steps) while held-out mAP was still "
            f"improving (best at step {kept['step']}, {tracker.since_best} evaluation(s) since): kept it, "
            f"{measured}; raise cls.max_epochs to train longer"
        ),
        True,
    )


__all__ = [
    "COLUMNS",
    "HeldoutEvaluator",
    "HeldoutTracker",
    "average_precision",
    "holdout_hash",
    "holdout_split",
    "mean_average_precision",
    "micro_f1",
    "prior_report",
    "training_report",
]
