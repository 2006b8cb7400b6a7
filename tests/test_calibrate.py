"""Thresholds without pixel labels (wsss.pipeline.calibrate): a known answer with an analytic classifier, the held-out-first
choice of images, and the calibrate rule feeding eval_cam on the session's tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, copy_of_dag, planned_jobs, snakemake, tiny_dag_config, write_config

from wsss.pipeline.calibrate import (
    RegionEvidence,
    add_image,
    calibration_ids,
    calibration_set,
    classifier_scores,
    ir_label_bracket,
    log_rows,
    walk_regions,
)
from wsss.pipeline.pseudo_labels import labels_from_walk
from wsss.runtime.config import load_schema
from wsss.runtime.errors import InputError
from wsss.runtime.stage_config import resolve_auto


def _visible_object(obj: torch.Tensor):
    """A classifier that sees class 0 in proportion to the visible pixels of the object ``obj`` (H×W bool) and
    class 1 never: blanking sets pixels to 0, so the visible share is the object's non-zero pixels left."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        visible = (batch.abs().sum(dim=1) > 0) & obj
        share = visible.flatten(1).sum(1).double() / obj.sum()
        return torch.stack([share, torch.zeros_like(share)], dim=1)

    return score


def test_known_answer_smallest_region_that_holds_the_object() -> None:
    """CAM = 1 − d/10 with d the Chebyshev distance from the centre of a 20x20 image whose object is the central 6x6
    square (d ≤ 2.5, CAM ≥ 0.75). Every threshold whose region holds the object scores 1 − area; a smaller region
    cuts the object (keep < 1). The region equals the object for 0.65 ≤ t < 0.75 (the next ring, d = 3.5, has CAM
    exactly 0.65), so the choice is 0.65: the lowest threshold of the best objective."""
    h = w = 20
    yy, xx = np.mgrid[:h, :w]
    dist = np.maximum(abs(yy - 9.5), abs(xx - 9.5))
    cam = (1 - dist / 10)[None].astype(np.float32)
    obj = torch.from_numpy(dist <= 2.5)
    ev = RegionEvidence.zeros(np.round(np.arange(0.05, 1.0, 0.05), 2))
    add_image(ev, _visible_object(obj), torch.ones(3, h, w), cam, [0])
    assert ev.choice() == pytest.approx(0.65)
    rows = {round(r["bg_score"], 2): r for r in ev.rows()}
    assert rows[0.65] == pytest.approx(
        {"bg_score": 0.65, "keep": 1.0, "area": 36 / 400, "objective": 1 - 36 / 400, "objective_se": 0.0}
    )  # one pair
    assert rows[0.70]["objective"] == rows[0.65]["objective"]  # same region
    assert rows[0.60]["area"] == pytest.approx(64 / 400) and rows[0.60]["keep"] == 1.0  # one ring more of background
    assert rows[0.80]["keep"] == pytest.approx(16 / 36) and rows[0.80]["objective"] == pytest.approx(16 / 36 - 16 / 400)


def test_pairs_average_over_classes_and_images() -> None:
    ev = RegionEvidence.zeros([0.5, 0.2])  # sorted on the way in
    assert ev.thresholds.tolist() == [0.2, 0.5]
    with pytest.raises(ValueError):
        ev.choice()
    obj = torch.zeros(4, 4, dtype=torch.bool)
    obj[:2] = True
    cams = np.stack([obj.numpy().astype(np.float32), obj.numpy().astype(np.float32)])
    add_image(ev, _visible_object(obj), torch.ones(3, 4, 4), cams, [0, 1])
    assert ev.pairs == 2
    rows = ev.rows()
    # class 0: keep 1, area .5; class 1 (never seen): keep 0, area .5 -> means .5, .5
    assert [r["keep"] for r in rows] == [0.5, 0.5] and [r["area"] for r in rows] == [0.5, 0.5]


