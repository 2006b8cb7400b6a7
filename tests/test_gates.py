"""The gates' verdicts (wsss.pipeline.gates): the line names the measure, the threshold and what to do; a disabled gate
passes with the same problem as a warning. The stages that raise them: tests/test_heldout.py (cls_gate) and
tests/test_segment.py (seg_gate)."""

from __future__ import annotations

import math

from wsss.pipeline.gates import CAM_ADVICE, GATE_ADVICE, cam_gate, cls_gate, seg_gate


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


# --- Mutation-testing tests (issue 23): verdicts at and around each threshold, the exact one-line messages. ---


def test_cls_gate_prior_already_perfect_closes_none_of_the_gap() -> None:
    """Every held-out image has every class: predicting every class scores micro-F1 1, no gap is left to close, so
    the gain is -inf and the gate stops, saying "none" (mutants killed: the prior < 1 test dropped or widened
    (ZeroDivisionError), +inf instead of -inf (passes), "none" replaced by "-inf %")."""
    ok, line = cls_gate(_report(f1=0.9, baseline_f1=1.0), True, 0.6, 0.25, 3)
    assert not ok and line.startswith(
        "held-out image-level micro-F1 0.900: no better than its label prior: micro-F1 0.900 closes none of the gap "
        "from predicting every class (1.000) to 1 (gates.min_prior_gain 0.25; "
    ), line


def test_cls_gate_states_the_share_of_the_gap_closed_in_percent() -> None:
    """F1 0.9 against 0.5 closes 80 % of the gap; with gates.min_prior_gain 0.9 that is too little (mutants killed:
    101·x reads 81 %, 100/x reads 125 %, "none" for every share)."""
    ok, line = cls_gate(_report(f1=0.9, baseline_f1=0.5), True, 0.6, 0.9, 3)
    assert not ok and "micro-F1 0.900 closes 80 % of the gap from predicting every class (0.500) to 1" in line, line


def test_cls_gate_passes_at_each_prior_gain_threshold_and_measures_a_class_at_min_class_images() -> None:
    """Each gain exactly at gates.min_prior_gain passes (micro-F1, mAP, a class's AP: 0.75 vs 0.5 closes 0.5 of
    the gap); a class with exactly min_class_images held-out images with (or without) it is judged. Mutants killed:
    ``<=`` for ``<`` in the three gain tests and in the two min_class_images tests."""
    assert cls_gate(_heldout(0.75, 0.5, 0.75, {"a": (10, 10, 0.75)}), True, 0.6, 0.5, 3)[0] is True
    assert cls_gate(_heldout(0.7499, 0.5, 0.75, {"a": (10, 10, 0.75)}), True, 0.6, 0.5, 3)[0] is False
    assert cls_gate(_heldout(0.75, 0.5, 0.7499, {"a": (10, 10, 0.75)}), True, 0.6, 0.5, 3)[0] is False
    assert cls_gate(_heldout(0.75, 0.5, 0.75, {"a": (10, 10, 0.7499)}), True, 0.6, 0.5, 3)[0] is False
    for counts in ((3, 60), (60, 3)):  # at the limit: measured, and this AP is no better than the prevalence
        prevalence = counts[0] / 63
        ok, line = cls_gate(_heldout(0.9, 0.5, 0.99, {"a": (*counts, prevalence)}), True, 0.6, 0.25, 3)
        assert not ok and "cannot tell classes a (AP" in line and "not measurable" not in line, line
        ok, line = cls_gate(_heldout(0.9, 0.5, 0.99, {"a": (*counts, prevalence)}), True, 0.6, 0.25, 4)
        assert ok and "not measurable against their prior (fewer than 4 held-out images" in line, line


