"""The gates' verdicts (wsss.pipeline.gates): the line names the measure, the threshold and what to do; a disabled gate
passes with the same problem as a warning. The stages that raise them: tests/test_heldout.py (cls_gate) and
tests/test_segment.py (seg_gate)."""

from __future__ import annotations

import math

from wsss.pipeline.gates import GATE_ADVICE, cam_gate, cls_gate, seg_gate


def test_seg_gate_message_names_the_measure_the_threshold_and_what_to_do() -> None:
    iou, names = [0.9, 0.8, 0.036, math.nan], ["background", "a", "star", "absent"]
    ok, line = seg_gate(0.55, iou, names, 64, True, 0.7)
    assert not ok
    for words in (
        "55.0 mIoU",
        "gates.min_seg_fit 0.7",
        "64 training images",
        "least reproduced class star 3.6",
        "seg.iterations",
        "gates.enabled: false",
    ):
        assert words in line, words
    problem = line.removesuffix("; gates.enabled: false runs on anyway")
    assert seg_gate(0.55, iou, names, 64, False, 0.7) == (True, f"gates.enabled is false, running on: {problem}")
    assert seg_gate(0.7, [0.7], ["background"], 64, True, 0.7)[0] is True


def _heldout(f1, every, mAP, classes):
    """A cls/heldout.json report; ``classes``: name -> (positives, negatives, ap)."""
    n = 63
    rows = {
        name: {"positives": p, "negatives": q, "prevalence": p / (p + q), "ap": ap, "f1": None, "prior_f1": None}
        for name, (p, q, ap) in classes.items()
    }
    prior_map = sum(r["prevalence"] for r in rows.values()) / len(rows)
    return {
        "held_out_images": n,
        "f1": f1,
        "baseline_f1": every,
        "map": mAP,
        "prior": {"prior_map": prior_map, "map": mAP, "classes": rows},
    }


def test_cls_gate_stops_a_classifier_worse_than_predicting_every_class() -> None:
    """The issue's street photos: F1 0.855 passed min_cls_f1 0.6 though predicting every class scores 0.861
    (planted bug: comparing with min_cls_f1 alone lets it through)."""
    report = _heldout(0.855, 0.861, 0.93, {"car": (60, 3, 0.96), "pole": (59, 4, 0.94), "sign": (55, 8, 0.88)})
    ok, line = cls_gate(report, True, 0.6, 0.25, 3)
    assert not ok
    for words in (
        "no better than its label prior",
        "predicting every class",
        "micro-F1 0.855",
        "0.861",
        "gates.min_prior_gain 0.25",
        "cls.pretrained",
        "gates.enabled: false",
    ):
        assert words in line, words
    problem = line.removesuffix("; gates.enabled: false runs on anyway")
    assert cls_gate(report, False, 0.6, 0.25, 3) == (True, f"gates.enabled is false, running on: {problem}")


def test_cls_gate_names_the_class_it_cannot_tell_from_its_prior() -> None:
    """Overall well above the prior, one class at its prevalence: the gate stops and names it (planted bug: only
    the overall scores judged)."""
    good = {"a": (20, 43, 0.99), "b": (25, 38, 0.98), "c": (22, 41, 0.97)}
    ok, line = cls_gate(_heldout(0.9, 0.5, 0.98, good), True, 0.6, 0.25, 3)
    assert ok and line.startswith("cls gate passed") and "constant scores" in line and "predicting every" in line
    weak = {**good, "d": (21, 42, 0.36)}  # AP 0.36 vs prevalence 0.333: 4 % of the gap
    ok, line = cls_gate(_heldout(0.9, 0.5, 0.8, weak), True, 0.6, 0.25, 3)
    assert not ok and "cannot tell classes d (AP 0.360 vs its prevalence 0.333" in line, line
    assert "a (AP" not in line


def test_cls_gate_names_a_class_too_frequent_to_measure() -> None:
    """A class in all but 1 held-out image cannot be compared with its prior: named, with what helps."""
    classes = {"a": (62, 1, 1.0), "b": (20, 43, 0.98)}
    ok, line = cls_gate(_heldout(0.95, 0.7, 0.99, classes), True, 0.6, 0.25, 3)
    assert ok and "not measurable against their prior" in line and "a (62 of 63 held-out images have it)" in line
    assert "b (" not in line


def _cam_summary(evidence, iou):
    classes = {
        name: {
            "pairs": 30,
            "keep": 0.9,
            "centre": 0.5,
            "blank": 0.1,
            "full": 0.95,
            "area": 0.2,
            "objective": 0.7,
            "centre_objective": 0.7 - e,
            "uniform_objective": 0.1,
            "evidence": e,
            "evidence_se": 0.02,
        }
        for name, e in evidence.items()
    }
    return {"bg_score": 0.5, "classes": classes, "pairs": {k: {"images": 12, "iou": v} for k, v in iou.items()}}


STATS = {
    "classes": ["a", "b", "c"],
    "prevalence": [0.98, 0.3, 0.3],
    "jaccard": [[1.0, 0.3, 0.3], [0.3, 1.0, 0.97], [0.3, 0.97, 1.0]],
}


