"""The gates' verdicts: what a measured number means for the run, as one line (stage scripts cls_gate and seg_gate
raise it as the run's error). Pure arithmetic on the numbers, no torch import, so a gate rule starts in a moment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from wsss.data.statistics import NEARLY_ALL

GATE_ADVICE = (
    "train longer (cls.epochs: auto, cls.max_epochs), start from pretrained weights (cls.pretrained: "
    "imagenet), use larger images (cls.resize_long, cls.crop), or fewer classes"
)


def prior_gap_closed(value: float, prior: float) -> float:
    """The share of the gap between the prior's score and a perfect 1 that ``value`` closes (1 = perfect, 0 = no
    better than the prior, < 0 = worse); -inf when the prior is already perfect (nothing to learn shows)."""
    return (value - prior) / (1.0 - prior) if prior < 1.0 else -math.inf


def _frequent_advice(name: str, prevalence: float) -> str:
    return f"remove or merge {name}, or add images without it" if prevalence > NEARLY_ALL else ""


def cls_gate(
    report: dict[str, Any], enabled: bool, min_f1: float, min_gain: float | None, min_class_images: int
) -> tuple[bool, str]:
    """The gate after train_cls on a ``cls/heldout.json`` report: (pass, message).

    The classifier must beat what the label prior scores for free on the same held-out images, by a margin: close
    at least ``min_gain`` of the gap between the prior and a perfect score, for the micro-F1 (prior: predicting
    every class), the mAP (prior: constant scores, whose AP is the class's prevalence) and every class's AP with at
    least ``min_class_images`` held-out images with and without it (a class with fewer is named as not
    measurable); ``min_gain`` None compares with nothing. Its micro-F1 must reach ``min_f1``. A disabled gate passes with the same message as a warning;
    an unmeasured classifier (no held-out images) passes with a warning."""
    f1 = report.get("f1")
    if f1 is None:
        return True, (
            "cls gate not checked: no held-out F1 (cls.holdout_fraction 0 or no finite score); the "
            "classifier's quality is unknown"
        )
    held = report.get("held_out_images", "?")
    every = report.get("baseline_f1")
    prior = report.get("prior") or {}
    mAP, prior_map = report.get("map"), prior.get("prior_map")
    failures, notes, causes = [], [], []
    compared = []
    if every is not None:
        compared.append(f"predicting every class scores micro-F1 {every:.3f}")
        if min_gain is not None and prior_gap_closed(f1, every) < min_gain:
            failures.append(
                f"no better than its label prior: micro-F1 {f1:.3f} closes {_pct(prior_gap_closed(f1, every))} of the gap from predicting every "
                f"class ({every:.3f}) to 1"
            )
    if mAP is not None and prior_map is not None:
        compared.append(f"constant scores (the prevalences) score mAP {prior_map:.3f}")
        if min_gain is not None and prior_gap_closed(mAP, prior_map) < min_gain:
            failures.append(
                f"no better than its label prior: mAP {mAP:.3f} closes {_pct(prior_gap_closed(mAP, prior_map))} of the gap from constant scores "
                f"({prior_map:.3f}) to 1"
            )
    weak, unmeasured = [], []
    for name, row in (prior.get("classes") or {}).items() if min_gain is not None else ():
        p = row["prevalence"]
        if row["positives"] < min_class_images or row["negatives"] < min_class_images:
            unmeasured.append(f"{name} ({row['positives']} of {held} held-out images have it)")
            if p > NEARLY_ALL:
                causes.append(_frequent_advice(name, p))
            continue
        gain = prior_gap_closed(row["ap"], p)
        if min_gain is not None and gain < min_gain:
            weak.append(f"{name} (AP {row['ap']:.3f} vs its prevalence {p:.3f}: {_pct(gain)} of the gap)")
            if p > NEARLY_ALL:
                causes.append(_frequent_advice(name, p))
    if weak:
        failures.append(f"it cannot tell classes {', '.join(weak)} from their label prior")
    if unmeasured:
        notes.append(
            f"not measurable against their prior (fewer than {min_class_images} held-out images with or "
            f"without them): {', '.join(unmeasured)}"
        )
    if f1 < min_f1:
        failures.append(f"micro-F1 {f1:.3f} is below gates.min_cls_f1 {min_f1}")
    judged = "compared with the label prior" if min_gain is not None else "label prior not judged (min_prior_gain null)"
    context = f"{held} held-out images; {judged}: {'; '.join(compared) or 'no baseline recorded'}"
    if notes:
        context += "; " + "; ".join(notes)
    if not failures:
        prior_part = (
            ""
            if min_gain is None or not compared
            else f" beat the label prior by at least gates.min_prior_gain {min_gain} of the gap to 1 and"
        )
        return True, (
            f"cls gate passed: held-out micro-F1 {f1:.3f}"
            + (f", mAP {mAP:.3f}" if mAP is not None else "")
            + f"{prior_part} reached gates.min_cls_f1 {min_f1} ({context})"
        )
    advice = "; ".join(dict.fromkeys(c for c in causes if c)) or ""
    problem = (
        f"held-out image-level micro-F1 {f1:.3f}: {'; '.join(failures)} (gates.min_prior_gain {min_gain}; "
        f"{context}): the classifier did not learn these classes and every later stage inherits that; "
        f"{advice + '; ' if advice else ''}{GATE_ADVICE}"
    )
    if not enabled:
        return True, f"gates.enabled is false, running on: {problem}"
    return False, f"{problem}; gates.enabled: false runs on anyway"


def _pct(x: float) -> str:
    return "none" if x == -math.inf else f"{100 * x:.0f} %"


CAM_ADVICE = (
    "start from pretrained weights (cls.pretrained: imagenet) or use larger images (cls.resize_long, "
    "cls.crop), so the classifier sees the objects rather than the scene"
)


def cam_gate(
    summary: dict[str, Any],
    stats: dict[str, Any],
    enabled: bool,
    min_evidence: float | None,
    max_overlap: float,
    min_pairs: int,
    se_factor: float,
) -> tuple[bool, str]:
    """The gate after the CAMs on :meth:`wsss.pipeline.calibrate.LocalisationEvidence.summary` and the training labels'
    :func:`wsss.data.statistics.label_statistics`: (pass, message). A class with at least ``min_pairs`` measured
    images fails when its CAM region's keep − area beats the best of the baselines (a centred region of the same
    area, a uniform map) by less than ``min_evidence`` even ``se_factor`` standard errors (over its images) above
    the mean, i.e. beyond the sampling noise of a class measured on a few images; a class pair labelled together in at least ``min_pairs``
    images fails when their CAM regions' mean IoU exceeds ``max_overlap`` (the CAMs cannot tell them apart). The
    message names the classes, their prevalence and co-occurrence in the labels, and what would help.
    ``min_evidence`` None judges no class's evidence."""
    names = stats["classes"]
    prevalence = dict(zip(names, stats["prevalence"]))
    index = {n: i for i, n in enumerate(names)}
    weak, unmeasured, advice = [], [], []
    uppers: dict[str, float] = {}  # judged classes: evidence + se_factor standard errors
    for name, row in summary["classes"].items():
        if row["pairs"] < min_pairs:
            unmeasured.append(name)
            continue
        upper = uppers[name] = row["evidence"] + se_factor * (row.get("evidence_se") or 0.0)
        if min_evidence is not None and upper < min_evidence:
            weak.append(
                f"{name} (present in {100 * prevalence[name]:.0f} % of the images; CAM keep − area "
                f"{row['objective']:.3f} vs centre map {row['centre_objective']:.3f}, uniform map "
                f"{row['uniform_objective']:.3f}: evidence {row['evidence']:.3f}, at most {upper:.3f} with "
                f"{se_factor:g} standard errors)"
            )
            if prevalence[name] > NEARLY_ALL:
                advice.append(_frequent_advice(name, prevalence[name]))
    same = []
    judged_pairs = {pair: row for pair, row in summary["pairs"].items() if row["images"] >= min_pairs}
    for pair, row in judged_pairs.items():
        a, b = pair.split("|")
        if row["iou"] > max_overlap:
            jac = stats["jaccard"][index[a]][index[b]]
            same.append(
                f"{a} and {b} (their CAM regions overlap at IoU {row['iou']:.2f} on {row['images']} images; "
                f"they appear together in {100 * jac:.0f} % of the images with either)"
            )
            advice.append(f"add images with only one of {a}, {b}, or merge them")
    baseline = (
        f"compared with a centred region of the same area and a uniform map, at bg_score "
        f"{summary['bg_score']:.2f}, by the classifier's score with only the region kept"
    )
    if unmeasured:
        baseline += f"; fewer than {min_pairs} images to measure {', '.join(unmeasured)}"
    if not weak and not same:
        least = min(uppers, key=uppers.__getitem__, default=None)
        worst = max(judged_pairs.items(), key=lambda kv: kv[1]["iou"], default=None)
        detail = (
            [
                f"least evidence {least} {summary['classes'][least]['evidence']:.3f} (+{se_factor:g} standard "
                f"errors {uppers[least]:.3f}) >= gates.min_cam_evidence {min_evidence}"
            ]
            if least is not None and min_evidence is not None
            else []
        )
        if worst:
            detail.append(
                f"largest overlap {worst[0].replace('|', '/')} IoU {worst[1]['iou']:.2f} on {worst[1]['images']} images <= "
                f"gates.max_cam_overlap {max_overlap}"
            )
        if min_evidence is None:
            headline = "CAM evidence not judged (gates.min_cam_evidence null)"
        elif least is None:
            headline = f"no class had the gates.min_gate_pairs {min_pairs} images needed to judge its CAMs"
        else:
            headline = "the CAMs localise every class"
        return True, f"cam gate passed: {headline} ({'; '.join([*detail, baseline])})"
    parts = []
    if weak:
        parts.append(
            f"CAMs without localisation evidence for {', '.join(weak)} (below gates.min_cam_evidence {min_evidence})"
        )
    if same:
        parts.append(f"CAMs that cannot tell {', '.join(same)} apart (above gates.max_cam_overlap {max_overlap})")
    problem = (
        f"{'; '.join(parts)} ({baseline}): image-level labels do not say where these classes are, and "
        f"IRNet and DeepLab would learn the CAMs' mistakes; "
        f"{'; '.join(dict.fromkeys(advice)) + '; ' if advice else ''}{CAM_ADVICE}"
    )
    if not enabled:
        return True, f"gates.enabled is false, running on: {problem}"
    return False, f"{problem}; gates.enabled: false runs on anyway"