def test_cls_gate_failure_line_names_every_failure_class_and_the_advice_for_a_frequent_class() -> None:
    """The whole line: the mAP failure and the weak classes, both unmeasured classes (the first of them listed
    before the weak ones: the loop goes on past it), the two baselines, and the advice for a class in > 90 % of
    the images (wall: 58 of 63). Mutants killed: ``break`` for ``continue``, the separators, the notes replacing
    the context, the frequent-class advice dropped or its text changed."""
    classes = {
        "rare": (2, 61, 0.9),
        "gone": (1, 62, 0.9),
        "good": (30, 33, 0.99),
        "weak": (21, 42, 0.5),
        "wall": (58, 5, 0.93),
    }
    ok, line = cls_gate(_heldout(0.7, 0.5, 0.4, classes), True, 0.6, 0.3, 3)
    assert not ok
    assert line == (
        "held-out image-level micro-F1 0.700: no better than its label prior: mAP 0.400 closes 7 % of the gap from "
        "constant scores (0.356) to 1; it cannot tell classes weak (AP 0.500 vs its prevalence 0.333: 25 % of the "
        "gap), wall (AP 0.930 vs its prevalence 0.921: 12 % of the gap) from their label prior "
        "(gates.min_prior_gain 0.3; 63 held-out images; compared with the label prior: predicting every class "
        "scores micro-F1 0.500; constant scores (the prevalences) score mAP 0.356; not measurable against their "
        "prior (fewer than 3 held-out images with or without them): rare (2 of 63 held-out images have it), gone "
        "(1 of 63 held-out images have it)): the classifier did not learn these classes and every later stage "
        "inherits that; remove or merge wall, or add images without it; "
        f"{GATE_ADVICE}; gates.enabled: false runs on anyway"
    ), line


def test_cls_gate_advice_for_a_frequent_class_only_above_90_percent() -> None:
    """A class in 62 of 63 held-out images (unmeasured) or 90 of 100 (measured, at the 90 % limit): only the first
    gets the advice to remove or merge it. Mutants killed: the unmeasured class's advice dropped; ``>=`` for ``>``
    at the measured class (its advice text)."""
    ok, line = cls_gate(_heldout(0.5, 0.4, 0.99, {"a": (62, 1, 1.0), "b": (20, 43, 0.98)}), True, 0.6, 0.25, 3)
    assert not ok and "below gates.min_cls_f1 0.6" in line
    assert f"inherits that; remove or merge a, or add images without it; {GATE_ADVICE};" in line, line
    ok, line = cls_gate(_heldout(0.9, 0.5, 0.99, {"a": (90, 10, 0.9)}), True, 0.6, 0.25, 3)
    assert not ok and "cannot tell classes a (AP 0.900 vs its prevalence 0.900" in line
    assert f"inherits that; {GATE_ADVICE};" in line and "remove or merge" not in line, line


def test_cls_gate_passed_line_with_map_and_min_gain_null_judges_no_class() -> None:
    """gates.min_prior_gain null: the baselines are stated, nothing is judged against them, no class is called
    unmeasurable, and the mAP is in the passed line. Mutants killed: the mAP test run with min_gain None
    (TypeError), the class loop run with min_gain None, the mAP left out of the passed line."""
    classes = {"a": (62, 1, 0.2), "b": (20, 43, 0.1)}
    ok, line = cls_gate(_heldout(0.9, 0.95, 0.1, classes), True, 0.6, None, 3)
    assert ok and line == (
        "cls gate passed: held-out micro-F1 0.900, mAP 0.100 reached gates.min_cls_f1 0.6 (63 held-out images; "
        "label prior not judged (min_prior_gain null): predicting every class scores micro-F1 0.950; constant "
        "scores (the prevalences) score mAP 0.651)"
    ), line


def test_cls_gate_compares_the_map_only_when_both_it_and_its_prior_are_recorded() -> None:
    """Mutant killed: ``or`` for ``and`` (the gain of a missing number: TypeError)."""
    for report in (_report(map=0.9), _report(prior={"prior_map": 0.5})):
        ok, line = cls_gate(report, True, 0.6, 0.25, 3)
        assert ok and "constant scores" not in line, line


def _cam_rows(classes, pairs):
    """A LocalisationEvidence summary; ``classes``: name -> (pairs, evidence, evidence_se), ``pairs``: "a|b" ->
    (images, iou)."""
    rows = {
        name: {
            "pairs": k,
            "objective": 0.6,
            "centre_objective": 0.6 - e,
            "uniform_objective": 0.1,
            "evidence": e,
            "evidence_se": se,
        }
        for name, (k, e, se) in classes.items()
    }
    return {"bg_score": 0.5, "classes": rows, "pairs": {p: {"images": k, "iou": v} for p, (k, v) in pairs.items()}}


STATS4 = {
    "classes": ["a", "b", "c", "d"],
    "prevalence": [0.9, 0.95, 0.5, 0.2],
    "jaccard": [[1.0, 0.6, 0.4, 0.1], [0.6, 1.0, 0.5, 0.2], [0.4, 0.5, 1.0, 0.3], [0.1, 0.2, 0.3, 1.0]],
}
BASELINE = (
    "compared with a centred region of the same area and a uniform map, at bg_score 0.50, by the classifier's score "
    "with only the region kept"
)