def test_cam_gate_names_classes_without_evidence_and_classes_it_cannot_tell_apart() -> None:
    """Planted bugs: a gate blind to the per-class evidence or to the overlap of two classes' CAMs passes these."""
    ok, line = cam_gate(_cam_summary({"a": 0.5, "b": 0.4, "c": 0.45}, {"b|c": 0.2}), STATS, True, 0.1, 0.5, 5, 2.0)
    assert ok and line.startswith("cam gate passed") and "centred region of the same area" in line
    ok, line = cam_gate(_cam_summary({"a": 0.02, "b": 0.4, "c": 0.45}, {"b|c": 0.2}), STATS, True, 0.1, 0.5, 5, 2.0)
    assert not ok
    for words in (
        "CAMs without localisation evidence for a (present in 98 % of the images",
        "uniform map",
        "remove or merge a, or add images without it",
        "cls.pretrained",
        "gates.min_cam_evidence 0.1",
    ):
        assert words in line, words
    ok, line = cam_gate(_cam_summary({"a": 0.5, "b": 0.4, "c": 0.45}, {"b|c": 0.8}), STATS, True, 0.1, 0.5, 5, 2.0)
    assert not ok and "cannot tell b and c" in line and "97 % of the images with either" in line
    assert "add images with only one of b, c, or merge them" in line
    assert cam_gate(_cam_summary({"a": 0.02}, {}), STATS, False, 0.1, 0.5, 5, 2.0)[0] is True


def test_seg_gate_least_reproduced_class_skips_absent_classes() -> None:
    """A class absent from the fit images has IoU NaN: it is not the "least reproduced" one, wherever it is listed.
    Mutant killed: the NaN filter removed (min() with a NaN first keeps the NaN)."""
    for iou, names in (
        ([math.nan, 0.9, 0.036], ["absent", "background", "star"]),
        ([0.9, 0.036, math.nan], ["background", "star", "absent"]),
    ):
        ok, line = seg_gate(0.4, iou, names, 8, True, 0.6)
        assert not ok and "least reproduced class star 3.6" in line and "nan" not in line
    assert "least reproduced class ? nan" in seg_gate(0.4, [math.nan], ["absent"], 8, True, 0.6)[1]


def test_seg_gate_passed_line_states_the_fit_and_the_worst_class() -> None:
    """Mutants killed: the percentages computed as 101·x or 100/x (a 0.5 IoU reads 50.0, not 50.5 or 200.0)."""
    ok, line = seg_gate(0.625, [0.75, 0.5], ["background", "star"], 12, True, 0.6)
    assert ok and line == (
        "seg gate passed: DeepLab reproduces its training labels at 62.5 mIoU >= gates.min_seg_fit "
        "0.6 (12 training images; least reproduced class star 50.0)"
    )
    assert seg_gate(0.599, [0.5], ["star"], 12, True, 0.6)[0] is False  # the threshold itself passes, below fails


def _report(**kw) -> dict:
    return {"f1": 0.75, "baseline_f1": 0.6666666666666666, "held_out_images": 7, **kw}


def test_cls_gate_passes_at_the_threshold_and_fails_below() -> None:
    ok, line = cls_gate(_report(), True, 0.6, 0.25, 3)
    assert ok and line == (
        "cls gate passed: held-out micro-F1 0.750 beat the label prior by at least "
        "gates.min_prior_gain 0.25 of the gap to 1 and reached gates.min_cls_f1 0.6 (7 held-out "
        "images; compared with the label prior: predicting every class scores micro-F1 0.667)"
    )
    assert cls_gate(_report(f1=0.6), True, 0.6, None, 3)[0] is True  # min_cls_f1 alone: the threshold itself passes
    ok, line = cls_gate(_report(f1=0.5999), True, 0.6, None, 3)
    assert not ok and line == (
        "held-out image-level micro-F1 0.600: micro-F1 0.600 is below gates.min_cls_f1 0.6 (gates.min_prior_gain "
        "None; 7 held-out images; label prior not judged (min_prior_gain null): predicting every class scores "
        "micro-F1 0.667): the classifier did not learn these classes and every later stage inherits that; "
        f"{GATE_ADVICE}; gates.enabled: false runs on anyway"
    )


def test_cls_gate_disabled_warns_with_the_same_problem_and_unmeasured_passes() -> None:
    failing = cls_gate(_report(f1=0.3), True, 0.6, 0.25, 3)[1]
    problem = failing.removesuffix("; gates.enabled: false runs on anyway")
    assert problem != failing
    assert cls_gate(_report(f1=0.3), False, 0.6, 0.25, 3) == (True, f"gates.enabled is false, running on: {problem}")
    ok, line = cls_gate({"f1": None, "held_out_images": 0}, True, 0.6, 0.25, 3)
    assert ok and line == (
        "cls gate not checked: no held-out F1 (cls.holdout_fraction 0 or no finite score); the "
        "classifier's quality is unknown"
    )
    ok, line = cls_gate({"f1": 0.8}, True, 0.6, 0.25, 3)  # no baseline, no image count
    assert ok and line == (
        "cls gate passed: held-out micro-F1 0.800 reached gates.min_cls_f1 0.6 (? held-out images; "
        "compared with the label prior: no baseline recorded)"
    )  # claims no prior it lacks
    assert cls_gate({"f1": 0.0}, True, 0.0, 0.25, 3)[0] is True


def test_cam_gate_passed_line_reports_only_what_it_judged() -> None:
    """The passed line's least evidence and largest overlap come from the classes and pairs with at least
    gates.min_gate_pairs images. Planted bug: the worst pair over all pairs (a 3-image pair at IoU 0.9 reported as
    if it had been judged against max_cam_overlap)."""
    summary = _cam_summary({"a": 0.5, "b": 0.4, "c": 0.45}, {"b|c": 0.2, "a|b": 0.9})
    summary["pairs"]["a|b"]["images"] = 3
    summary["classes"]["a"].update(pairs=2, evidence=-0.3)  # too few images to judge: not the least
    ok, line = cam_gate(summary, STATS, True, 0.1, 0.5, 5, 2.0)
    assert ok
    assert "largest overlap b/c IoU 0.20 on 12 images" in line and "least evidence b 0.400" in line