def test_standard_error_is_the_sample_standard_error_of_the_pair_objectives() -> None:
    rng = np.random.default_rng(3)
    keep, area = rng.random((7, 5)), rng.random((7, 5))
    ev = RegionEvidence.zeros([0.1, 0.2, 0.3, 0.4, 0.5])
    for k, a in zip(keep, area):
        ev.add(k, a)
    per_pair = keep - area
    assert ev.objective() == pytest.approx(per_pair.mean(axis=0))
    assert ev.standard_error() == pytest.approx(per_pair.std(axis=0, ddof=1) / np.sqrt(7))
    assert [r["objective_se"] for r in ev.rows()] == pytest.approx(ev.standard_error().tolist())


def test_one_standard_error_rule_takes_the_largest_region_the_evidence_cannot_tell_from_the_best() -> None:
    """Two pairs (area 0 everywhere, keep = the objective): means 0.50 / 0.71 / 0.78 / 0.80 / 0.40 at
    0.1 … 0.5; at the best (0.4) the pairs are 0.70 and 0.90: SE = std(ddof=1)/sqrt(2) = 0.1. Within one SE
    (>= 0.70): 0.2 is the lowest; within half an SE (>= 0.75): 0.3; with 0 the argmax 0.4."""
    ev = RegionEvidence.zeros([0.1, 0.2, 0.3, 0.4, 0.5])
    ev.add(np.array([0.50, 0.71, 0.78, 0.70, 0.40]), np.zeros(5))
    ev.add(np.array([0.50, 0.71, 0.78, 0.90, 0.40]), np.zeros(5))
    assert ev.standard_error()[3] == pytest.approx(0.1)
    assert ev.choice() == 0.4 and ev.choice(tolerance_se=0.0) == 0.4
    assert ev.choice(tolerance_se=1.0) == 0.2 and ev.choice(tolerance_se=0.5) == 0.3
    assert ev.choice(tolerance_se=10.0) == 0.1
    assert ev.choice(interior=True, tolerance_se=10.0) == 0.2  # the grid's ends only bracket


def test_one_standard_error_rule_uses_the_se_at_the_best_threshold() -> None:
    """The tolerance is the SE of the best threshold's objective, not the grid's largest SE: here the pairs disagree
    most at 0.5 (SE 0.4) but at the best, 0.4, the SE is 0.1, so one SE reaches down to 0.2, not to 0.1.
    Mutant killed: ``standard_error().max()`` instead of ``standard_error()[lo + best]``."""
    ev = RegionEvidence.zeros([0.1, 0.2, 0.3, 0.4, 0.5])
    ev.add(np.array([0.50, 0.71, 0.78, 0.70, 0.00]), np.zeros(5))
    ev.add(np.array([0.50, 0.71, 0.78, 0.90, 0.80]), np.zeros(5))
    assert ev.standard_error()[[3, 4]] == pytest.approx([0.1, 0.4])
    assert ev.choice(tolerance_se=1.0) == 0.2 and ev.choice(interior=True, tolerance_se=1.0) == 0.2


def _one_se_choice(rows: list[dict], name: str) -> float:
    """The config default (cam.calibration_se 1) from a calibration file's rows: the first row within one standard
    error of the best objective."""
    best = max(rows, key=lambda r: r["objective"])
    return next(r[name] for r in rows if r["objective"] >= best["objective"] - best["objective_se"])


def test_calibration_images_held_out_first() -> None:
    assert calibration_ids(["a", "b", "c"], ["z", "y"], 4) == ["z", "y", "a", "b"]
    assert calibration_ids(["a", "b"], [], 5) == ["a", "b"]


def _evidence(thresholds, keep, area) -> RegionEvidence:
    ev = RegionEvidence.zeros(thresholds)
    ev.keep, ev.area = (np.asarray(v, np.float64) * 2 for v in (keep, area))
    ev.pairs = 2
    return ev


def test_ir_label_bracket_known_answer() -> None:
    """bg 0.4 has the mean area 0.20; ratio 0.7: conf_fg's area nearest to 0.14 (0.6: 0.15, 0.7: 0.12 -> 0.6),
    conf_bg's nearest to 0.2857 (0.2: 0.30, 0.3: 0.25 -> 0.2)."""
    t = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    keep = [0.95, 0.95, 0.95, 0.95, 0.80, 0.70, 0.60]
    area = [0.60, 0.30, 0.25, 0.20, 0.17, 0.15, 0.12]
    ev = _evidence(t, keep, area)
    assert ev.choice() == 0.4 and ir_label_bracket(ev, 0.4) == (0.6, 0.2)
    assert ir_label_bracket(ev, 0.4, 0.5) == (0.7, 0.2)  # 0.10 -> 0.12 (0.7); 0.40 -> 0.30 (0.2) nearer than 0.60