def _cam(classes, pairs=None, min_evidence=0.1, enabled=True):
    return cam_gate(_cam_rows(classes, pairs or {}), STATS4, enabled, min_evidence, 0.5, 5, 2.0)


def test_cam_gate_evidence_threshold_with_its_standard_errors() -> None:
    """A class fails when evidence + 2 SE < gates.min_cam_evidence 0.1: at 0.1 it passes; 0.05 with SE 0.03 (upper
    0.11) passes; 0.05 with SE 0 or missing fails; a class with exactly gates.min_gate_pairs (5) images is judged,
    one with 4 is not, wherever it is listed. Mutants killed: ``<=``, evidence − SE, the SE read under another key
    or as 0 or as 1 when missing, ``<=`` at min_pairs, ``break`` after an unmeasured class."""
    assert _cam({"a": (5, 0.1, 0.0)})[0] is True
    assert _cam({"a": (5, 0.05, 0.03)})[0] is True
    assert _cam({"a": (5, 0.05, 0.0)})[0] is False
    assert _cam({"a": (5, 0.05, None)})[0] is False
    assert _cam({"c": (5, 0.0, 0.0)})[0] is False
    assert _cam({"c": (4, 0.0, 0.0)})[0] is True
    assert _cam({"d": (4, 0.0, 0.0), "c": (5, 0.0, 0.0)})[0] is False


def test_cam_gate_overlap_threshold_and_pair_count() -> None:
    """A pair fails when its IoU > gates.max_cam_overlap 0.5 on at least gates.min_gate_pairs (5) images: IoU 0.5
    passes, 0.51 fails; 5 images are judged, 4 are not. Mutants killed: ``>=`` for ``>`` at either."""
    ok_class = {"c": (5, 0.5, 0.0)}
    assert _cam(ok_class, {"c|d": (5, 0.5)})[0] is True
    assert _cam(ok_class, {"c|d": (5, 0.51)})[0] is False
    assert _cam(ok_class, {"c|d": (4, 0.9)})[0] is True


def test_cam_gate_advice_for_a_frequent_class_only_above_90_percent() -> None:
    """b is in 95 % of the images, a in exactly 90 %: only b gets the advice to remove or merge it (mutant killed:
    ``>=`` for ``>``)."""
    ok, line = _cam({"a": (5, 0.0, 0.0), "b": (5, 0.0, 0.0)})
    assert not ok and "remove or merge b, or add images without it" in line and "remove or merge a" not in line


def test_cam_gate_failure_line_names_every_class_and_pair_with_all_advice() -> None:
    """The whole line, two weak classes, two pairs it cannot tell apart, two unmeasured classes, each advice once.
    Mutants killed: the separators, the unmeasured classes replacing the baseline sentence."""
    classes = {"a": (3, 0.0, 0.0), "b": (6, 0.02, 0.01), "c": (6, 0.01, 0.0), "d": (2, 0.0, 0.0)}
    pairs = {"a|b": (7, 0.75), "b|c": (8, 0.6), "c|d": (9, 0.1)}
    ok, line = _cam(classes, pairs)
    assert not ok and line == (
        "CAMs without localisation evidence for b (present in 95 % of the images; CAM keep − area 0.600 vs centre "
        "map 0.580, uniform map 0.100: evidence 0.020, at most 0.040 with 2 standard errors), c (present in 50 % of "
        "the images; CAM keep − area 0.600 vs centre map 0.590, uniform map 0.100: evidence 0.010, at most 0.010 "
        "with 2 standard errors) (below gates.min_cam_evidence 0.1); CAMs that cannot tell a and b (their CAM "
        "regions overlap at IoU 0.75 on 7 images; they appear together in 60 % of the images with either), b and c "
        "(their CAM regions overlap at IoU 0.60 on 8 images; they appear together in 50 % of the images with "
        "either) apart (above gates.max_cam_overlap 0.5) "
        f"({BASELINE}; fewer than 5 images to measure a, d): image-level labels do not say where these classes "
        "are, and IRNet and DeepLab would learn the CAMs' mistakes; remove or merge b, or add images without it; "
        "add images with only one of a, b, or merge them; add images with only one of b, c, or merge them; "
        f"{CAM_ADVICE}; gates.enabled: false runs on anyway"
    ), line
    problem = line.removesuffix("; gates.enabled: false runs on anyway")
    assert _cam(classes, pairs, enabled=False) == (True, f"gates.enabled is false, running on: {problem}")


