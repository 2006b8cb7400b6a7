"""Thresholds without pixel labels (wsss.calibrate): a known answer with an analytic classifier, the held-out-first
choice of images, and the calibrate rule feeding eval_cam on the session's tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import edited_config, planned_jobs, snakemake, tiny_config
from wsss.calibrate import RegionEvidence, add_image, calibration_ids


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
    cuts the object (keep < 1, remove > 0). The region equals the object for 0.65 ≤ t < 0.75 (the next ring,
    d = 3.5, has CAM exactly 0.65), so the choice is 0.65: the lowest threshold of the best objective."""
    h = w = 20
    yy, xx = np.mgrid[:h, :w]
    dist = np.maximum(abs(yy - 9.5), abs(xx - 9.5))
    cam = (1 - dist / 10)[None].astype(np.float32)
    obj = torch.from_numpy(dist <= 2.5)
    ev = RegionEvidence.zeros(np.round(np.arange(0.05, 1.0, 0.05), 2))
    add_image(ev, _visible_object(obj), torch.ones(3, h, w), cam, [0])
    assert ev.choice() == pytest.approx(0.65)
    rows = {round(r["bg_score"], 2): r for r in ev.rows()}
    assert rows[0.65] == pytest.approx({"bg_score": 0.65, "keep": 1.0, "remove": 0.0, "area": 36 / 400,
                                        "objective": 1 - 36 / 400})
    assert rows[0.70]["objective"] == rows[0.65]["objective"]  # same region
    assert rows[0.60]["area"] == pytest.approx(64 / 400) and rows[0.60]["keep"] == 1.0  # one ring more of background
    assert rows[0.80]["keep"] == pytest.approx(16 / 36) and rows[0.80]["remove"] == pytest.approx(20 / 36)


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
    # class 0: keep 1, remove 0, area .5; class 1 (never seen): keep 0, remove 0, area .5 -> means .5, 0, .5
    assert [r["keep"] for r in rows] == [0.5, 0.5] and [r["area"] for r in rows] == [0.5, 0.5]


def test_calibration_images_held_out_first() -> None:
    assert calibration_ids(["a", "b", "c"], ["z", "y"], 4) == ["z", "y", "a", "b"]
    assert calibration_ids(["a", "b"], [], 5) == ["a", "b"]


@pytest.mark.slow
def test_auto_bg_score_runs_calibrate_and_eval_cam_uses_it(tiny_dag: Path) -> None:
    config = tiny_config()
    config["runs"]["tiny"]["cam"]["bg_score"] = "auto"
    with edited_config(tiny_dag, config):
        dry = snakemake(tiny_dag, "-n", "results/tiny/cam_val_miou.txt")
        assert planned_jobs(dry.stdout) == {"calibrate": 1, "eval_cam": 1}, dry.stdout[-2000:]
        proc = snakemake(tiny_dag, "results/tiny/cam_val_miou.txt")
        assert proc.returncode == 0, proc.stderr[-3000:]
        calib = json.loads((tiny_dag / "results/tiny/calibration.json").read_text())
        metrics = json.loads((tiny_dag / "results/tiny/cam_val_metrics.json").read_text())
        sweep = config["runs"]["tiny"]["cam"].get("sweep") or [r["bg_score"] for r in calib["rows"]]
        assert calib["bg_score"] in sweep and metrics["bg_score"] == calib["bg_score"]
        assert metrics["bg_score_source"] == "calibrated (auto)" and calib["pairs"] >= calib["images"] > 0
        best = max(calib["rows"], key=lambda r: r["objective"])
        assert best["bg_score"] == calib["bg_score"]
    proc = snakemake(tiny_dag, "results/tiny/cam_val_miou.txt")  # config restored: fixed score again
    assert proc.returncode == 0, proc.stderr[-2000:]
