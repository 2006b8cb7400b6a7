"""Thresholds without pixel labels: background scores chosen by the trained classifier itself.

For a candidate background score ``t`` the foreground of class ``c`` is ``R_c(t) = {CAM_c > t}`` (the per-image
max-normalised CAM). Two numbers measure it on training images, with the classifier that made the CAMs:

* ``keep(t)``: the class probability of the image with everything outside ``R_c(t)`` blanked (set to the mean
  colour, 0 after normalisation) — is the region *sufficient* for the class?
* ``area(t)``: the share of the image ``R_c(t)`` covers.

The objective is ``keep(t) − area(t)`` (averaged over image–class pairs): the smallest region that still keeps the
class (the "smallest sufficient region" of Dabkowski & Gal 2017, with unit weights on two numbers in [0, 1]). A low
``t`` grows the region into the background (area rises, keep stays); a high ``t`` cuts the object (keep falls). No
mask is read. The chosen score is the lowest ``t`` whose objective lies within one standard error (over the pairs)
of the highest — Breiman et al.'s one-standard-error rule: near its peak the objective is flat, its argmax moves
with the sampling noise, and a classifier keeps its score with less than the whole object (one of several
instances, the most discriminative part), so among scores the evidence cannot tell apart the largest region is
taken. On 17 synthetic classifiers the argmax fell up to 6.0 CAM mIoU below the oracle peak, this rule at most 2.0
(README "Thresholds without pixel labels").

Deliberately left out: the deletion term (the probability with ``R_c(t)`` blanked, "is the region necessary?") of
the preservation/deletion objectives (Fong & Vedaldi 2017). The blanked hole keeps the object's silhouette, which a
classifier of shapes still recognises, so deletion keeps rising as the region shrinks to the object and pulls the
choice towards too large regions: with it, the choice fell 0.7-5.6 CAM mIoU and 3.2-10.9 pseudo-label mIoU below
the oracle peaks of synthetic runs where keep − area stayed within 1.9 and 0.6 (README "Thresholds without pixel
labels").

The IR-label thresholds bracket the chosen score by region area (:func:`ir_label_bracket`), and the same criterion
measured on the random walk's class scores instead of the CAMs (:func:`walk_regions`) chooses the random walk's
background threshold — there with the plain argmax: on the random walk's regions the argmax stayed within 2.3
pseudo-label mIoU of the oracle peak on 8 synthetic runs, and the one-standard-error rule fell up to 5.4 below (it
picked too low thresholds: the walk's regions already spread the class past the CAM's discriminative part).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsss.methods import get_method
from wsss.pipeline.heldout import holdout_split

log = logging.getLogger("wsss")

CRITERION = (
    "bg_score = the lowest t of cam.sweep whose keep(t) - area(t) lies within cam.calibration_se standard "
    "errors of the highest (one-standard-error rule): keep = the classifier's probability of each "
    "ground-truth class with only the CAM region above t kept, area = the region's share of the image; "
    "averaged over image-class pairs of training images"
)
IR_CRITERION = (
    "conf_fg = the sweep value above bg_score whose region's mean area is nearest to area_ratio x the "
    "area at bg_score (the region's core), conf_bg = the one below bg_score nearest to area / area_ratio "
    "(the region grown by the same factor): pixels between them are left unsure"
)
WALK_CRITERION = (
    "bg_threshold = argmax_t keep(t) - area(t) over irn.sweep, with the "
    "region of class c at t = the pixels the pseudo label gives c at bg_threshold t (random-walk "
    "score of c above t and highest of the image's classes)"
)


@dataclass
class RegionEvidence:
    """Sums over image–class pairs of keep, area and the squared per-pair objective per candidate threshold, and
    the pair count."""

    thresholds: np.ndarray
    keep: np.ndarray
    area: np.ndarray
    pairs: int = 0
    objective_sq: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.objective_sq is None:
            self.objective_sq = np.zeros_like(self.keep)

    @classmethod
    def zeros(cls, thresholds: Sequence[float]) -> RegionEvidence:
        t = np.asarray(sorted(float(v) for v in thresholds), np.float64)
        return cls(t, np.zeros_like(t), np.zeros_like(t))

    def add(self, keep: np.ndarray, area: np.ndarray) -> None:
        """One image–class pair's keep and area at every threshold."""
        self.keep += keep
        self.area += area
        self.objective_sq += (keep - area) ** 2
        self.pairs += 1

    def objective(self) -> np.ndarray:
        n = max(self.pairs, 1)
        return (self.keep - self.area) / n

    def standard_error(self) -> np.ndarray:
        """The standard error of the mean objective per threshold (0 with fewer than two pairs)."""
        n = self.pairs
        if n < 2:
            return np.zeros_like(self.keep)
        variance = np.maximum(self.objective_sq - n * self.objective() ** 2, 0.0) / (n - 1)  # sample variance
        return np.sqrt(variance / n)

    def choice(self, interior: bool = False, tolerance_se: float = 0.0) -> float:
        """The threshold of the highest objective (the lowest such threshold on a tie); ``interior``: among all
        but the grid's first and last value (which then only bracket it, :func:`ir_label_bracket`).

        ``tolerance_se`` > 0: the lowest threshold (the largest region) whose objective lies within that many
        standard errors of the highest one — the one-standard-error rule (Breiman et al. 1984) with 1: near its
        peak the objective is flat, and its argmax within the sampling noise drifts to the small regions that
        only the most discriminative part fills."""
        if self.pairs == 0:
            raise ValueError("no image-class pairs measured")
        lo, hi = (1, len(self.thresholds) - 1) if interior else (0, len(self.thresholds))
        if hi <= lo:
            raise ValueError(f"no interior value in the calibration grid {self.thresholds.tolist()}")
        objective = self.objective()[lo:hi]
        best = int(np.argmax(objective))
        floor = objective[best] - tolerance_se * self.standard_error()[lo + best]
        return float(self.thresholds[lo + int(np.flatnonzero(objective >= floor)[0])])

    def rows(self, name: str = "bg_score") -> list[dict[str, float]]:
        n = max(self.pairs, 1)
        return [
            {
                name: float(t),
                "keep": float(k / n),
                "area": float(a / n),
                "objective": float(o),
                "objective_se": float(e),
            }
            for t, k, a, o, e in zip(self.thresholds, self.keep, self.area, self.objective(), self.standard_error())
        ]


