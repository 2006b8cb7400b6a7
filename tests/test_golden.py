"""Golden numbers of the session's tiny DAG (conftest ``tiny_dag``, gates on at their defaults): the CPU run is
deterministic, so every stage's number is pinned in tests/golden.json with a tight tolerance, and each must also
stay above a floor over its baseline on the same images (a number that moves within the tolerance of a broken
stage is still caught). Without this, every end-to-end test would pass if every stage produced the same garbage
twice.

A deliberate numerics change (a new default, a fixed bug, another augmentation) moves these numbers: update them on
purpose in one command, then review the diff of tests/golden.json and commit it with the change that caused it:

    WSSS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

(the test then rewrites the exact values from the run it just built and passes; the floors stay). An unexplained
change is a regression.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from helpers import REPO, TINY_DAG_SYNTH, baseline_miou, miou_of_pngs, shard_pngs

from wsss.runtime.config import load_schema

GOLDEN = Path(__file__).with_name("golden.json")
TOLERANCE = 0.05  # points (% or F1 x 100): a few pixels of the val images; the CPU run repeats exactly


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def irn_losses(workdir: Path) -> tuple[float, float]:
    """IRNet's mean training loss over its first and its last quarter of steps."""
    with open(workdir / "results/tiny/irn/train_log.csv", newline="") as fh:
        loss = [float(row["loss"]) for row in csv.DictReader(fh)]
    quarter = max(1, len(loss) // 4)
    return _mean(loss[:quarter]), _mean(loss[-quarter:])


def tiny_dag_numbers(workdir: Path) -> dict[str, float]:
    """The pinned numbers of a built tiny DAG, in % (as the *_miou.txt files; F1 x 100)."""
    run = workdir / "results" / "tiny"
    deeplab = json.loads((run / "deeplab_val_metrics.json").read_text())
    first, last = irn_losses(workdir)
    return {
        "cam_val_miou": float((run / "cam_val_miou.txt").read_text()),
        "pseudo_val_miou": float((run / "pseudo_val_miou.txt").read_text()),
        "deeplab_val_miou": round(float(deeplab["miou_no_crf"]), 2),
        "deeplab_crf_val_miou": float((run / "deeplab_val_miou.txt").read_text()),
        "cls_heldout_f1": round(100 * json.loads((run / "cls/heldout.json").read_text())["f1"], 2),
        "irn_loss_first_quarter": round(first, 4),
        "irn_loss_last_quarter": round(last, 4),
    }


def baselines(workdir: Path) -> dict[str, float]:
    """What a model that learned nothing scores on the same images: all-background mIoU of the val masks
    (recomputed here from the PNGs), predicting every class for the held-out F1, and IRNet's own starting loss."""
    masks = workdir / "resources/synth/SegmentationClass"
    ids = sorted(shard_pngs(workdir / "results/tiny/seg_crf/val"))
    heldout = json.loads((workdir / "results/tiny/cls/heldout.json").read_text())
    gates = load_schema(REPO / "schemas/config.schema.yaml")["properties"]["gates"]["properties"]
    return {
        "all_background_val_miou": baseline_miou(ids, masks, TINY_DAG_SYNTH["num_classes"] + 1),
        "every_class_heldout_f1": 100 * heldout["baseline_f1"],
        "irn_loss_first_quarter": irn_losses(workdir)[0],
        "default_min_cls_f1": 100 * gates["min_cls_f1"]["default"],
        "default_min_seg_fit": 100 * gates["min_seg_fit"]["default"],
    }


@pytest.mark.slow
def test_tiny_dag_reproduces_the_golden_numbers(tiny_dag: Path) -> None:
    numbers = tiny_dag_numbers(tiny_dag)
    if os.environ.get("WSSS_UPDATE_GOLDEN") == "1":
        data = json.loads(GOLDEN.read_text())
        data["tiny_dag"] = numbers
        GOLDEN.write_text(json.dumps(data, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())["tiny_dag"]
    assert set(numbers) == set(golden)
    off = {k: (numbers[k], golden[k]) for k in golden if abs(numbers[k] - golden[k]) > TOLERANCE}
    assert not off, f"tiny DAG numbers moved (now, golden): {off}; if on purpose, see tests/test_golden.py"


def _short_of_floors(workdir: Path, key: str) -> dict[str, tuple[float, float]]:
    """{name: (value, floor)} of the numbers below their floors in golden.json's ``key`` section (name ->
    [baseline, margin]; a negative margin: the value must stay that far below the baseline, e.g. a loss)."""
    numbers, base = tiny_dag_numbers(workdir), baselines(workdir)
    numbers["seg_fit_miou"] = 100 * json.loads((workdir / "results/tiny/deeplab/gate.json").read_text())["fit_miou"]
    short = {}
    for name, (baseline, margin) in json.loads(GOLDEN.read_text())[key].items():
        value, floor = numbers[name], base[baseline] + margin
        if not (value > floor if margin >= 0 else value < floor):
            short[name] = (value, floor)
    return short


@pytest.mark.slow
def test_every_stage_of_the_tiny_dag_beats_its_baseline_by_its_floor(tiny_dag: Path) -> None:
    """CAM, pseudo labels, DeepLab and DeepLab+CRF above the all-background mIoU of the val images (recomputed from
    the masks) by their floors, the classifier's held-out F1 above predicting every class, IRNet's loss below its
    start, DeepLab's fit of its own training labels at least the seg gate's default."""
    base = baselines(tiny_dag)
    assert base["all_background_val_miou"] == pytest.approx(
        json.loads(GOLDEN.read_text())["baselines"]["all_background_val_miou"], abs=TOLERANCE
    )
    short = _short_of_floors(tiny_dag, "floors")
    assert not short, f"below their floors (value, floor): {short}"


@pytest.mark.slow
def test_every_gate_of_the_tiny_dag_passed_at_its_default_thresholds(tiny_dag: Path) -> None:
    """The tiny build runs with the gates on (tiny_dag_config sets none): each gate file records the schema's default
    thresholds and a pass, so the learning asserted above is what the gates let through, not a relaxed run."""
    gates = load_schema(REPO / "schemas/config.schema.yaml")["properties"]["gates"]["properties"]
    run = tiny_dag / "results/tiny"
    for path, keys in (
        ("cls/gate.json", ("min_cls_f1", "min_prior_gain")),
        ("cam/gate.json", ("min_cam_evidence", "cam_evidence_se", "max_cam_overlap")),
        ("deeplab/gate.json", ("min_seg_fit",)),
    ):
        verdict = json.loads((run / path).read_text())
        assert verdict["passed"] is True and verdict["enabled"] is True, (path, verdict["message"])
        assert {k: verdict[k] for k in keys} == {k: gates[k]["default"] for k in keys}, path


@pytest.mark.slow
def test_tiny_dag_mious_recomputed_from_the_label_pngs(tiny_dag: Path) -> None:
    """The reported pseudo-label and DeepLab+CRF mIoUs are those of the label PNGs they evaluated, recomputed
    independently of wsss.engine.metrics (tests/helpers.py miou_of_pngs)."""
    run, masks = tiny_dag / "results/tiny", tiny_dag / "resources/synth/SegmentationClass"
    for folder, name in (("pseudo/val", "pseudo_val_miou.txt"), ("seg_crf/val", "deeplab_val_miou.txt")):
        pngs = shard_pngs(run / folder)
        assert len(pngs) == TINY_DAG_SYNTH["num_val"], folder
        recomputed = miou_of_pngs(pngs, masks, TINY_DAG_SYNTH["num_classes"] + 1)
        assert float((run / name).read_text()) == pytest.approx(recomputed, abs=0.006), name
