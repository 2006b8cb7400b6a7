"""Thresholds without pixel labels: the CAM background score chosen by the trained classifier itself.

For a candidate background score ``t`` the foreground of class ``c`` is ``R_c(t) = {CAM_c > t}`` (the per-image
max-normalised CAM). Three numbers measure it on training images, with the classifier that made the CAMs:

* ``keep(t)``: the class probability of the image with everything outside ``R_c(t)`` blanked (set to the mean
  colour, 0 after normalisation) — is the region *sufficient* for the class?
* ``remove(t)``: the probability with ``R_c(t)`` blanked — is the region *necessary* (does the class vanish)?
* ``area(t)``: the share of the image ``R_c(t)`` covers.

The chosen score maximises ``keep(t) − remove(t) − area(t)`` (averaged over image–class pairs): the smallest region
that keeps the class and whose removal erases it (the preservation/deletion/area objective of perturbation
saliency, Fong & Vedaldi 2017, used with unit weights on three numbers that all lie in [0, 1]). A low ``t`` grows
the region into the background (area rises, keep and remove stay); a high ``t`` cuts the object (keep falls,
remove rises). No mask is read.

The same evidence brackets the IR-label thresholds (:func:`ir_label_bracket`), and, measured on the random walk's
class scores instead of the CAMs (:func:`walk_regions`), chooses the random walk's background threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import logging

import numpy as np
import torch

from wsss.classify import image_scores
from wsss.errors import InputError
from wsss.io import read_json
from wsss.models.vwl import VWLNet

log = logging.getLogger("wsss")

CRITERION = ("bg_score = argmax_t keep(t) - remove(t) - area(t) over cam.sweep: the classifier's probability of "
             "each ground-truth class with only the CAM region above t kept, minus with it blanked, minus the "
             "region's share of the image; averaged over image-class pairs of training images")
IR_CRITERION = ("conf_bg = the threshold at or below bg_score whose region's removal leaves the least of the class "
                "(argmin remove(t)): below it nothing the classifier needs remains, so it is sure background; "
                "conf_fg = the highest threshold above bg_score whose objective is still at least the objective at "
                "conf_bg: the band between them holds the thresholds the criterion cannot tell apart, left unsure")
WALK_CRITERION = ("bg_threshold = argmax_t keep(t) - remove(t) - area(t) over irn.sweep, as for bg_score, with the "
                  "region of class c at t = the pixels the pseudo label gives c at bg_threshold t (random-walk "
                  "score of c above t and highest of the image's classes)")


@dataclass
class RegionEvidence:
    """Sums over image–class pairs of keep, remove and area per candidate threshold, and the pair count."""

    thresholds: np.ndarray
    keep: np.ndarray
    remove: np.ndarray
    area: np.ndarray
    pairs: int = 0

    @classmethod
    def zeros(cls, thresholds: Sequence[float]) -> "RegionEvidence":
        t = np.asarray(sorted(float(v) for v in thresholds), np.float64)
        return cls(t, np.zeros_like(t), np.zeros_like(t), np.zeros_like(t))

    def objective(self) -> np.ndarray:
        n = max(self.pairs, 1)
        return (self.keep - self.remove - self.area) / n

    def choice(self) -> float:
        """The threshold of the highest objective (the lowest such threshold on a tie)."""
        if self.pairs == 0:
            raise ValueError("no image-class pairs measured")
        return float(self.thresholds[int(np.argmax(self.objective()))])

    def rows(self, name: str = "bg_score") -> list[dict[str, float]]:
        n = max(self.pairs, 1)
        return [{name: float(t), "keep": float(k / n), "remove": float(r / n), "area": float(a / n),
                 "objective": float(o)}
                for t, k, r, a, o in zip(self.thresholds, self.keep, self.remove, self.area, self.objective())]


def ir_label_bracket(evidence: RegionEvidence, bg_score: float) -> tuple[float, float]:
    """IR-label thresholds ``(conf_fg, conf_bg)`` around the chosen ``bg_score`` (see :data:`IR_CRITERION`):
    conf_bg < bg_score < conf_fg, both on the evidence's grid (the grid's neighbours of bg_score when the rule would
    land on bg_score itself)."""
    t, obj = evidence.thresholds, evidence.objective()
    n = max(evidence.pairs, 1)
    at = int(np.argmin(np.abs(t - bg_score)))
    if at == 0 or at == len(t) - 1:
        raise ValueError(f"bg_score {bg_score} must lie inside the calibration grid {t.tolist()} to bracket it")
    below = int(np.argmin(evidence.remove[:at + 1] / n))
    below = min(below, at - 1)
    above = max([i for i in range(at, len(t)) if obj[i] >= obj[below]], default=at)
    above = max(above, at + 1)
    return float(t[above]), float(t[below])


def walk_regions(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cv×H×W random-walk scores → the maps whose threshold-``t`` regions are the pseudo label's classes at
    bg_threshold ``t``: each class keeps its score where it is the image's highest class, else 0."""
    scores = np.asarray(scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores, np.float32)
    if scores.shape[0] == 0:
        return scores
    best = scores.argmax(axis=0)
    return np.where(best[None] == np.arange(scores.shape[0])[:, None, None], scores, 0.0).astype(np.float32)


