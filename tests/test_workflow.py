"""The Snakemake DAG: lint, dry runs of every data target, config errors, and the synthetic dataset for real."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import (
    REPO,
    TINY_DAG_SYNTH,
    TINY_DAG_TARGETS,
    TINY_SYNTH,
    copy_of_dag,
    deeplab_miou_from_pngs,
    planned_jobs,
    planned_reasons,
    snakemake,
    tiny_config,
    tiny_dag_config,
    write_config,
)

from wsss.data.dataset import VOCLayoutDataset
from wsss.runtime.config import load_schema


def test_lint_is_clean(tmp_path: Path) -> None:
    proc = snakemake(REPO, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_dry_run_resolves_every_data_target(tmp_path: Path) -> None:
    write_config(tmp_path, {"runs": {"synth": {"dataset": "synth"}}})
    proc = snakemake(tmp_path, "-n", "all", *(f"resources/{d}/labels.tsv" for d in ["synth", "voc", "coco"]))
    assert proc.returncode == 0, proc.stderr
    # one prepare rule for every kind; voc downloads on the submitting host (its local variant)
    for rule, dataset in [("prepare_dataset", "synth"), ("prepare_dataset_local", "voc"), ("prepare_dataset", "coco")]:
        assert f"rule {rule}:" in proc.stdout and f"resources/{dataset}/labels.tsv" in proc.stdout


def test_config_value_of_wrong_type_is_one_clear_error(tmp_path: Path) -> None:
    write_config(tmp_path, {"runs": {"synth": {"dataset": "synth"}}, "datasets": {"synth": {"image_size": "big"}}})
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "invalid configuration" in line]
    assert lines == ["invalid configuration: config.yaml: datasets.synth.image_size: 'big' is not of type 'integer'"]
    assert not (tmp_path / "resources").exists()


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_prepare_synth_runs_for_real_and_is_reproducible(tmp_path: Path) -> None:
    config = {"runs": {"synth": {"dataset": "synth"}}, "datasets": {"synth": TINY_SYNTH}}
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        write_config(workdir, config)
        proc = snakemake(workdir, "resources/synth/labels.tsv")
        assert proc.returncode == 0, proc.stderr
    ds = VOCLayoutDataset(first / "resources/synth")
    assert len(ds.ids("train_aug")) == TINY_SYNTH["num_train_aug"] and len(ds.ids("val")) == TINY_SYNTH["num_val"]
    assert ds.ids("train") == ds.ids("train_aug")[: TINY_SYNTH["num_train"]]
    assert _digest(first / "resources/synth") == _digest(second / "resources/synth")
    assert (first / "logs/prepare_synth.log").exists() and (first / "benchmarks/prepare_synth.tsv").exists()
    proc = snakemake(first, "-n", "resources/synth/labels.tsv")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cam_stages_run_end_to_end(tmp_path: Path) -> None:
    import json

    config = tiny_config("vwl_m")
    config["runs"]["tiny"]["cls"]["epochs"] = 1  # the plumbing, not learning (test_golden.py does that)
    write_config(tmp_path, config)
    targets = ["results/tiny/cam_train_miou.txt", "results/tiny/cam_val_miou.txt"]
    proc = snakemake(tmp_path, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "results/tiny"
    assert sorted(p.name for p in (run / "cam/train_aug").iterdir()) == ["shard_0", "shard_1"]
    assert len(list((run / "cam/train_aug").glob("shard_*/*.npz"))) == TINY_SYNTH["num_train_aug"]
    log = (run / "cls/train_log.csv").read_text().splitlines()
    # 64 images, 7 held out (cls.holdout_fraction): 57 / batch 8 = 7 steps of one epoch, evaluated after the last
    assert log[0] == "step,lr,loss,cls,hist,word,heldout_map,heldout_f1" and len(log) == 1 + 7
    assert log[-1].split(",")[-2] != "" and log[1].split(",")[-2:] == ["", ""]
    assert not (run / "cls/checkpoint.pt").exists()
    miou = float((run / "cam_val_miou.txt").read_text())
    metrics = json.loads((run / "cam_val_metrics.json").read_text())
    assert 0.0 <= miou <= 100.0 and abs(miou - 100 * metrics["miou_present"]) < 0.006
    sweep = json.loads((run / "cam_val_sweep.json").read_text())["rows"]
    default_sweep = load_schema(REPO / "schemas/config.schema.yaml")["properties"]["cam"]["properties"]["sweep"][
        "default"
    ]
    assert [r["bg_score"] for r in sweep] == sorted(default_sweep)
    assert (run / "cam_val_sweep.png").read_bytes()[:4] == b"\x89PNG"
    for name in ["train_cls", "infer_cam/train_aug_0", "infer_cam/val_1", "eval_cam_val"]:
        assert (tmp_path / f"logs/tiny/{name}.log").exists()
    # a changed evaluation parameter reruns only the evaluation
    config["runs"]["tiny"]["cam"]["bg_score"] = 0.2
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", *targets)
    jobs = proc.stdout[proc.stdout.index("Job stats") :]
    assert "eval_cam" in jobs and "train_cls" not in jobs and "infer_cam" not in jobs


@pytest.mark.slow
def test_whole_dag_runs_on_a_tiny_synthetic_run(tiny_dag: Path) -> None:
    run = tiny_dag / "results/tiny"
    # the final labels: their mIoU recomputed from the PNGs (not from eval_seg's own JSON) is the reported one; the
    # floors over predicting background everywhere: tests/test_golden.py
    reported, recomputed, all_background = deeplab_miou_from_pngs(tiny_dag, "tiny", "synth")
    assert reported == pytest.approx(recomputed, abs=0.006) and 0 < all_background < 100
    assert len(list((run / "pseudo/train_aug").glob("shard_*/*.png"))) == TINY_DAG_SYNTH["num_train_aug"]
    assert len(list((run / "seg_crf/val").glob("shard_*/*.png"))) == TINY_DAG_SYNTH["num_val"]
    summary = (tiny_dag / "results/summary.md").read_text()
    assert "| tiny |" in summary.replace("|tiny|", "| tiny |")
    proc = snakemake(tiny_dag, "-n", *TINY_DAG_TARGETS)
    assert "Nothing to be done" in proc.stdout + proc.stderr


# The tiny DAG's jobs downstream of the DeepLab logits (2 CRF shards of val) and of IRNet (the walk threshold
# calibrated from it, pseudo labels of val for the evaluation and of train_aug for DeepLab, 2 shards each; the val
# threshold sweep the report shows).
AFTER_CRF = {"crf": 2, "eval_seg": 1, "summary": 1, "report_figures": 1}
AFTER_IRN = {
    "train_irn": 1,
    "calibrate_pseudo": 1,
    "make_pseudo": 4,
    "eval_pseudo": 1,
    "sweep_pseudo": 1,
    "check_pseudo": 1,
    "train_seg": 1,
    "seg_gate": 1,
    "infer_seg": 2,
    **AFTER_CRF,
}


@pytest.mark.slow
def test_changed_crf_parameter_reruns_only_crf_and_downstream(tiny_dag: Path, tmp_path: Path) -> None:
    # (`--list-changes params` cannot show this in Snakemake 9.27: it lists every output with recorded params)
    config = tiny_dag_config()
    config["runs"]["tiny"]["seg"]["crf"] = {**config["runs"]["tiny"]["seg"].get("crf", {}), "bi_w": 5}
    work = copy_of_dag(tiny_dag, tmp_path / "work", config)  # never the shared build itself
    proc = snakemake(work, "-n", *TINY_DAG_TARGETS)
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout) == AFTER_CRF
    assert planned_reasons(proc.stdout) == {
        "params have changed since last execution": {"crf"},
        "input files updated by another job": set(AFTER_CRF) - {"crf"},
    }


@pytest.mark.slow
def test_forcerun_train_irn_reruns_irn_and_downstream_only(tiny_dag: Path) -> None:
    proc = snakemake(tiny_dag, "-n", *TINY_DAG_TARGETS, "--forcerun", "train_irn")  # (it takes several rules)
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc.stdout) == AFTER_IRN  # not prepare_synth, train_cls, infer_cam, eval_cam, IR labels
    assert planned_reasons(proc.stdout) == {
        "forced": {"train_irn"},
        "input files updated by another job": set(AFTER_IRN) - {"train_irn"},
    }


GPU_STAGES = ["train_cls", "train_irn", "train_seg", "infer_cam/val_0", "make_pseudo/val_1", "infer_seg/val_0"]


@pytest.mark.slow
def test_every_stage_logs_params_device_and_time(tiny_dag: Path) -> None:
    logs = sorted((tiny_dag / "logs").rglob("*.log"))
    rules = {
        p.relative_to(tiny_dag / "logs/tiny").parts[0].removesuffix(".log")
        for p in logs
        if p.is_relative_to(tiny_dag / "logs/tiny")
    }
    # every rule of the tiny DAG's targets (tests sharing the fixture may have run more, e.g. calibrate)
    assert rules >= {
        "train_cls",
        "cls_gate",
        "infer_cam",
        "eval_cam_val",
        "cam_to_ir_label",
        "train_irn",
        "make_pseudo",
        "check_pseudo_train_aug",
        "eval_pseudo_val",
        "train_seg",
        "seg_gate",
        "infer_seg",
        "crf",
        "eval_seg_val",
        "report_figures",
    }, rules
    for path in logs:
        text = path.read_text()
        assert "INFO params {" in text and "INFO done in " in text, path
        bench = tiny_dag / "benchmarks" / path.relative_to(tiny_dag / "logs").with_suffix(".tsv")
        assert bench.exists(), bench
    for name in GPU_STAGES:
        assert "INFO device cpu" in (tiny_dag / f"logs/tiny/{name}.log").read_text(), name
    for name in ["train_cls", "train_irn", "train_seg"]:  # tqdm bars (stderr) end up in the rule log
        assert "train: 100%" in (tiny_dag / f"logs/tiny/{name}.log").read_text(), name
