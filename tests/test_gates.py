"""The gates' verdicts (wsss.gates): the line names the measure, the threshold and what to do; a disabled gate
passes with the same problem as a warning. The stages that raise them: tests/test_validation.py (cls_gate) and
tests/test_segment.py (seg_gate)."""

from __future__ import annotations

import math

from wsss.gates import GATE_ADVICE, cls_gate, seg_gate


def test_seg_gate_message_names_the_measure_the_threshold_and_what_to_do() -> None:
    iou, names = [0.9, 0.8, 0.036, math.nan], ["background", "a", "star", "absent"]
    ok, line = seg_gate(0.55, iou, names, 64, True, 0.7)
    assert not ok
    for words in ("55.0 mIoU", "gates.min_seg_fit 0.7", "64 training images", "least reproduced class star 3.6",
                  "seg.iterations", "gates.enabled: false"):
        assert words in line, words
    problem = line.removesuffix("; gates.enabled: false runs on anyway")
    assert seg_gate(0.55, iou, names, 64, False, 0.7) == (True, f"gates.enabled is false, running on: {problem}")
    assert seg_gate(0.7, [0.7], ["background"], 64, True, 0.7)[0] is True


def test_seg_gate_least_reproduced_class_skips_absent_classes() -> None:
    """A class absent from the fit images has IoU NaN: it is not the "least reproduced" one, wherever it is listed.
    Mutant killed: the NaN filter removed (min() with a NaN first keeps the NaN)."""
    for iou, names in (([math.nan, 0.9, 0.036], ["absent", "background", "star"]),
                       ([0.9, 0.036, math.nan], ["background", "star", "absent"])):
        ok, line = seg_gate(0.4, iou, names, 8, True, 0.6)
        assert not ok and "least reproduced class star 3.6" in line and "nan" not in line
    assert "least reproduced class ? nan" in seg_gate(0.4, [math.nan], ["absent"], 8, True, 0.6)[1]


def test_seg_gate_passed_line_states_the_fit_and_the_worst_class() -> None:
    """Mutants killed: the percentages computed as 101·x or 100/x (a 0.5 IoU reads 50.0, not 50.5 or 200.0)."""
    ok, line = seg_gate(0.625, [0.75, 0.5], ["background", "star"], 12, True, 0.6)
    assert ok and line == ("seg gate passed: DeepLab reproduces its training labels at 62.5 mIoU >= gates.min_seg_fit "
                           "0.6 (12 training images; least reproduced class star 50.0)")
    assert seg_gate(0.599, [0.5], ["star"], 12, True, 0.6)[0] is False  # the threshold itself passes, below fails


def _report(**kw) -> dict:
    return {"f1": 0.75, "baseline_f1": 0.6666666666666666, "held_out_images": 7, **kw}


def test_cls_gate_passes_at_the_threshold_and_fails_below() -> None:
    ok, line = cls_gate(_report(), True, 0.6)
    assert ok and line == ("cls gate passed: held-out micro-F1 0.750 >= gates.min_cls_f1 0.6 (7 held-out images; "
                           "predicting every class would score 0.667)")
    assert cls_gate(_report(f1=0.6), True, 0.6)[0] is True
    ok, line = cls_gate(_report(f1=0.5999), True, 0.6)
    assert not ok and line == (
        "held-out image-level micro-F1 0.600 (7 held-out images; predicting every class would score 0.667) is below "
        f"gates.min_cls_f1 0.6: the classifier did not learn these classes and every later stage inherits that; "
        f"{GATE_ADVICE}; gates.enabled: false runs on anyway")


def test_cls_gate_disabled_warns_with_the_same_problem_and_unmeasured_passes() -> None:
    failing = cls_gate(_report(f1=0.3), True, 0.6)[1]
    problem = failing.removesuffix("; gates.enabled: false runs on anyway")
    assert problem != failing
    assert cls_gate(_report(f1=0.3), False, 0.6) == (True, f"gates.enabled is false, running on: {problem}")
    ok, line = cls_gate({"f1": None, "held_out_images": 0}, True, 0.6)
    assert ok and line == ("cls gate not checked: no held-out F1 (cls.holdout_fraction 0 or no finite score); the "
                           "classifier's quality is unknown")
    ok, line = cls_gate({"f1": 0.8}, True, 0.6)  # no baseline, no image count
    assert ok and line == "cls gate passed: held-out micro-F1 0.800 >= gates.min_cls_f1 0.6 (? held-out images)"
    assert cls_gate({"f1": 0.0}, True, 0.0)[0] is True