def test_ir_label_bracket_stays_strictly_around_bg_score() -> None:
    """A ratio near 1 would land on bg_score itself: the bracket takes the grid's neighbours; a bg_score on the
    grid's edge cannot be bracketed; any curves give conf_bg < bg_score < conf_fg on the grid."""
    t = [0.1, 0.2, 0.3, 0.4]
    ev = _evidence(t, [1, 1, 1, 0.5], [0.5, 0.4, 0.3, 0.1])
    assert ev.choice() == 0.3 and ir_label_bracket(ev, 0.3, 0.99) == (0.4, 0.2)
    with pytest.raises(ValueError, match="inside the calibration grid"):
        ir_label_bracket(ev, 0.4)
    top = _evidence(t, [1, 1, 1, 1], [0.4, 0.3, 0.2, 0.1])  # keep never falls: the last value is best
    assert top.choice() == 0.4 and top.choice(interior=True) == 0.3 and ir_label_bracket(top, 0.3) == (0.4, 0.2)
    with pytest.raises(ValueError, match="area_ratio"):
        ir_label_bracket(ev, 0.3, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        grid = np.round(np.arange(0.05, 0.81, 0.05), 2)
        ev = _evidence(grid, rng.random(16), np.sort(rng.random(16))[::-1])
        bg = ev.choice()
        if 0.05 < bg < 0.8:
            fg, low = ir_label_bracket(ev, bg, float(rng.uniform(0.1, 0.95)))
            assert low < bg < fg and {fg, low} <= set(ev.thresholds.tolist())


def test_walk_regions_are_the_pseudo_label_classes_at_each_threshold() -> None:
    """{walk_regions(s)[c] > t} is exactly where labels_from_walk(s, keys, t) gives class keys[c] (an independent
    implementation: the pseudo label with the background channel prepended)."""
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.random((3, 9, 11)).astype(np.float32))
    keys = np.array([4, 0, 7])
    regions = walk_regions(scores)
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        [label] = labels_from_walk(scores, keys, (9, 11), [t])
        for c, key in enumerate(keys):
            assert np.array_equal(regions[c] > t, label == key + 1)
    assert walk_regions(np.zeros((0, 4, 4), np.float32)).shape == (0, 4, 4)


def test_resolve_auto_reads_only_auto_keys(tmp_path: Path) -> None:
    calib = tmp_path / "calibration.json"
    calib.write_text(json.dumps({"conf_fg": 0.5, "conf_bg": None}))
    section = {"conf_fg": "auto", "conf_bg": 0.1, "crf_iters": 10}
    assert resolve_auto(section, ["conf_fg", "conf_bg"], [str(calib)], "irn") == {
        "conf_fg": 0.5,
        "conf_bg": 0.1,
        "crf_iters": 10,
    }
    assert section["conf_fg"] == "auto"  # not modified
    assert resolve_auto({"conf_bg": 0.1}, ["conf_bg"], [], "irn") == {"conf_bg": 0.1}  # nothing auto: no file needed
    with pytest.raises(InputError, match="irn.conf_bg is auto"):
        resolve_auto({"conf_bg": "auto"}, ["conf_bg"], [], "irn")
    with pytest.raises(InputError, match="has no conf_bg"):
        resolve_auto({"conf_bg": "auto"}, ["conf_bg"], [str(calib)], "irn")
    with pytest.raises(InputError, match="calibration is missing"):
        resolve_auto({"conf_bg": "auto"}, ["conf_bg"], [str(tmp_path / "none.json")], "irn")


