"""Stage scripts as a user runs them: bad input ends with one line naming the file, exit 2, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_CLS, fresh_python


def _run(stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py"), *args], capture_output=True, text=True, timeout=300
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0]


def _schema_cls() -> dict:
    """The validated ``cls`` section with every default (what a rule would pass)."""
    from wsss.runtime.config import load_schema, run_config, validate_config

    cfg = validate_config({"runs": {"r": {"dataset": "synth"}}}, load_schema(REPO / "schemas/config.schema.yaml"))
    return run_config(cfg, "r")["cls"]


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_jpeg_during_training(tiny_voc: Path, tmp_path: Path, workers: int) -> None:
    jpeg = tiny_voc / "JPEGImages/b_2.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:30])
    params = dict(_schema_cls(), **TINY_CLS)  # every key the stage reads, from the schema's defaults
    params.update(batch_size=2, workers=workers, k_words=4, holdout_fraction=0.0)
    out = tmp_path / "cls"
    proc = _run(
        "train_cls",
        "--params",
        json.dumps(params),
        "--dataset",
        str(tiny_voc),
        "--split",
        "train",
        "--method",
        "cam",
        "--device",
        "cpu",
        "--out-dir",
        str(out),
    )
    _assert_one_line_error(proc, str(jpeg), "cannot decode image")
    assert not (out / "model.pt").exists() and not (out / "train_log.csv").exists()


def test_mask_out_of_range_during_evaluation(tiny_voc: Path, tmp_path: Path) -> None:
    import numpy as np

    from wsss.artifacts.cam import CamRecord, save_cam
    from wsss.runtime.io import write_label_png

    cams = tmp_path / "cams"
    for image_id in ["a_1", "b_2", "c_3"]:
        save_cam(
            cams / f"{image_id}.npz",
            CamRecord(np.array([0]), np.ones((1, 3, 4), np.float16), (12, 16), np.zeros(2, np.float32)),
        )
    bad = np.zeros((12, 16), np.uint8)
    bad[5, 5] = 9
    write_label_png(tiny_voc / "SegmentationClass/c_3.png", bad)
    out = tmp_path / "out"
    proc = _run(
        "eval_cam",
        "--params",
        json.dumps({"cam": {"bg_score": 0.13, "sweep": [0.1]}}),
        "--dataset",
        str(tiny_voc),
        "--split",
        "val",
        "--cams",
        str(cams),
        "--miou",
        str(out / "m.txt"),
        "--metrics",
        str(out / "m.json"),
        "--sweep",
        str(out / "s.json"),
        "--plot",
        str(out / "s.png"),
    )
    _assert_one_line_error(proc, "c_3.png", "mask values [9] outside 0..2 and 255")
    assert not out.exists() or not any(out.iterdir())


# Stages that build no network start without torch and torchvision (~3.3 s of CPU per Snakemake job on a 2-core
# machine). Some of them still call a torch op when they run (bilinear upsampling of a stored CAM or logits, a
# softmax) and import torch then, lazily; none imports torchvision or the models.
NO_MODEL_STAGES = (
    "cam_to_ir_label",
    "check_pseudo",
    "cls_gate",
    "compare",
    "crf",
    "dataset_report",
    "eval_cam",
    "eval_pseudo",
    "eval_seg",
    "predict_merge",
    "prepare_dataset",
    "report_figures",
    "summary",
    "voc_submission",
)
MODEL_STAGES = (
    "calibrate",
    "calibrate_pseudo",
    "cam_gate",
    "export_model",
    "export_onnx",
    "export_program",
    "infer_cam",
    "infer_seg",
    "make_pseudo",
    "predict",
    "seg_gate",
    "sweep_pseudo",
    "train_cls",
    "train_irn",
    "train_seg",
)

# Runs one stage's --help and prints who first imported torch or torchvision (the wsss/stages frames of the stack).
IMPORT_PROBE = """
import contextlib, io, runpy, sys, traceback
first = []
class Probe:
    def find_spec(self, name, path=None, target=None):
        if not first and name.split(".")[0] in ("torch", "torchvision"):
            first.append(name + " <- " + " <- ".join(
                f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                for f in reversed(traceback.extract_stack()) if "/wsss/" in f.filename or "/stages/" in f.filename))
        return None
sys.meta_path.insert(0, Probe())
sys.argv = [sys.argv[1], "--help"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    runpy.run_path(sys.argv[0], run_name="__main__")
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules), *first)
"""


def test_every_stage_is_classified() -> None:
    """A new stage script must say whether it builds a network (and so may import torch at start).

    Planted bug: a new stages/zz.py in neither list fails here."""
    scripts = {p.stem for p in (REPO / "stages").glob("*.py")}
    assert not set(NO_MODEL_STAGES) & set(MODEL_STAGES)
    assert scripts == set(NO_MODEL_STAGES) | set(MODEL_STAGES)


@pytest.mark.parametrize("stage", NO_MODEL_STAGES)
def test_stage_without_a_network_imports_no_torch(stage: str) -> None:
    """``python stages/<stage>.py --help`` imports neither torch nor torchvision.

    Planted bug: ``import torch`` at the top of wsss/pipeline/evaluate.py fails check_pseudo, eval_cam, eval_pseudo
    and eval_seg, each naming the chain ``torch <- pipeline/evaluate.py:16 <- stages/<stage>.py``."""
    proc = fresh_python(IMPORT_PROBE, str(REPO / "stages" / f"{stage}.py"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("[]"), proc.stdout