SEG_ADVICE = (
    "train DeepLab longer (seg.iterations; 3x lifted the 6-class synthetic run from 58.4 to 67.1 mIoU), "
    "or improve its training labels (the pseudo-label warnings of results/summary.md)"
)


def seg_gate(
    fit_miou: float, iou: Sequence[float], class_names: Sequence[str], images: int, enabled: bool, min_fit: float
) -> tuple[bool, str]:
    """The gate after train_seg (rule seg_gate): (pass, message). DeepLab trained on its labels should reproduce
    them on those images; a fit mIoU below ``min_fit`` means it underfits them (or they contradict each other),
    and its predictions fall below its own pseudo labels. A disabled gate passes with the same message."""
    worst = min(((v, n) for v, n in zip(iou, class_names) if not math.isnan(v)), default=(math.nan, "?"))
    context = f"{images} training images; least reproduced class {worst[1]} {100 * worst[0]:.1f}"
    if fit_miou >= min_fit:
        return True, (
            f"seg gate passed: DeepLab reproduces its training labels at {100 * fit_miou:.1f} mIoU >= "
            f"gates.min_seg_fit {min_fit} ({context})"
        )
    problem = (
        f"DeepLab reproduces its own training labels at only {100 * fit_miou:.1f} mIoU ({context}), below "
        f"gates.min_seg_fit {min_fit}: it did not learn them and its predictions would fall below the pseudo "
        f"labels; {SEG_ADVICE}"
    )
    if not enabled:
        return True, f"gates.enabled is false, running on: {problem}"
    return False, f"{problem}; gates.enabled: false runs on anyway"


__all__ = ["CAM_ADVICE", "GATE_ADVICE", "SEG_ADVICE", "cam_gate", "cls_gate", "seg_gate"]