@pytest.mark.slow
def test_auto_bg_score_runs_calibrate_and_eval_cam_uses_it(tiny_dag: Path) -> None:
    """bg_score auto (the session's tiny build): rule calibrate ran on the schema's default grid (cam.sweep, not
    configured), picked a value inside it by the one-SE rule recomputed from its rows, and eval_cam used it."""
    config = tiny_dag_config()
    assert config["runs"]["tiny"]["cam"]["bg_score"] == "auto" and "sweep" not in config["runs"]["tiny"]["cam"]
    calib = json.loads((tiny_dag / "results/tiny/calibration.json").read_text())
    metrics = json.loads((tiny_dag / "results/tiny/cam_val_metrics.json").read_text())
    grid = sorted(
        load_schema(REPO / "schemas/config.schema.yaml")["properties"]["cam"]["properties"]["sweep"]["default"]
    )
    assert [r["bg_score"] for r in calib["rows"]] == grid
    assert calib["bg_score"] in grid[1:-1] and metrics["bg_score"] == calib["bg_score"]  # the ends only bracket it
    assert metrics["bg_score_source"] == "calibrated (auto)" and calib["pairs"] >= calib["images"] > 0
    assert calib["bg_score"] == _one_se_choice(calib["rows"][1:-1], "bg_score")
    assert calib["conf_bg"] < calib["bg_score"] < calib["conf_fg"]