def classifier_scores(model: VWLNet) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score function of a trained classifier: N×3×H×W normalised images → N×C probabilities."""
    return lambda batch: image_scores(model, batch)


@torch.inference_mode()
def add_image(evidence: RegionEvidence, score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
              cams: np.ndarray, keys: Sequence[int], max_batch: int = 32) -> None:
    """Measure one normalised 3×H×W image whose CAMs ``cams`` (Cv×H×W, max-normalised, image size) belong to the
    ground-truth classes ``keys`` (0-based), with ``score_fn`` (e.g. :func:`classifier_scores`); adds one pair per
    class to ``evidence``."""
    t = torch.as_tensor(evidence.thresholds, dtype=torch.float32)
    device = image.device
    for cam, cls in zip(np.asarray(cams, np.float32), keys):
        region = (torch.from_numpy(cam)[None] > t[:, None, None]).to(device, image.dtype)[:, None]  # K×1×H×W
        batch = torch.cat([image[None] * region, image[None] * (1 - region)])
        scores = torch.cat([score_fn(batch[i:i + max_batch])[:, int(cls)]
                            for i in range(0, len(batch), max_batch)]).double().cpu().numpy()
        k = len(t)
        evidence.keep += scores[:k]
        evidence.remove += scores[k:]
        evidence.area += region.mean(dim=(1, 2, 3)).double().cpu().numpy()
        evidence.pairs += 1


def resolve_auto(section: Mapping[str, Any], keys: Sequence[str], calibration: Sequence[str],
                 where: str) -> dict[str, Any]:
    """A copy of the config ``section`` (``where`` names it, e.g. ``irn``) with every ``auto`` value among ``keys``
    replaced by the calibrated one from the first file of ``calibration``; a missing file or value is an
    InputError naming it."""
    resolved = dict(section)
    auto = [key for key in keys if resolved.get(key) == "auto"]
    if not auto:
        return resolved
    if not calibration:
        raise InputError("--calibration", f"{where}.{auto[0]} is auto: give the run's calibration file")
    values = read_json(calibration[0], "calibration")
    for key in auto:
        if not isinstance(values.get(key), (int, float)) or isinstance(values.get(key), bool):
            raise InputError(calibration[0], f"has no {key} for {where}.{key}: auto (see its log)")
        resolved[key] = float(values[key])
        log.info("%s.%s %.2f from %s", where, key, resolved[key], calibration[0])
    return resolved


def calibration_ids(train_ids: Sequence[str], heldout_ids: Sequence[str], count: int) -> list[str]:
    """The images to calibrate on: the classifier's held-out images first (it never trained on them), then its
    training images, ``count`` at most, in split order."""
    held = set(heldout_ids)
    return (list(heldout_ids) + [i for i in train_ids if i not in held])[:count]


__all__ = ["CRITERION", "IR_CRITERION", "WALK_CRITERION", "RegionEvidence", "add_image", "calibration_ids",
           "classifier_scores", "ir_label_bracket", "resolve_auto", "walk_regions"]
