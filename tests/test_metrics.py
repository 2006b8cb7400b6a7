"""Metrics against a naive per-pixel loop, hand-computed cases and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wsss.engine.metrics import ConfusionMatrix, confusion_matrix, iou_from_confusion, scores_from_confusion


def naive_scores(pred: np.ndarray, gt: np.ndarray, c: int) -> dict:
    """Per-pixel python loops, straight from the definitions (no confusion matrix)."""
    tp, ng, npred = [0] * c, [0] * c, [0] * c
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g == 255:
            continue
        ng[g] += 1
        npred[p] += 1
        tp[g] += p == g
    union = [ng[k] + npred[k] - tp[k] for k in range(c)]
    iou = [tp[k] / union[k] if union[k] else math.nan for k in range(c)]
    fp = [(npred[k] - tp[k]) / union[k] if union[k] else math.nan for k in range(c)]
    fn = [(ng[k] - tp[k]) / union[k] if union[k] else math.nan for k in range(c)]
    present = [k for k in range(c) if ng[k]]
    defined = [k for k in range(c) if union[k]]
    fg = [k for k in defined if k > 0]
    return {
        "miou_present": sum(iou[k] for k in present) / len(present),
        "miou_all": sum(iou[k] for k in defined) / len(defined),
        "iou": iou,
        "pixel_accuracy": sum(tp) / sum(ng),
        "mean_class_accuracy": sum(tp[k] / ng[k] for k in present) / len(present),
        "fp": fp,
        "fn": fn,
        "bg_fp": fp[0],
        "bg_fn": fn[0],
        "fg_fp_mean": sum(fp[k] for k in fg) / len(fg),
        "fg_fn_mean": sum(fn[k] for k in fg) / len(fg),
    }


def assert_scores_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, w in want.items():
        np.testing.assert_allclose(
            np.asarray(got[key], dtype=float), np.asarray(w, dtype=float), rtol=0, atol=1e-12, err_msg=key
        )


def random_case(seed: int, c: int = 6, shape: tuple[int, ...] = (13, 17)) -> tuple[np.ndarray, np.ndarray]:
    """Random pred/GT with 255 in GT; class c-1 never in GT and class c-2 in neither, so NaN/absent paths run."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, c - 2, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.15] = 255
    pred = rng.choice([k for k in range(c) if k != c - 2], shape).astype(np.uint8)
    agree = (rng.random(shape) < 0.4) & (gt != 255)
    pred[agree] = gt[agree]
    return pred, gt


@pytest.mark.parametrize("seed", range(5))
def test_matches_naive_loop(seed: int) -> None:
    c = 6
    pred, gt = random_case(seed, c)
    cm = confusion_matrix(pred, gt, c)
    assert cm.dtype == np.int64 and cm.shape == (c, c)
    assert cm.sum() == int((gt != 255).sum())
    want = naive_scores(pred, gt, c)
    got = ConfusionMatrix(c).update(pred, gt).scores()
    assert_scores_equal(got, want)
    assert math.isnan(got["iou"][c - 2]) and got["iou"][c - 1] == 0.0