@pytest.mark.slow
def test_auto_ir_thresholds_and_walk_threshold(tiny_dag: Path) -> None:
    """All IRN thresholds auto (the session's tiny build): cam_to_ir_label read conf_fg/conf_bg from
    calibration.json, make_pseudo and the oracle sweep read bg_threshold from calibration_pseudo.json, and the sweep's
    score at that threshold is eval_pseudo's from the label PNGs (two implementations of the same labels)."""
    irn = tiny_dag_config()["runs"]["tiny"]["irn"]
    assert irn["conf_fg"] == irn["conf_bg"] == irn["bg_threshold"] == "auto"
    run = tiny_dag / "results/tiny"
    calib = json.loads((run / "calibration.json").read_text())
    walk = json.loads((run / "calibration_pseudo.json").read_text())
    sweep = json.loads((run / "pseudo_val_sweep.json").read_text())
    assert calib["conf_bg"] < calib["bg_score"] < calib["conf_fg"]
    log = (tiny_dag / "logs/tiny/cam_to_ir_label/0.log").read_text()
    assert f"irn.conf_fg {calib['conf_fg']:.2f} from" in log and f"irn.conf_bg {calib['conf_bg']:.2f}" in log
    best = max(walk["rows"], key=lambda r: r["objective"])  # the random walk's threshold: the plain argmax
    assert walk["bg_threshold"] == best["bg_threshold"] and walk["pairs"] > 0
    assert sweep["bg_threshold"] == walk["bg_threshold"] and sweep["bg_threshold_source"] == "calibrated (auto)"
    miou = float((run / "pseudo_val_miou.txt").read_text())
    assert 100 * sweep["miou"] == pytest.approx(miou, abs=0.006)
    assert (run / "pseudo_val_sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_configured_thresholds_replace_the_calibrated_ones(tiny_dag: Path, tmp_path: Path) -> None:
    """A fixed walk threshold, then a fixed bg_score (in a copy of the tiny build): only the stages that read the value
    rerun, without calibrating, and report it as configured; the sweep's score at the configured walk threshold is
    eval_pseudo's. (A fixed bg_score also moves the cam gate and the IR labels, whose auto bracket surrounds it: only
    eval_cam is asked for here.)"""
    config = tiny_dag_config()
    config["runs"]["tiny"]["irn"]["bg_threshold"] = 0.5
    work = copy_of_dag(tiny_dag, tmp_path / "work", config)
    targets = ["results/tiny/pseudo_val_miou.txt", "results/tiny/pseudo_val_sweep.json"]
    dry = snakemake(work, "-n", *targets)
    assert planned_jobs(dry.stdout) == {"make_pseudo": 2, "eval_pseudo": 1, "sweep_pseudo": 1}, dry.stdout[-2000:]
    proc = snakemake(work, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads((work / "results/tiny/pseudo_val_sweep.json").read_text())
    assert sweep["bg_threshold"] == 0.5 and sweep["bg_threshold_source"] == "configured"
    miou = float((work / "results/tiny/pseudo_val_miou.txt").read_text())
    assert 100 * sweep["miou"] == pytest.approx(miou, abs=0.006)
    config["runs"]["tiny"]["cam"]["bg_score"] = 0.35
    write_config(work, config)
    dry = snakemake(work, "-n", "results/tiny/cam_val_miou.txt")
    assert planned_jobs(dry.stdout) == {"eval_cam": 1}, dry.stdout[-2000:]
    proc = snakemake(work, "results/tiny/cam_val_miou.txt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((work / "results/tiny/cam_val_metrics.json").read_text())
    assert metrics["bg_score"] == 0.35 and metrics["bg_score_source"] == "configured"


def test_localisation_evidence_prefers_a_cam_on_the_object_and_names_overlapping_classes() -> None:
    """A score function that sees class 0 only through the object's pixels: a CAM on the object beats the
    centred region of the same area (the object is off-centre) and the uniform map; a CAM on the centre shows no
    evidence; two classes with the same region overlap at IoU 1 (planted bugs caught: the centre region taken at
    another area than the CAM's, or the overlap computed over the union of all classes)."""
    from wsss.pipeline.calibrate import LocalisationEvidence, add_localisation, centre_order

    order = centre_order(4, 6)
    assert set(order[:4].tolist()) == {8, 9, 14, 15} and set(order[-4:].tolist()) == {0, 5, 18, 23}
    h, w = 40, 40
    image = torch.zeros(3, h, w)
    image[:, 2:10, 2:10] = 1.0  # the object, in a corner

    def score_fn(batch):  # class 0: the share of the object kept; class 1: constant 0.9 (learned nothing)
        kept = batch[:, 0, 2:10, 2:10].mean(dim=(1, 2))
        return torch.stack([kept, torch.full_like(kept, 0.9)], dim=1)

    on_object = np.zeros((2, h, w), np.float32)
    on_object[0, 2:10, 2:10] = 1.0
    on_object[1, 2:10, 2:10] = 1.0
    evidence = LocalisationEvidence.zeros(0.5)
    for _ in range(3):
        add_localisation(evidence, score_fn, image, on_object, [0, 1])
    summary = evidence.summary(["obj", "flat"])
    obj, flat = summary["classes"]["obj"], summary["classes"]["flat"]
    assert obj["pairs"] == 3 and abs(obj["area"] - 64 / 1600) < 1e-9 and obj["keep"] == 1.0
    assert obj["centre"] == 0.0 and obj["blank"] == 0.0 and obj["full"] == 1.0
    assert abs(obj["evidence"] - (1.0 - 64 / 1600)) < 1e-6  # vs the uniform map's best (full - 1 = 0, blank 0)
    assert abs(flat["evidence"] - (0.9 - 64 / 1600 - 0.9)) < 1e-6  # the blank image keeps 0.9: no evidence
    assert summary["pairs"]["obj|flat"] == {"images": 3, "iou": 1.0}
    centred = np.zeros((1, h, w), np.float32)
    centred[0, 16:24, 16:24] = 1.0
    evidence = LocalisationEvidence.zeros(0.5)
    add_localisation(evidence, score_fn, image, centred, [0])
    assert evidence.summary(["obj", "flat"])["classes"]["obj"]["evidence"] < 0  # keep 0 - area vs blank 0
    image = torch.zeros(3, h, w)
    image[:, 16:24, 16:24] = 1.0  # the object in the centre: the centre map finds it as well as the CAM

    def centre_fn(batch):
        kept = batch[:, 0, 16:24, 16:24].mean(dim=(1, 2))
        return torch.stack([kept, kept], dim=1)

    evidence = LocalisationEvidence.zeros(0.5)
    add_localisation(evidence, centre_fn, image, centred, [0])
    row = evidence.summary(["obj", "flat"])["classes"]["obj"]
    assert row["keep"] == 1.0 and row["centre"] > 0.9 and abs(row["evidence"]) < 0.07  # a disc in a square


def test_centre_order_breaks_ties_by_index() -> None:
    """On an 8×8 grid every centre distance is exact in binary floating point, and ties are many (the grid's
    symmetries, and 1² + 7² = 5² + 5²): the order is by distance, then by index, as an integer computation of the
    same distances gives. Mutants killed (mutmut): argsort's kind other than "stable" (quicksort reorders ties)."""
    from wsss.pipeline.calibrate import centre_order

    h = w = 8
    # 4·h²·w² times the squared elliptic distance of pixel (r, c), in integers
    expected = sorted(
        range(h * w), key=lambda i: ((2 * (i // w) + 1 - h) ** 2 * w**2 + (2 * (i % w) + 1 - w) ** 2 * h**2, i)
    )
    assert centre_order(h, w).tolist() == expected


def test_localisation_summary_hand_worked() -> None:
    """Every key of LocalisationEvidence.summary on two hand-made classes: means, the objectives, the evidence
    against the better baseline (the centre map for class 0, the uniform map's full − 1 for class 1), its standard
    error (None for one pair) and the pair IoUs. Mutants killed (mutmut): renamed keys, ddof 0, the standard
    error for one pair, means replaced (full − 2 for the uniform map is equivalent: tests/mutation_equivalent.md)."""
    from wsss.pipeline.calibrate import LocalisationEvidence

    rows = {  # keep, centre, blank, full, area
        0: [(0.9, 0.5, 0.1, 0.95, 0.2), (0.7, 0.3, 0.0, 0.85, 0.1)],
        1: [(0.6, 0.1, 0.2, 1.0, 0.3)],
    }
    evidence = LocalisationEvidence(0.35, rows, {(0, 1): [0.25, 0.75]})
    summary = evidence.summary(["cat", "dog"])
    assert summary["bg_score"] == 0.35 and set(summary) == {"bg_score", "classes", "pairs"}
    cat, dog = summary["classes"]["cat"], summary["classes"]["dog"]
    # cat: objectives 0.7 and 0.6; centre map 0.3 and 0.2; uniform max(0.1, -0.05) = 0.1 and max(0.0, -0.15) = 0.0
    expected_cat = {
        "pairs": 2,
        "keep": 0.8,
        "centre": 0.4,
        "blank": 0.05,
        "full": 0.9,
        "area": 0.15,
        "objective": 0.65,
        "centre_objective": 0.25,
        "uniform_objective": 0.05,
        "evidence": 0.4,
    }
    assert set(cat) == set(expected_cat) | {"evidence_se"}
    for key, value in expected_cat.items():
        assert cat[key] == pytest.approx(value, abs=1e-12), key
    assert cat["evidence_se"] == pytest.approx(0.0, abs=1e-12)  # both gains 0.4: the spread is zero
    # dog: objective 0.3; centre map -0.2; uniform max(0.2, 0.0) = 0.2: evidence 0.1, one pair: no standard error
    assert dog["evidence"] == pytest.approx(0.1) and dog["uniform_objective"] == pytest.approx(0.2)
    assert dog["evidence_se"] is None and dog["pairs"] == 1
    uneven = LocalisationEvidence(0.35, {0: [(0.9, 0.5, 0.1, 0.95, 0.2), (0.5, 0.3, 0.0, 0.85, 0.1)]}, {})
    # gains 0.4 and 0.2: sample standard deviation 0.1414…, over sqrt(2): 0.1
    assert uneven.summary(["cat"])["classes"]["cat"]["evidence_se"] == pytest.approx(0.1)
    assert summary["pairs"] == {"cat|dog": {"images": 2, "iou": 0.5}}


def test_resolve_auto_logs_each_value_and_names_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mutants killed (mutmut): the log line's format and arguments, the error's file and message."""
    calib = tmp_path / "calibration.json"
    calib.write_text(json.dumps({"conf_fg": 0.456, "conf_bg": True}))
    with caplog.at_level("INFO", logger="wsss"):
        resolve_auto({"conf_fg": "auto"}, ["conf_fg"], [str(calib)], "irn")
    assert [r.getMessage() for r in caplog.records] == [f"irn.conf_fg 0.46 from {calib}"]
    with pytest.raises(InputError) as err:
        resolve_auto({"conf_bg": "auto"}, ["conf_bg"], [], "irn")
    assert (err.value.path, err.value.problem) == (
        "--calibration",
        "irn.conf_bg is auto: give the run's calibration file",
    )
    with pytest.raises(InputError) as err:  # a boolean is not a threshold
        resolve_auto({"conf_bg": "auto"}, ["conf_bg"], [str(calib)], "irn")
    assert (err.value.path, err.value.problem) == (str(calib), "has no conf_bg for irn.conf_bg: auto (see its log)")


def test_choice_and_bracket_edge_cases() -> None:
    ev = RegionEvidence.zeros([0.3, 0.1, 0.2])
    assert ev.thresholds.tolist() == [0.1, 0.2, 0.3] and ev.thresholds.dtype == np.float64
    assert RegionEvidence.zeros([1, 2, 3]).thresholds.dtype == np.float64  # integer grids too
    with pytest.raises(ValueError, match="^no image-class pairs measured$"):
        ev.choice()
    two = RegionEvidence.zeros([0.1, 0.2])
    two.add(np.array([0.5, 0.6]), np.zeros(2))
    with pytest.raises(ValueError, match=r"^no interior value in the calibration grid \[0.1, 0.2\]$"):
        two.choice(interior=True)
    three = RegionEvidence.zeros([0.1, 0.2, 0.3])
    three.add(np.array([0.5, 0.6, 0.4]), np.zeros(3))
    assert three.choice(interior=True) == 0.2  # exactly one interior value is enough
    with pytest.raises(ValueError, match="area_ratio must lie in"):
        ir_label_bracket(three, 0.2, area_ratio=0.0)
    with pytest.raises(ValueError, match="must lie inside the calibration grid"):
        ir_label_bracket(three, 0.1)


def test_ir_label_bracket_at_the_grid_second_value() -> None:
    """bg_score at the grid's second value is inside the grid (mutant killed: ``at == 1`` taken for the edge)."""
    ev = RegionEvidence.zeros([0.1, 0.2, 0.3, 0.4, 0.5])
    for _ in range(3):
        ev.add(np.ones(5), np.array([0.9, 0.6, 0.42, 0.3, 0.1]))
    # at 0.2 the area is 0.6: conf_fg where area is nearest 0.7·0.6 = 0.42 (0.3), conf_bg nearest 0.6/0.7 (0.1)
    assert ir_label_bracket(ev, 0.2, area_ratio=0.7) == (0.3, 0.1)


def test_walk_regions_of_a_tensor_and_of_doubles_are_float32() -> None:
    scores = torch.tensor([[[0.2, 0.9]], [[0.5, 0.1]]], dtype=torch.float64)
    for given in (scores, scores.numpy()):
        out = walk_regions(given)
        assert out.dtype == np.float32 and out.tolist() == [[[0.0, pytest.approx(0.9)]], [[0.5, 0.0]]]
    assert walk_regions(np.zeros((0, 2, 2))).dtype == np.float32  # no classes: float32 too


def test_calibration_set_puts_the_classifier_held_out_images_first() -> None:
    from wsss.pipeline.heldout import holdout_split

    ids = [f"img{i:02d}" for i in range(20)]
    train, held = holdout_split(ids, 0.2)
    assert held and train
    assert calibration_set(ids, 0.2, 5) == ((held + train)[:5], min(5, len(held)))
    assert calibration_set(ids, 0.2, 100) == (held + train, len(held))
    assert calibration_set(ids, 0.0, 3) == (ids[:3], 0)


def test_log_rows_returns_and_logs_every_row(caplog: pytest.LogCaptureFixture) -> None:
    ev = RegionEvidence.zeros([0.1, 0.2])
    ev.add(np.array([0.5, 0.25]), np.array([0.25, 0.125]))
    with caplog.at_level("INFO", logger="wsss"):
        rows = log_rows(ev, "bg_score")
    assert rows == ev.rows("bg_score")
    assert [r.getMessage() for r in caplog.records] == [
        "bg_score 0.10: keep 0.500 area 0.250 objective 0.250",
        "bg_score 0.20: keep 0.250 area 0.125 objective 0.125",
    ]


def test_classifier_scores_is_the_methods_image_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """classifier_scores asks the method registry for the method's image scores (mutant killed: another method's
    scores, or the batch passed through unscored)."""
    from wsss.methods import get_method

    seen = []
    spec = get_method("cam")
    monkeypatch.setattr(type(spec), "image_scores", lambda self, model, batch: seen.append((model, batch)) or batch * 2)
    fn = classifier_scores("model", "cam")
    assert fn(torch.ones(1)).tolist() == [2.0] and seen[0][0] == "model"
