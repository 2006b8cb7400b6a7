"""The gates' verdicts (wsss.gates): the line names the measure, the threshold and what to do; a disabled gate
passes with the same problem as a warning. The stages that raise them: tests/test_validation.py (cls_gate) and
tests/test_segment.py (seg_gate)."""

from __future__ import annotations

import math

from wsss.gates import seg_gate


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