def test_hand_computed_2x3() -> None:
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(pred, gt, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    # TP = [1, 2, 0], gt = [2, 2, 1], pred = [1, 4, 0], union = [2, 4, 1]
    s = scores_from_confusion(cm)
    assert s["iou"] == [0.5, 0.5, 0.0]
    assert s["miou_present"] == pytest.approx(1 / 3) and s["miou_all"] == pytest.approx(1 / 3)
    assert s["fp"] == [0.0, 0.5, 0.0] and s["fn"] == [0.5, 0.0, 1.0]
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["mean_class_accuracy"] == pytest.approx(0.5)
    assert (s["bg_fp"], s["bg_fn"], s["fg_fp_mean"], s["fg_fn_mean"]) == (0.0, 0.5, 0.25, 0.5)


def test_absent_class_present_vs_all() -> None:
    # class 2 appears nowhere (NaN, skipped by both), class 3 is predicted but not in GT (IoU 0)
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])
    s = ConfusionMatrix(4).update(pred, gt).scores()
    assert s["iou"][:2] == [0.5, 1.0] and math.isnan(s["iou"][2]) and s["iou"][3] == 0.0
    assert s["miou_present"] == pytest.approx(0.75)  # (0.5 + 1) / 2: class 3 excluded
    assert s["miou_all"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3: class 3 counted, class 2 skipped
    assert s["fp"][3] == 1.0 and s["fn"][3] == 0.0
    np.testing.assert_array_equal(np.isnan(iou_from_confusion(confusion_matrix(pred, gt, 4))), [0, 0, 1, 0])


def test_accumulation_equals_one_big_confusion_and_merge() -> None:
    c = 6
    cases = [random_case(s, c, shape) for s, shape in enumerate([(5, 7), (11, 3), (9,), (4, 4, 2)])]
    acc = ConfusionMatrix(c)
    for pred, gt in cases:
        acc.update(pred, gt)
    big = confusion_matrix(
        np.concatenate([p.ravel() for p, _ in cases]), np.concatenate([g.ravel() for _, g in cases]), c
    )
    np.testing.assert_array_equal(acc.matrix, big)
    a, b = ConfusionMatrix(c), ConfusionMatrix(c)
    for pred, gt in cases[:2]:
        a.update(pred, gt)
    for pred, gt in cases[2:]:
        b.update(pred, gt)
    summed = a + b
    np.testing.assert_array_equal(summed.matrix, big)
    assert not np.array_equal(a.matrix, big)  # + does not modify its operands
    np.testing.assert_array_equal(a.merge(b).matrix, big)
    np.testing.assert_array_equal(ConfusionMatrix.from_matrix(big).matrix, big)
    assert_scores_equal(summed.scores(), acc.scores())


@pytest.mark.parametrize("seed", range(3))
def test_fp_fn_iou_sum_to_one(seed: int) -> None:
    pred, gt = random_case(seed, 6)
    s = ConfusionMatrix(6).update(pred, gt).scores()
    total = np.array(s["iou"]) + np.array(s["fp"]) + np.array(s["fn"])
    defined = ~np.isnan(np.array(s["iou"]))
    np.testing.assert_allclose(total[defined], 1.0, atol=1e-12)
    assert defined.sum() == 5


def test_pred_ignore_as_background_flag() -> None:
    gt = np.array([0, 1, 1], dtype=np.uint8)
    pred = np.array([255, 1, 255], dtype=np.uint8)
    with pytest.raises(ValueError, match="prediction has value 255"):
        confusion_matrix(pred, gt, 2)
    cm = ConfusionMatrix(2, pred_ignore_as_background=True).update(pred, gt).matrix
    np.testing.assert_array_equal(cm, [[1, 0], [1, 1]])


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (np.array([0, 1]), np.array([0, 3]), "ground truth has value 3"),
        (np.array([0, 1], np.int8), np.array([0, -1], np.int8), "ground truth has value -1"),
        (np.array([0, 3]), np.array([0, 1]), "prediction has value 3"),
        (np.array([-2, 0]), np.array([0, 1]), "prediction has value -2"),
        (np.array([0, 1, 2]), np.array([0, 1]), "shape"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer"),
        (np.array([0, 1]), np.array([True, False]), "integer"),
    ],
)
def test_bad_values_raise(pred: np.ndarray, gt: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, gt)


def test_bad_arguments_raise() -> None:
    for n in (0, 256, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            ConfusionMatrix(n)
    with pytest.raises(ValueError, match="same num_classes"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="square"):
        ConfusionMatrix.from_matrix(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        scores_from_confusion(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="class names"):
        ConfusionMatrix(3).to_json_dict(["bg", "a"])


def test_to_json_dict() -> None:
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])
    d = ConfusionMatrix(4).update(pred, gt).to_json_dict(["background", "cat", "dog", "car"])
    d = json.loads(json.dumps(d, allow_nan=False))
    assert d["iou"] == {"background": 0.5, "cat": 1.0, "dog": None, "car": 0.0}
    assert d["fp"]["dog"] is None and d["fn"]["background"] == 0.5
    assert d["miou_present"] == pytest.approx(0.75) and d["miou_all"] == pytest.approx(0.5)
    assert d["num_pixels"] == 4 and d["gt_pixels"] == {"background": 2, "cat": 2, "dog": 0, "car": 0}
    assert d["pred_pixels"]["car"] == 1


def test_empty_confusion_gives_nan_not_warnings() -> None:
    with np.errstate(all="raise"):
        s = ConfusionMatrix(3).update(np.zeros(2, np.uint8), np.full(2, 255, np.uint8)).scores()
    assert all(math.isnan(s[k]) for k in ("miou_present", "miou_all", "pixel_accuracy", "fg_fp_mean"))


def test_f1_counter_hand_worked() -> None:
    """Predicted = probability > 0.5 (0.5 itself is not); micro F1 = 2·TP / (2·TP + FP + FN) over all classes."""
    from wsss.pipeline.evaluate import F1Counter

    f1 = F1Counter.zeros(3)
    assert math.isnan(f1.micro_f1())
    f1.update(np.array([0.9, 0.2, 0.6]), np.array([1.0, 0.0, 0.0]))  # TP c0, FP c2
    f1.update(np.array([0.5, 0.7, 0.51]), np.array([1.0, 1.0, 1.0]))  # FN c0 (0.5 is not > 0.5), TP c1, TP c2
    assert (f1.tp.tolist(), f1.fp.tolist(), f1.fn.tolist()) == ([1, 1, 1], [0, 0, 1], [1, 0, 0])
    assert f1.micro_f1() == pytest.approx(6 / 8)  # 2·3 / (2·3 + 1 + 1)
    f1.update(np.zeros(3), np.zeros(3))  # true negatives change nothing
    assert f1.micro_f1() == pytest.approx(0.75)


