"""Golden numbers of the session's tiny DAG (conftest ``tiny_dag``): the CPU run is deterministic, so its mIoUs
are pinned in tests/golden.json with a tight tolerance. Without this, every end-to-end test would pass if every
stage produced the same garbage twice.

A deliberate numerics change (a new default, a fixed bug, another augmentation) moves these numbers: update them on
purpose in one command, then review the diff of tests/golden.json and commit it with the change that caused it:

    WSSS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

(the test then rewrites the file from the run it just built and passes). An unexplained change is a regression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("golden.json")
TOLERANCE = 0.05  # mIoU points (%): a few pixels of the 8 val images of 64 px; the CPU run repeats exactly


def tiny_dag_numbers(workdir: Path) -> dict[str, float]:
    """The pinned numbers of a built tiny DAG, in % (as the *_miou.txt files)."""
    run = workdir / "results" / "tiny"
    deeplab = json.loads((run / "deeplab_val_metrics.json").read_text())
    return {"cam_val_miou": float((run / "cam_val_miou.txt").read_text()),
            "pseudo_val_miou": float((run / "pseudo_val_miou.txt").read_text()),
            "deeplab_val_miou": round(float(deeplab["miou_no_crf"]), 2),
            "deeplab_crf_val_miou": float((run / "deeplab_val_miou.txt").read_text())}


def cam_all_background_miou(workdir: Path) -> float:
    metrics = json.loads((workdir / "results" / "tiny" / "cam_val_metrics.json").read_text())
    return 100 * float(metrics["baselines_miou"]["all_background"])


@pytest.mark.slow
def test_tiny_dag_reproduces_the_golden_numbers(tiny_dag: Path) -> None:
    numbers = tiny_dag_numbers(tiny_dag)
    if os.environ.get("WSSS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"tiny_dag": numbers, "tolerance": TOLERANCE,
                                      "_update": "WSSS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest "
                                                 "tests/test_golden.py (see its docstring)"}, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())["tiny_dag"]
    assert set(numbers) == set(golden)
    off = {k: (numbers[k], golden[k]) for k in golden if abs(numbers[k] - golden[k]) > TOLERANCE}
    assert not off, f"tiny DAG numbers moved (now, golden): {off}; if on purpose, see tests/test_golden.py"


@pytest.mark.slow
def test_tiny_cams_and_pseudo_labels_beat_the_all_background_baseline(tiny_dag: Path) -> None:
    """The CAMs must find objects: clearly above the mIoU of predicting background everywhere (the same
    evaluation; 24.71 % on the tiny val images, the CAMs measure about 39 %), and so must the pseudo labels."""
    baseline = cam_all_background_miou(tiny_dag)
    assert 0.0 < baseline < 100.0
    numbers = tiny_dag_numbers(tiny_dag)
    assert numbers["cam_val_miou"] > baseline + 10.0
    assert numbers["pseudo_val_miou"] > baseline + 5.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the tiny DeepLab predicts foreground on most pixels (6.45 % mIoU; 7-15 % "
                   "with 20-60 iterations, lr 5e-4..2e-3, fixed or batch norm) although its pseudo labels measure 32 %; "
                   "remove this mark once it learns (a strict xfail fails as soon as it passes)")
def test_tiny_deeplab_beats_the_all_background_baseline(tiny_dag: Path) -> None:
    assert tiny_dag_numbers(tiny_dag)["deeplab_val_miou"] > cam_all_background_miou(tiny_dag)