def test_cam_gate_failure_line_without_class_advice() -> None:
    """A weak class in 50 % of the images: no class advice, the general advice follows directly. Mutants killed:
    the advice part or its separator written when there is no advice."""
    ok, line = _cam({"c": (5, 0.0, 0.0)})
    assert not ok and line.endswith(
        f"would learn the CAMs' mistakes; {CAM_ADVICE}; gates.enabled: false runs on anyway"
    ), line


def test_cam_gate_passed_line_names_the_least_evidence_with_its_standard_errors_and_the_largest_overlap() -> None:
    """The least evidence is the least evidence + 2 SE among judged classes (d, with exactly 5 images and no SE
    recorded: 0.220; not b, least by evidence alone, nor e with 4 images); the largest overlap is among judged pairs
    (a|c with exactly 5 images; not c|d with 4). Mutants killed: the key of min/max dropped or changed (name order,
    first listed, evidence − SE, SE under another key, SE 1 when missing, SE divided), ``>`` for ``>=`` at
    min_pairs."""
    classes = {
        "a": (9, 0.30, 0.0),
        "b": (9, 0.20, 0.10),
        "c": (9, 0.25, 0.01),
        "d": (5, 0.22, None),
        "e": (4, -1.0, 0.0),
    }
    pairs = {"a|b": (12, 0.1), "a|c": (5, 0.3), "b|c": (12, 0.2), "c|d": (4, 0.45)}
    ok, line = cam_gate(
        _cam_rows(classes, pairs), {**STATS4, "classes": [*"abcde"], "prevalence": [0.5] * 5}, True, 0.1, 0.5, 5, 2.0
    )
    assert ok and line == (
        "cam gate passed: the CAMs localise every class (least evidence d 0.220 (+2 standard errors 0.220) >= "
        "gates.min_cam_evidence 0.1; largest overlap a/c IoU 0.30 on 5 images <= gates.max_cam_overlap 0.5; "
        f"{BASELINE}; fewer than 5 images to measure e)"
    ), line
    ok, line = _cam({"c": (5, 0.2, 0.05)})
    assert ok and "least evidence c 0.200 (+2 standard errors 0.300) >= gates.min_cam_evidence 0.1" in line, line


def test_cam_gate_passed_line_when_nothing_is_judged() -> None:
    """No class with enough images, no pair, or gates.min_cam_evidence null: nothing to name as least or largest.
    Mutants killed: min/max without default (ValueError on nothing judged), the least-evidence part written
    without a judged class or without a threshold. Bug fixed here: the line read "(; compared with ..." (an empty
    detail joined before the baseline)."""
    ok, line = _cam({"a": (4, -1.0, 0.0)})
    assert ok and line == (
        "cam gate passed: no class had the gates.min_gate_pairs 5 images needed to judge its CAMs "
        f"({BASELINE}; fewer than 5 images to measure a)"
    )  # the headline says nothing was judged (it read "the CAMs localise every class")
    ok, line = _cam({"c": (5, -1.0, 0.0)}, min_evidence=None)
    assert ok and line == f"cam gate passed: CAM evidence not judged (gates.min_cam_evidence null) ({BASELINE})", line


def test_cls_gate_names_each_frequent_class_in_its_advice() -> None:
    """Two classes in > 90 % of the held-out images (the street photos' car and pole): the advice names both, each
    once. Mutants killed: the advice separator changed; the class name dropped from the advice."""
    classes = {"car": (60, 3, 0.96), "pole": (59, 4, 0.95), "sign": (20, 43, 0.5)}
    ok, line = cls_gate(_heldout(0.7, 0.6, 0.7, classes), True, 0.6, 0.25, 3)
    assert not ok
    assert (
        "remove or merge car, or add images without it; remove or merge pole, or add images without it; "
        f"{GATE_ADVICE}" in line
    ), line


def test_cam_gate_no_frequent_class_advice_at_exactly_90_percent() -> None:
    """A class without evidence at exactly 90 % prevalence is not 'nearly all': the line goes straight from the
    gate's message to the general advice, with no empty advice before it. Mutant killed: ``>=`` for ``>`` before
    the frequent-class advice (it would write an empty advice, '…; ; start from pretrained …')."""
    stats = {**STATS4, "prevalence": [0.9, 0.3, 0.3, 0.3]}
    ok, line = cam_gate(_cam_rows({"a": (5, -0.5, 0.0)}, {}), stats, True, 0.1, 0.5, 5, 2.0)
    assert not ok and "present in 90 % of the images" in line
    assert f"the CAMs' mistakes; {CAM_ADVICE}" in line and "; ;" not in line, line