def test_error_messages_name_the_array_the_value_and_the_allowed_range() -> None:
    """Mutants killed (mutmut, wsss/engine/metrics.py): the allowed range and the array's name in the messages."""
    gt = np.array([[0, 1, 255]], np.uint8)
    with pytest.raises(ValueError) as err:
        confusion_matrix(np.array([[0, 3, 1]], np.uint8), gt, 3)
    assert str(err.value) == "prediction has value 3 outside 0..2 (1 pixels)"
    with pytest.raises(ValueError) as err:
        confusion_matrix(np.array([[0, 1, 1]], np.uint8), np.array([[4, 1, 255]], np.uint8), 3)
    assert str(err.value) == "ground truth has value 4 outside 0..2 or 255 (1 pixels)"
    with pytest.raises(ValueError) as err:  # 255 in the prediction is an error unless read as background
        confusion_matrix(np.array([[255, 1, 1]], np.uint8), gt, 3)
    assert str(err.value) == "prediction has value 255 outside 0..2 (1 pixels)"
    for name, args in (
        ("prediction", (np.zeros(2), np.zeros(2, int))),
        ("ground truth", (np.zeros(2, int), np.zeros(2))),
    ):
        with pytest.raises(ValueError) as err:
            confusion_matrix(*args, 2)
        assert str(err.value) == f"{name} must be an integer array, got dtype float64"
    with pytest.raises(ValueError) as err:
        scores_from_confusion(np.array([[1.0]]))
    assert str(err.value) == "confusion matrix must hold non-negative integers"
    with pytest.raises(ValueError) as err:
        ConfusionMatrix(2).merge(ConfusionMatrix(3))
    assert str(err.value) == "can only merge a ConfusionMatrix with the same num_classes"


def test_num_classes_bounds_are_1_and_255() -> None:
    for ok in (1, 2, 254, 255):
        assert ConfusionMatrix(ok).matrix.shape == (ok, ok)
    for bad in (0, 256, True, 2.0):
        with pytest.raises(ValueError, match="num_classes must be an integer in 1..255"):
            ConfusionMatrix(bad)
    single = ConfusionMatrix.from_matrix(np.array([[5]]))  # one class (background only) is a valid matrix
    assert single.num_classes == 1 and single.scores()["miou_present"] == 1.0


def test_iou_from_confusion_hand_worked() -> None:
    """gt/pred 2 classes: TP 3 and 1, union 3+1+... : IoU0 = 3/(4+4-3) = 0.6, IoU1 = 1/(2+2-1) = 1/3."""
    cm = np.array([[3, 1], [1, 1]])
    np.testing.assert_allclose(iou_from_confusion(cm), [0.6, 1 / 3])
    assert np.isnan(iou_from_confusion(np.array([[2, 0, 0], [0, 0, 0], [0, 0, 1]]))[1])


def test_copies_keep_the_ignore_flag_and_json_keeps_num_classes() -> None:
    pred, gt = np.array([255, 1]), np.array([0, 1])
    flagged = ConfusionMatrix.from_matrix(np.zeros((2, 2), int), pred_ignore_as_background=True)
    assert flagged.pred_ignore_as_background is True
    assert (flagged + ConfusionMatrix(2)).update(pred, gt).matrix.tolist() == [[1, 0], [0, 1]]
    assert ConfusionMatrix.from_matrix(np.zeros((2, 2), int)).pred_ignore_as_background is False
    with pytest.raises(ValueError, match="prediction has value 255"):  # by default 255 is no prediction
        ConfusionMatrix(2).update(pred, gt)
    out = ConfusionMatrix(2).update(np.array([0, 0]), np.array([0, 0])).to_json_dict(["bg", "a"])
    assert out["num_classes"] == 2 and out["iou"] == {"bg": 1.0, "a": None}
    assert json.loads(json.dumps(out))["fp"] == {"bg": 0.0, "a": None}


def test_json_value_maps_non_finite_to_none_inside_lists() -> None:
    from wsss.engine.metrics import _json_value

    assert _json_value({"a": [1.0, math.nan, [math.inf, 2]], "b": 3.0}) == {"a": [1.0, None, [None, 2]], "b": 3.0}
