"""The gates' verdicts: what a measured number means for the run, as one line (stage scripts cls_gate and seg_gate
raise it as the run's error). Pure arithmetic on the numbers, no torch import, so a gate rule starts in a moment."""

from __future__ import annotations

import math
from typing import Any, Sequence

GATE_ADVICE = ("train longer (cls.epochs: auto, cls.max_epochs), start from pretrained weights (cls.pretrained: "
               "imagenet), use larger images (cls.resize_long, cls.crop), or fewer classes")


def cls_gate(report: dict[str, Any], enabled: bool, min_f1: float) -> tuple[bool, str]:
    """The gate after train_cls on a ``cls/heldout.json`` report: (pass, message). Fails when the held-out micro-F1
    is below ``min_f1`` and the gate is enabled; a disabled gate passes with the same message as a warning; an
    unmeasured classifier (no held-out images) passes with a warning."""
    f1 = report.get("f1")
    if f1 is None:
        return True, ("cls gate not checked: no held-out F1 (cls.holdout_fraction 0 or no finite score); the "
                      "classifier's quality is unknown")
    baseline = report.get("baseline_f1")
    context = f"{report.get('held_out_images', '?')} held-out images"
    if baseline is not None:
        context += f"; predicting every class would score {baseline:.3f}"
    if f1 >= min_f1:
        return True, f"cls gate passed: held-out micro-F1 {f1:.3f} >= gates.min_cls_f1 {min_f1} ({context})"
    problem = (f"held-out image-level micro-F1 {f1:.3f} ({context}) is below gates.min_cls_f1 {min_f1}: the "
               f"classifier did not learn these classes and every later stage inherits that; {GATE_ADVICE}")
    if not enabled:
        return True, f"gates.enabled is false, running on: {problem}"
    return False, f"{problem}; gates.enabled: false runs on anyway"


SEG_ADVICE = ("train DeepLab longer (seg.iterations; 3x lifted the 6-class synthetic run from 58.4 to 67.1 mIoU), "
              "or improve its training labels (the pseudo-label warnings of results/summary.md)")


def seg_gate(fit_miou: float, iou: Sequence[float], class_names: Sequence[str], images: int, enabled: bool,
             min_fit: float) -> tuple[bool, str]:
    """The gate after train_seg (rule seg_gate): (pass, message). DeepLab trained on its labels should reproduce
    them on those images; a fit mIoU below ``min_fit`` means it underfits them (or they contradict each other),
    and its predictions fall below its own pseudo labels. A disabled gate passes with the same message."""
    worst = min(((v, n) for v, n in zip(iou, class_names) if not math.isnan(v)), default=(math.nan, "?"))
    context = f"{images} training images; least reproduced class {worst[1]} {100 * worst[0]:.1f}"
    if fit_miou >= min_fit:
        return True, (f"seg gate passed: DeepLab reproduces its training labels at {100 * fit_miou:.1f} mIoU >= "
                      f"gates.min_seg_fit {min_fit} ({context})")
    problem = (f"DeepLab reproduces its own training labels at only {100 * fit_miou:.1f} mIoU ({context}), below "
               f"gates.min_seg_fit {min_fit}: it did not learn them and its predictions would fall below the pseudo "
               f"labels; {SEG_ADVICE}")
    if not enabled:
        return True, f"gates.enabled is false, running on: {problem}"
    return False, f"{problem}; gates.enabled: false runs on anyway"


__all__ = ["GATE_ADVICE", "SEG_ADVICE", "cls_gate", "seg_gate"]
