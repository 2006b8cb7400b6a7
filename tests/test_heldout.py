"""Image-level validation without pixel labels: the held-out slice, average precision by hand, and fit's early stop
(the step a scripted metric sequence dictates, the best weights kept, exact resume with the evaluation state)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, NoisyRegression, interrupt_at

from wsss.data.folder import in_val
from wsss.engine.train import Checkpoint, build_optimizer, fit, load_state_dict_file
from wsss.outputs.summary import SummaryRow, stage_drops, summary_table
from wsss.pipeline.evaluate import coverage_warnings, pseudo_coverage
from wsss.pipeline.gates import cls_gate
from wsss.pipeline.heldout import (
    HeldoutTracker,
    average_precision,
    holdout_split,
    mean_average_precision,
    micro_f1,
    training_report,
)


# ------------------------------------------------------------------------------------------ held-out slice
def test_holdout_is_a_salted_hash_of_the_id_stable_under_additions() -> None:
    ids = [f"img_{k:04d}" for k in range(2000)]
    train, held = holdout_split(ids, 0.1)
    assert sorted(train + held) == sorted(ids) and not set(train) & set(held)
    assert 150 < len(held) < 250  # ~10 %
    assert train == [i for i in ids if i in set(train)]  # order kept
    # adding images never moves the others
    train2, held2 = holdout_split(ids + [f"new_{k}" for k in range(500)], 0.1)
    assert set(held) <= set(held2) and set(train) <= set(train2)
    # independent of the folder dataset's val hash (same fraction): a folder's train split still holds ~10 % out
    folder_train = [i for i in ids if not in_val(i, 0.1)]
    _, held3 = holdout_split(folder_train, 0.1)
    assert 0.05 < len(held3) / len(folder_train) < 0.15
    # the hash is the documented one
    h = int.from_bytes(hashlib.sha256(b"wsss-cls-holdout\0img_0000").digest()[:8], "big") / 2.0**64
    assert ("img_0000" in held) == (h < 0.1)


def test_holdout_keeps_one_image_of_a_tiny_split_and_none_at_fraction_zero() -> None:
    ids = ["a", "b", "c"]
    train, held = holdout_split(ids, 0.01)
    assert len(held) == 1 and len(train) == 2
    assert holdout_split(ids, 0.0) == (ids, [])


# ------------------------------------------------------------------------------------------ AP and F1 by hand
def test_average_precision_hand_worked() -> None:
    # ranks: + - + -  -> P@1 = 1 (R .5), P@3 = 2/3 (R 1): AP = .5·1 + .5·2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # perfect ranking
    assert average_precision([0.1, 0.9, 0.8], [0, 1, 1]) == pytest.approx(1.0)
    # worst ranking of 1 positive in 4: P@4 = 1/4
    assert average_precision([0.9, 0.8, 0.7, 0.1], [0, 0, 0, 1]) == pytest.approx(0.25)
    # ties enter together: all scores equal -> precision = prevalence
    assert average_precision([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 1]) == pytest.approx(0.5)
    # a tie between the top positive and a negative: one threshold with P = 1/2 at R = 1/2, then 2/3 at R = 1
    assert average_precision([0.9, 0.9, 0.5], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_map_skips_classes_without_positives_and_f1_counts_micro() -> None:
    scores = np.array([[0.9, 0.2, 0.6], [0.8, 0.7, 0.1], [0.1, 0.6, 0.4]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # class 0: ranks + - +  -> 5/6 ; class 1: ranks + -  (0.7 pos, 0.6 neg) -> 1 ; class 2: no positive
    assert mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 1) / 2)
    # predictions > .5: tp = (0,0) (1,1) = 2; fp = (0,2) (1,0) (2,1) = 3; fn = (2,0) = 1 -> 2·2 / (4 + 3 + 1)
    assert micro_f1(scores, labels) == pytest.approx(0.5)


def test_average_precision_matches_a_brute_force_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 6, n) / 5.0  # many ties
        labels = rng.integers(0, 2, n)
        if labels.sum() == 0:
            continue
        # brute force: for each distinct threshold t (descending), precision/recall of score >= t
        ap, prev_r = 0.0, 0.0
        for t in sorted(set(scores), reverse=True):
            pred = scores >= t
            p = (pred & (labels == 1)).sum() / pred.sum()
            r = (pred & (labels == 1)).sum() / labels.sum()
            ap += (r - prev_r) * p
            prev_r = r
        assert average_precision(scores, labels) == pytest.approx(ap)


# ------------------------------------------------------------------------------------------ early stop in fit
class Scripted:
    """An evaluator whose heldout_map after training step s is ``values[s]`` (the step comes from the objective,
    which runs first in the same step), and which keeps a copy of the weights it saw."""

    columns = ("heldout_map", "heldout_f1")

    def __init__(self, values: dict[int, float]) -> None:
        self.values, self.step, self.seen = values, -1, {}

    def objective(self, model, batch, step):
        self.step = step
        loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        return loss, {"mse": loss.item()}

    def __call__(self, model):
        self.seen[self.step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"heldout_map": self.values[self.step], "heldout_f1": self.values[self.step] / 2}


def _fit(
    tmp: Path,
    scripted: Scripted,
    *,
    max_steps: int,
    eval_every: int,
    patience: int | None,
    min_delta: float,
    keep_best: bool,
    fail_at: int | None = None,
    checkpoint_every: int = 100,
) -> tuple[dict, HeldoutTracker]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 1e-4, 0.9)
    tracker = HeldoutTracker("heldout_map", min_delta=min_delta, patience=patience, keep_best=keep_best)
    result = fit(
        model,
        NoisyRegression(),
        interrupt_at(scripted.objective, fail_at),
        opt,
        batch_size=4,
        max_steps=max_steps,
        seed=3,
        checkpoint=tmp / "ckpt.pt",
        checkpoint_every=checkpoint_every,
        final_weights=tmp / "model.pt",
        log_csv=tmp / "log.csv",
        device=torch.device("cpu"),
        fingerprint="f",
        evaluator=scripted,
        eval_every=eval_every,
        tracker=tracker,
    )
    return result, tracker


def test_early_stop_at_the_step_the_metric_sequence_dictates(tmp_path: Path) -> None:
    # evaluations after steps 1, 3, 5, 7, …: 0.10 best, 0.30 best, 0.305 (< 0.30 + 0.01: no), 0.29 (no) -> patience 2
    # is used up at step 7: 8 steps trained of 40, the weights after step 3 kept
    values = {1: 0.10, 3: 0.30, 5: 0.305, 7: 0.29, 9: 0.9, 11: 0.9}
    scripted = Scripted({s: values.get(s, 0.0) for s in range(40)})
    result, tracker = _fit(tmp_path, scripted, max_steps=40, eval_every=2, patience=2, min_delta=0.01, keep_best=True)
    assert result == {"steps": 8, "max_steps": 40, "stopped_early": True}
    assert [h["step"] for h in tracker.history] == [1, 3, 5, 7]
    assert tracker.best["step"] == 3 and tracker.best["heldout_map"] == 0.30
    weights = load_state_dict_file(tmp_path / "model.pt")
    for k, v in scripted.seen[3].items():
        assert torch.equal(weights[k], v)
    assert not torch.equal(weights["weight"], scripted.seen[7]["weight"])
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()]
    assert rows[0] == ["step", "lr", "loss", "mse", "heldout_map", "heldout_f1"]
    assert len(rows) == 9  # header + steps 0..7
    filled = {int(r[0]): (float(r[4]), float(r[5])) for r in rows[1:] if r[4]}
    assert filled == {1: (0.1, 0.05), 3: (0.3, 0.15), 5: (0.305, 0.1525), 7: (0.29, 0.145)}
    assert all(r[4] == r[5] == "" for r in rows[1:] if int(r[0]) not in filled)


def test_fixed_steps_evaluate_at_the_end_and_keep_the_last_weights(tmp_path: Path) -> None:
    scripted = Scripted({s: 1.0 - s / 10 for s in range(7)})  # only gets worse: no stop without patience
    result, tracker = _fit(tmp_path, scripted, max_steps=7, eval_every=3, patience=None, min_delta=0.0, keep_best=False)
    assert result == {"steps": 7, "max_steps": 7, "stopped_early": False}
    assert [h["step"] for h in tracker.history] == [2, 5, 6]  # every 3rd step and the last one
    weights = load_state_dict_file(tmp_path / "model.pt")
    assert torch.equal(weights["weight"], scripted.seen[6]["weight"])


def test_resume_with_evaluation_state_is_exact(tmp_path: Path) -> None:
    # best at step 5, then flat: patience 4 stops at step 13; a kill at step 12 resumes from the step-10 checkpoint
    values = {s: min(s, 5) / 10 for s in range(30)}
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    kw = dict(max_steps=30, eval_every=2, patience=4, min_delta=0.0, keep_best=True, checkpoint_every=5)
    straight, tracker_a = _fit(a, Scripted(values), **kw)
    assert straight == {"steps": 14, "max_steps": 30, "stopped_early": True}
    with pytest.raises(KeyboardInterrupt):
        _fit(b, Scripted(values), fail_at=12, **kw)
    ckpt = Checkpoint.load(b / "ckpt.pt")
    assert ckpt.step == 10 and ckpt.extra["evaluation"]["best_index"] == 2  # evaluations 1, 3, 5*, 7, 9
    resumed, tracker_b = _fit(b, Scripted(values), **kw)
    assert resumed == straight and tracker_b.history == tracker_a.history
    wa, wb = load_state_dict_file(a / "model.pt"), load_state_dict_file(b / "model.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k])
    assert (a / "log.csv").read_text() == (b / "log.csv").read_text()
    assert not (b / "ckpt.pt").exists()


# ------------------------------------------------------------------------------------------ gates
def _gate_stage(tmp_path: Path, report: dict, enabled: bool, min_f1: float) -> tuple[int, str, Path]:
    import subprocess
    import sys

    held = tmp_path / "heldout.json"
    held.write_text(json.dumps(report))
    out = tmp_path / "gate.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "cls_gate.py"),
            "--params",
            json.dumps({"enabled": enabled, "min_cls_f1": min_f1, "min_prior_gain": 0.25, "min_class_images": 3}),
            "--heldout",
            str(held),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return proc.returncode, proc.stderr, out


def test_cls_gate_fails_with_one_line_and_no_output(tmp_path: Path) -> None:
    report = {"f1": 0.13, "held_out_images": 64, "baseline_f1": 0.51}
    code, stderr, out = _gate_stage(tmp_path, report, True, 0.6)
    assert code == 2 and not out.exists()
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == stderr.strip().splitlines()[-1]
    line = errors[0]
    assert line.startswith(f"error: {tmp_path / 'heldout.json'}: held-out image-level micro-F1 0.130")
    for words in (
        "gates.min_cls_f1 0.6",
        "64 held-out images",
        "0.510",
        "cls.epochs: auto",
        "cls.pretrained",
        "larger images",
        "fewer classes",
        "gates.enabled: false",
    ):
        assert words in line, words


def test_cls_gate_passes_above_the_threshold_and_when_disabled(tmp_path: Path) -> None:
    code, stderr, out = _gate_stage(tmp_path, {"f1": 0.61, "held_out_images": 64}, True, 0.6)
    assert code == 0 and json.loads(out.read_text())["passed"] is True and "cls gate passed" in stderr
    out.unlink()
    code, stderr, out = _gate_stage(tmp_path, {"f1": 0.13, "held_out_images": 64}, False, 0.6)
    assert code == 0 and out.exists()
    assert "WARNING gates.enabled is false, running on: held-out image-level micro-F1 0.130" in stderr
    # unmeasured (no held-out images): passes with a warning
    assert cls_gate({"f1": None}, True, 0.6, 0.25, 3)[0] is True
    assert (
        cls_gate({"f1": 0.59999}, True, 0.6, 0.25, 3)[0] is False
        and cls_gate({"f1": 0.6}, True, 0.6, 0.25, 3)[0] is True
    )


def test_training_report_says_when_max_epochs_cut_an_improving_run() -> None:
    tracker = HeldoutTracker("heldout_map", 0.0, patience=3, keep_best=True)
    for step, v in [(9, 0.5), (19, 0.6), (29, 0.7)]:
        tracker.record(step, {"heldout_map": v, "heldout_f1": v})
    report, line, warn = training_report(
        tracker,
        {"steps": 30, "max_steps": 30, "stopped_early": False},
        auto=True,
        held_images=10,
        train_images=90,
        min_delta=0.0,
        patience=3,
        baseline_f1=0.4,
    )
    assert warn and report["still_improving"] and report["kept_step"] == 29 and report["f1"] == 0.7
    assert "reached cls.max_epochs (30 steps) while held-out mAP was still improving" in line
    tracker.record(39, {"heldout_map": 0.6, "heldout_f1": 0.6})
    report, line, warn = training_report(
        tracker,
        {"steps": 40, "max_steps": 100, "stopped_early": True},
        auto=True,
        held_images=10,
        train_images=90,
        min_delta=0.0,
        patience=1,
    )
    assert not warn and not report["still_improving"] and report["kept_step"] == 29
    assert line.startswith("epochs auto: stopped after 40 of at most 100 steps")
    # fixed epochs report the last evaluation (the final weights)
    report, line, _ = training_report(
        tracker,
        {"steps": 40, "max_steps": 40, "stopped_early": False},
        auto=False,
        held_images=10,
        train_images=90,
        min_delta=0.0,
        patience=3,
    )
    assert report["kept_step"] == 39 and report["f1"] == 0.6 and "fixed epochs" in line
    json.dumps(report, allow_nan=False)


# ------------------------------------------------------------------------------------------ pseudo coverage
def test_pseudo_coverage_counts_and_warns_both_ways(tmp_path: Path) -> None:
    from wsss.artifacts.cam import CamRecord, save_cam
    from wsss.runtime.io import write_label_png

    n, ids = 40, [f"i{k}" for k in range(40)]
    cams, labels = {}, {}
    for k, image_id in enumerate(ids):
        # class 0: found by the classifier everywhere, covered by the pseudo labels in 2 images only
        # class 1: found nowhere, covered in 20 images; class 2: found and covered in the same 10 images
        scores = np.array([0.9, 0.1, 0.9 if k < 10 else 0.1], np.float32)
        label = np.zeros((10, 10), np.uint8)
        if k < 2:
            label[:2, :] = 1  # 20 % of the pixels
        if k < 20:
            label[5, :5] = 2  # 5 %
        if k < 10:
            label[8, 0] = 3  # 1 pixel = 1 %, exactly the threshold
        label[9, 9] = 255
        cams[image_id] = tmp_path / f"{image_id}.npz"
        save_cam(cams[image_id], CamRecord(np.array([0]), np.zeros((1, 3, 3), np.float16), (10, 10), scores))
        labels[image_id] = tmp_path / f"{image_id}.png"
        write_label_png(labels[image_id], label)
    counts = pseudo_coverage(4, ids, cams, labels, 0.01)
    assert counts["classifier"].tolist() == [40, 0, 10]
    # class 3's single pixel is 1/99 of the non-ignored pixels >= 1 %
    assert counts["pseudo"].tolist() == [2, 20, 10] and counts["labelled"].tolist() == [40, 0, 0]
    warnings = coverage_warnings(counts, ["a", "b", "c"], n, 0.2, 0.01)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "class 'a': the classifier finds it in 40 images but the pseudo labels cover it in only 2"
    )
    assert warnings[1].startswith(
        "class 'b': the pseudo labels cover it in 20 images but the classifier finds it in only 0"
    )
    # fewer than 5 images is not "many"
    small = {"classifier": np.array([4]), "pseudo": np.array([0]), "labelled": np.array([4])}
    assert coverage_warnings(small, ["a"], 40, 0.2, 0.01) == []


# ------------------------------------------------------------------------------------------ summary
def test_summary_flags_stage_drops_and_averages_seeds() -> None:
    rows = [
        SummaryRow("bad", "d", "vwl_l", "pseudo", 25.6, 24.7, 14.7, 14.3),
        SummaryRow("s_s0", "d", "vwl_l", "pseudo", 60.0, 70.0, 72.0, 80.0),
        SummaryRow("s_s1", "d", "vwl_l", "pseudo", 62.0, 74.0, 76.0, 84.0),
        SummaryRow("s_s2", "d", "vwl_l", "pseudo", 64.0, 72.0, None, 82.0),
    ]
    text = summary_table(
        rows,
        seed_groups={"s": ["s_s0", "s_s1", "s_s2"]},
        warnings=["bad: class 'x': the classifier finds it in 40 images but …"],
    )
    assert "| bad | d | vwl_l | pseudo | 25.60 | 24.70 ↓ | 14.70 ↓ | 14.30 ↓ |" in text
    assert "| s_s0 | d | vwl_l | pseudo | 60.00 | 70.00 | 72.00 | 80.00 |" in text
    # stage s_s2 has no DeepLab: +CRF compares with the pseudo labels
    assert stage_drops(rows[3]) == []
    assert stage_drops(SummaryRow("r", "d", "m", "p", 50.0, 40.0, None, 45.0)) == [(1, 0)]
    # mean ± sample std: CAM 62 ± 2, pseudo 72 ± 2, DeepLab over two seeds 74 ± 2.83, CRF 82 ± 2
    assert "| s | 0, 1, 2 | 62.00 ± 2.00 | 72.00 ± 2.00 | 74.00 ± 2.83 | 82.00 ± 2.00 |" in text
    warnings = text.split("## Warnings", 1)[1]
    assert "- bad: pseudo labels (24.70) below CAM (25.60)" in warnings
    assert "- bad: DeepLab (14.70) below pseudo labels (24.70)" in warnings
    assert "- bad: DeepLab+CRF (14.30) below DeepLab (14.70)" in warnings
    assert "- bad: class 'x'" in warnings
    assert "## Warnings" not in summary_table(rows[1:2])


# ------------------------------------------------------------------------------------------ seeds
def test_seeds_become_runs_of_their_own(repo: Path) -> None:
    from wsss.runtime.config import load_schema, run_config, validate_config
    from wsss.runtime.errors import InputError

    schema = load_schema(repo / "schemas" / "config.schema.yaml")
    config = {"runs": {"a": {"dataset": "synth", "method": "cam", "seeds": [0, 7], "cls": {"lr": 0.5}}}}
    valid = validate_config(config, schema)
    assert sorted(valid["runs"]) == ["a", "a_s0", "a_s7"]
    cfg = run_config(valid, "a_s7")
    assert (cfg["cls"]["seed"], cfg["irn"]["seed"], cfg["seg"]["seed"]) == (7, 7, 7)
    assert cfg["cls"]["lr"] == 0.5 and cfg["method"] == "cam"
    assert run_config(valid, "a")["cls"]["seed"] == 1  # the base run stays as configured
    assert validate_config(valid, schema)["runs"] == valid["runs"]  # idempotent
    clash = {"runs": {**config["runs"], "a_s0": {"dataset": "synth"}}}
    with pytest.raises(InputError, match="runs.a_s0: already configured"):
        validate_config(clash, schema)
    with pytest.raises(InputError, match="runs.a.seeds"):
        validate_config({"runs": {"a": {"dataset": "synth", "seeds": [1, 1]}}}, schema)


def test_epochs_accepts_a_number_or_auto(repo: Path) -> None:
    from wsss.runtime.config import load_schema, validate_config
    from wsss.runtime.errors import InputError

    schema = load_schema(repo / "schemas" / "config.schema.yaml")
    valid = validate_config({"runs": {"a": {"dataset": "synth", "cls": {"epochs": "auto"}}}}, schema)
    assert valid["cls"]["holdout_fraction"] == 0.1 and valid["gates"] == {
        "enabled": True,
        "min_cls_f1": 0.6,
        "min_seg_fit": 0.6,
        "seg_fit_images": 64,
        "coverage_ratio": 0.2,
        "coverage_min_pixels": 0.01,
        "min_prior_gain": 0.25,
        "min_class_images": 3,
        "min_cam_evidence": 0.0,
        "cam_evidence_se": 2.0,
        "max_cam_overlap": 0.5,
        "min_gate_pairs": 5,
    }
    with pytest.raises(InputError, match="runs.a.cls.epochs"):
        validate_config({"runs": {"a": {"dataset": "synth", "cls": {"epochs": "forever"}}}}, schema)


# ------------------------------------------------------------------------------------------ report figure
def test_loss_figure_reads_and_draws_the_held_out_columns(tmp_path: Path) -> None:
    from wsss.outputs.report import read_train_log, save_loss_curves

    log = tmp_path / "train_log.csv"
    log.write_text(
        "step,lr,loss,cls,heldout_map,heldout_f1\n0,0.1,2.5,2.0,,\n1,0.05,1.5,1.0,0.75,0.5\n2,0.01,1.0,0.9,,\n"
    )
    columns = read_train_log(log)
    assert columns["heldout_map"][1] == 0.75 and np.isnan(columns["heldout_map"][[0, 2]]).all()
    save_loss_curves({"cls": columns}, tmp_path / "with.png", "t")
    without = {k: v for k, v in columns.items() if not k.startswith("heldout_")}
    save_loss_curves({"cls": without}, tmp_path / "without.png", "t")
    assert (tmp_path / "with.png").read_bytes() != (tmp_path / "without.png").read_bytes()


@pytest.mark.slow
def test_the_dag_stops_at_the_cls_gate_and_runs_on_when_disabled(tmp_path: Path) -> None:
    from helpers import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config("cam")
    config["gates"] = {"min_cls_f1": 1.0}  # the tiny classifier is far from perfect on its held-out images
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "results/tiny/cam_val_miou.txt", timeout=1500)
    assert proc.returncode != 0
    report = json.loads((tmp_path / "results/tiny/cls/heldout.json").read_text())
    from helpers import TINY_CLS, TINY_SYNTH

    held, train = report["held_out_images"], report["train_images"]
    assert held >= 1 and held + train == TINY_SYNTH["num_train_aug"]
    assert report["steps"] == int(TINY_CLS["epochs"] * (train // TINY_CLS["batch_size"]))
    assert not (tmp_path / "results/tiny/cls/gate.json").exists()
    assert not (tmp_path / "logs/tiny/infer_cam").exists()  # the DAG stopped at the gate
    line = (tmp_path / "logs/tiny/cls_gate.log").read_text().strip().splitlines()[-1]
    assert line.startswith("error: results/tiny/cls/heldout.json: held-out image-level micro-F1 ")
    assert "is below gates.min_cls_f1 1.0" in line and "fewer classes" in line
    assert line in proc.stdout + proc.stderr  # shown by Snakemake (show-failed-logs)
    config["gates"]["enabled"] = False
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "results/tiny/cls/gate.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING gates.enabled is false, running on" in (tmp_path / "logs/tiny/cls_gate.log").read_text()
    proc = snakemake(tmp_path, "-n", "results/tiny/cam_val_miou.txt")
    assert "train_cls" not in planned_jobs(proc.stdout) and planned_jobs(proc.stdout)["infer_cam"] == 2  # val's shards


def test_seeded_run_plans_one_chain_per_seed_and_the_summary_averages_them(tmp_path: Path) -> None:
    from helpers import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config("cam")
    config["runs"]["tiny"]["seeds"] = [0, 1]
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", "-p", "results/summary.md")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    assert jobs["train_cls"] == jobs["cls_gate"] == jobs["check_pseudo"] == 3 and jobs["summary"] == 1
    for run in ("tiny_s0", "tiny_s1"):
        assert f"results/{run}/cls/gate.json" in proc.stdout
    assert '"seed_groups": {"tiny": ["tiny_s0", "tiny_s1"]}' in proc.stdout


def test_prior_report_baselines_are_what_constant_scores_and_predicting_every_class_score() -> None:
    """An independent check: the prior's mAP equals the mAP of constant scores computed by
    mean_average_precision, and a class's prior F1 that of predicting it everywhere (planted bug caught: the
    prior mAP as the mean of the classifier's APs, or the prior F1 as p)."""
    from wsss.pipeline.heldout import mean_average_precision, micro_f1, prior_report

    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(50, 3)) < [0.2, 0.5, 0.9]).astype(np.float64)
    scores = np.clip(labels * 0.6 + rng.uniform(0, 0.5, labels.shape), 0, 1)
    report = prior_report(scores, labels, ["a", "b", "c"])
    assert abs(report["prior_map"] - mean_average_precision(np.full_like(scores, 0.3), labels)) < 1e-12
    assert abs(report["map"] - mean_average_precision(scores, labels)) < 1e-12
    for k, name in enumerate("abc"):
        row = report["classes"][name]
        assert row["positives"] + row["negatives"] == 50 and row["prevalence"] == labels[:, k].mean()
        assert abs(row["prior_f1"] - micro_f1(np.ones((50, 1)), labels[:, k : k + 1])) < 1e-12
        assert abs(row["f1"] - micro_f1(scores[:, k : k + 1], labels[:, k : k + 1])) < 1e-12