def ir_label_bracket(evidence: RegionEvidence, bg_score: float, area_ratio: float = 0.7) -> tuple[float, float]:
    """IR-label thresholds ``(conf_fg, conf_bg)`` around the chosen ``bg_score`` (see :data:`IR_CRITERION`):
    conf_bg < bg_score < conf_fg, both on the evidence's grid; the first grid value past bg_score on a side where
    no value comes nearer."""
    if not 0 < area_ratio < 1:
        raise ValueError(f"area_ratio must lie in (0, 1), got {area_ratio}")
    t, area = evidence.thresholds, evidence.area / max(evidence.pairs, 1)
    at = int(np.argmin(np.abs(t - bg_score)))
    if at == 0 or at == len(t) - 1:
        raise ValueError(f"bg_score {bg_score} must lie inside the calibration grid {t.tolist()} to bracket it")
    above = at + 1 + int(np.argmin(np.abs(area[at + 1 :] - area_ratio * area[at])))
    below = int(np.argmin(np.abs(area[:at] - area[at] / area_ratio)))
    return float(t[above]), float(t[below])


def walk_regions(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cv×H×W random-walk scores → the maps whose threshold-``t`` regions are the pseudo label's classes at
    bg_threshold ``t``: each class keeps its score where it is the image's highest class, else 0."""
    scores = np.asarray(scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores, np.float32)
    if scores.shape[0] == 0:
        return scores
    best = scores.argmax(axis=0)
    return np.where(best[None] == np.arange(scores.shape[0])[:, None, None], scores, 0.0).astype(np.float32)


def classifier_scores(model: torch.nn.Module, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score function of a trained classifier of ``method``: N×3×H×W normalised images → N×C probabilities."""
    spec = get_method(method)
    return lambda batch: spec.image_scores(model, batch)


@torch.inference_mode()
def add_image(
    evidence: RegionEvidence,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    cams: np.ndarray,
    keys: Sequence[int],
    max_batch: int = 32,
) -> None:
    """Measure one normalised 3×H×W image whose CAMs ``cams`` (Cv×H×W, max-normalised, image size) belong to the
    ground-truth classes ``keys`` (0-based), with ``score_fn`` (e.g. :func:`classifier_scores`); adds one pair per
    class to ``evidence``."""
    t = torch.as_tensor(evidence.thresholds, dtype=torch.float32)
    device = image.device
    for cam, cls in zip(np.asarray(cams, np.float32), keys):
        region = (torch.from_numpy(cam)[None] > t[:, None, None]).to(device, image.dtype)[:, None]  # K×1×H×W
        batch = image[None] * region
        scores = (
            torch.cat([score_fn(batch[i : i + max_batch])[:, int(cls)] for i in range(0, len(batch), max_batch)])
            .double()
            .cpu()
            .numpy()
        )
        evidence.add(scores, region.mean(dim=(1, 2, 3)).double().cpu().numpy())


def centre_order(height: int, width: int) -> np.ndarray:
    """Pixel indices (flat, row-major) from the image centre outwards (elliptic distance, ties in index order): the
    first k of them are the centre map's region of area k — the map that puts every object in the middle."""
    y = (np.arange(height) + 0.5) / height - 0.5
    x = (np.arange(width) + 0.5) / width - 0.5
    return np.argsort((y[:, None] ** 2 + x[None, :] ** 2).ravel(), kind="stable")


@dataclass
class LocalisationEvidence:
    """Mask-free evidence that CAMs localise, at one background score ``t``, per image–class pair: the classifier's
    probability of the class with only the CAM region ``{CAM > t}`` kept (``keep``), with only a centred region of
    the same area kept (``centre``: the centre map's region), with the whole image (``full``) and with nothing
    (``blank``), and the area. The uniform map's regions are all or nothing, so its best keep − area is
    max(blank, full − 1). Per pair of classes labelled in one image: the IoU of their CAM regions (two classes the
    CAMs cannot tell apart cover the same pixels)."""

    bg_score: float
    rows: dict[int, list[tuple[float, float, float, float, float]]]
    overlaps: dict[tuple[int, int], list[float]]

    @classmethod
    def zeros(cls, bg_score: float) -> LocalisationEvidence:
        return cls(float(bg_score), {}, {})

    def summary(self, classes: Sequence[str]) -> dict[str, Any]:
        """Per class (``classes``: foreground names): pairs, mean keep, centre, blank, full, area, the CAM's
        objective keep − area, the baselines' best objective (the centre map's at the same area, the uniform map's)
        and the evidence = CAM objective − best baseline objective, with its standard error; per class pair the mean
        region IoU and the images it is measured on."""
        out: dict[str, Any] = {"bg_score": self.bg_score, "classes": {}, "pairs": {}}
        for c, rows in sorted(self.rows.items()):
            a = np.asarray(rows, np.float64)  # keep, centre, blank, full, area
            keep, centre, blank, full, area = a.T
            cam_obj = keep - area
            baseline = np.maximum(centre - area, np.maximum(blank, full - 1.0))
            gain = cam_obj - baseline
            se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else None
            out["classes"][classes[c]] = {
                "pairs": len(rows),
                "keep": float(keep.mean()),
                "centre": float(centre.mean()),
                "blank": float(blank.mean()),
                "full": float(full.mean()),
                "area": float(area.mean()),
                "objective": float(cam_obj.mean()),
                "centre_objective": float((centre - area).mean()),
                "uniform_objective": float(np.maximum(blank, full - 1.0).mean()),
                "evidence": float(gain.mean()),
                "evidence_se": se,
            }
        for (i, j), values in sorted(self.overlaps.items()):
            out["pairs"][f"{classes[i]}|{classes[j]}"] = {"images": len(values), "iou": float(np.mean(values))}
        return out


@torch.inference_mode()
def add_localisation(
    evidence: LocalisationEvidence,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    cams: np.ndarray,
    keys: Sequence[int],
) -> None:
    """Measure one normalised 3×H×W image (CAMs ``cams`` Cv×H×W max-normalised, ground-truth classes ``keys``,
    0-based) into ``evidence`` (see :class:`LocalisationEvidence`): 2 + 2·Cv forward passes in one batch."""
    cams = np.asarray(cams, np.float32)
    if not len(keys):
        return
    _, h, w = image.shape
    order = torch.from_numpy(centre_order(h, w))
    regions = torch.from_numpy(cams > evidence.bg_score)  # Cv×H×W
    centres = torch.zeros_like(regions).view(len(keys), -1)
    for k, count in enumerate(regions.view(len(keys), -1).sum(dim=1).tolist()):
        centres[k, order[:count]] = True
    masks = torch.cat(
        [
            regions.view(len(keys), -1),
            centres,
            torch.zeros(1, h * w, dtype=torch.bool),
            torch.ones(1, h * w, dtype=torch.bool),
        ]
    )
    batch = image[None] * masks.view(-1, 1, h, w).to(image.device, image.dtype)
    scores = score_fn(batch).double().cpu().numpy()
    n = len(keys)
    for k, cls in enumerate(keys):
        cls = int(cls)
        evidence.rows.setdefault(cls, []).append(
            (
                scores[k, cls],
                scores[n + k, cls],
                scores[2 * n, cls],
                scores[2 * n + 1, cls],
                float(regions[k].float().mean()),
            )
        )
    for a in range(n):
        for b in range(a + 1, n):
            union = int((regions[a] | regions[b]).sum())
            iou = int((regions[a] & regions[b]).sum()) / union if union else 0.0
            pair = tuple(sorted((int(keys[a]), int(keys[b]))))
            evidence.overlaps.setdefault(pair, []).append(iou)


def calibration_set(split_ids: Sequence[str], holdout_fraction: float, count: int) -> tuple[list[str], int]:
    """The calibration images of the classifier's training split (:func:`calibration_ids` after the classifier's
    own held-out slice) and how many of them the classifier never trained on."""
    train_ids, held_ids = holdout_split(split_ids, holdout_fraction)
    ids = calibration_ids(train_ids, held_ids, count)
    return ids, min(len(ids), len(held_ids))


def log_rows(evidence: RegionEvidence, name: str) -> list[dict[str, float]]:
    """The evidence's rows (:meth:`RegionEvidence.rows`), each also logged."""
    rows = evidence.rows(name)
    for row in rows:
        log.info(
            "%s %.2f: keep %.3f area %.3f objective %.3f", name, row[name], row["keep"], row["area"], row["objective"]
        )
    return rows


def calibration_ids(train_ids: Sequence[str], heldout_ids: Sequence[str], count: int) -> list[str]:
    """The images to calibrate on: the classifier's held-out images first (it never trained on them), then its
    training images, ``count`` at most, in split order."""
    held = set(heldout_ids)
    return (list(heldout_ids) + [i for i in train_ids if i not in held])[:count]


__all__ = [
    "CRITERION",
    "IR_CRITERION",
    "WALK_CRITERION",
    "LocalisationEvidence",
    "RegionEvidence",
    "add_image",
    "add_localisation",
    "calibration_ids",
    "calibration_set",
    "centre_order",
    "classifier_scores",
    "ir_label_bracket",
    "log_rows",
    "walk_regions",
]
