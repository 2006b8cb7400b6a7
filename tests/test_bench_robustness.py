"""bench/robustness.py and bench/method_seeds.py: the configs they write are valid and plan the intended runs, and
the verdict of a row follows the issue's rule (signature with DeepLab+CRF >= 60, or a gate's message)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, planned_jobs, snakemake, write_config

from wsss.runtime.config import check_runs, load_schema, run_config, validate_config


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


robustness = _load("robustness")
method_seeds = _load("method_seeds")
BASE = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA = load_schema(REPO / "schemas/config.schema.yaml")


def test_every_variant_is_the_synth_run_on_one_changed_dataset() -> None:
    config = validate_config(robustness.bench_config(BASE, list(robustness.VARIANTS), False), SCHEMA)
    check_runs(config)
    base = run_config(validate_config(BASE, SCHEMA), "synth")
    base_ds = validate_config(BASE, SCHEMA)["datasets"]["synth"]
    for variant, overrides in robustness.VARIANTS.items():
        name = robustness.run_name(variant)
        cfg = run_config(config, name)
        assert cfg["dataset"] == name and config["datasets"][name]["kind"] == "synth"
        ds = config["datasets"][name]
        assert {k: ds[k] for k in overrides} == overrides, variant
        kept = set(base_ds) - set(overrides) - {"kind", "num_classes" if "classes" in overrides else ""}
        assert {k: ds[k] for k in kept} == {k: base_ds[k] for k in kept}, variant
        assert cfg["cls"]["epochs"] == "auto" and cfg["cam"]["bg_score"] == "auto"
        assert cfg["irn"]["conf_fg"] == cfg["irn"]["conf_bg"] == cfg["irn"]["bg_threshold"] == "auto"
        for section in ("seg", "irn", "cls"):  # everything else as the synth run
            same = {k for k in base[section] if k not in robustness.AUTO.get(section, {})}
            assert {k: cfg[section][k] for k in same} == {k: base[section][k] for k in same}
    fixed = validate_config(robustness.bench_config(BASE, ["seed1"], True), SCHEMA)
    assert run_config(fixed, "rb_seed1")["cam"]["bg_score"] == base["cam"]["bg_score"]


def _row(**kw) -> dict:
    return {"cam": 60.0, "pseudo": 70.0, "crf": 75.0, "gate": None, "returncode": 0} | kw


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_row(), "ok"),
        (_row(pseudo=59.0), "FAIL (pseudo ≤ CAM)"),
        (_row(crf=69.0), "FAIL (+CRF < pseudo)"),
        (_row(cam=40.0, pseudo=50.0, crf=55.0), "FAIL (+CRF < 60)"),
        (_row(crf=None, returncode=1), "FAIL (no result, exit 1)"),
        (_row(crf=None, returncode=None), "not run"),
        (_row(crf=None, gate="error: results/x/cls/heldout.json: held-out F1 0.13 < 0.6"), "gate"),
    ],
)
def test_verdict(row: dict, expected: str) -> None:
    assert robustness.verdict(row) == expected


def test_table_reads_a_variant_from_its_artifacts(tmp_path: Path) -> None:
    res = tmp_path / "results" / "rb_seed1"
    (res / "cls").mkdir(parents=True)
    (res / "cls/heldout.json").write_text(json.dumps({"f1": 0.9, "map": 0.95, "steps": 432, "stopped_early": True}))
    (res / "cam_val_metrics.json").write_text(json.dumps({"miou_present": 0.6, "bg_score": 0.4}))
    (res / "cam_val_sweep.json").write_text(
        json.dumps({"rows": [{"bg_score": 0.3, "miou": 0.62}, {"bg_score": 0.4, "miou": 0.6}]})
    )
    (res / "pseudo_val_metrics.json").write_text(json.dumps({"miou_present": 0.7}))
    (res / "pseudo_val_sweep.json").write_text(
        json.dumps(
            {"bg_threshold": 0.45, "rows": [{"bg_threshold": 0.45, "miou": 0.7}, {"bg_threshold": 0.5, "miou": 0.71}]}
        )
    )
    (res / "deeplab_val_metrics.json").write_text(
        json.dumps({"no_crf": {"miou_present": 0.72}, "crf": {"miou_present": 0.8}})
    )
    (res / "deeplab").mkdir()
    (res / "deeplab/gate.json").write_text(json.dumps({"fit_miou": 0.765}))
    row = robustness.collect(tmp_path, "seed1", 360.0, 0)
    assert row["cam_peak"] == pytest.approx(62.0) and row["cam_peak_bg"] == 0.3
    assert row["pseudo_peak"] == pytest.approx(71.0) and row["pseudo_bg"] == 0.45 and row["verdict"] == "ok"
    line = robustness.format_table([row]).splitlines()[2]
    assert line == (
        "| seed1 | 0.900 | 432 | 60.0 (0.40) | 62.0 (0.30) | 70.0 (0.45) | 71.0 (0.50) | 76.5 | 72.0 "
        "| 80.0 | 6.0 min | ok |"
    )
    stopped = tmp_path / "logs" / "rb_seed2"
    stopped.mkdir(parents=True)
    (stopped / "seg_gate.log").write_text("INFO params {}\nerror: results/rb_seed2/deeplab/model.pt: DeepLab ...\n")
    assert robustness.collect(tmp_path, "seed2", None, 1)["gate"] == (
        "seg_gate: error: results/rb_seed2/deeplab/model.pt: DeepLab ..."
    )
    (stopped / "seg_gate.log").unlink()
    missing = robustness.collect(tmp_path, "seed2", None, 1)
    assert missing["verdict"] == "FAIL (no result, exit 1)" and "| – (–) |" in robustness.format_table([missing])


def test_method_seeds_plans_the_comparison_of_four_methods_three_seeds_three_datasets(tmp_path: Path) -> None:
    """bench/method_seeds.py is a thin caller of results/compare/methods.md: the dry run plans one classifier per
    method x seed x dataset up to the gate checkpoint. Planted bug: the variants' runs left out of compare.runs."""
    config = method_seeds.compare_config(
        BASE, ["vwl_l", "vwl_m", "cam", "recam"], [0, 1, 2], ["texture1.5", "nonconvex"]
    )
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", "results/compare/methods.md")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    assert jobs["train_cls"] == jobs["cls_verdict"] == 36 and jobs["prepare_dataset"] == 3
    assert jobs["compare_cls_gates"] == jobs["compare"] == 1


def test_method_seeds_without_the_default_data_compares_only_the_variants() -> None:
    """--no-default (the default data's runs built on their own): the variants' runs alone, each on its own dataset
    with the base run's settings. Planted bugs: the default run kept, a variant run left on the default data."""
    config = method_seeds.compare_config(BASE, ["cam"], [0], ["texture1.5", "nonconvex"], default=False)
    assert list(config["runs"]) == ["synth_texture1_5", "synth_nonconvex"]
    assert config["compare"]["methods"]["runs"] == ["synth_texture1_5", "synth_nonconvex"]
    for name in config["runs"]:
        assert config["runs"][name] == {**BASE["runs"]["synth"], "dataset": name}
    assert config["datasets"]["synth_texture1_5"]["texture_scale"] == 1.5
    with_default = method_seeds.compare_config(BASE, ["cam"], [0], ["texture1.5"])
    assert list(with_default["runs"]) == ["synth", "synth_texture1_5"]


def test_until_gates_targets_and_row_read_the_early_gates(tmp_path: Path) -> None:
    """--until gates builds cls/gate.json and cam/gate.json only and its row compares with the label prior and the
    trivial maps as the gates do. Planted bugs: the gap closed as value − prior (0.40 here, not 0.80), a class below
    gates.min_class_images or a pair below gates.min_gate_pairs judged."""
    assert robustness.targets("rb_seed1", "gates") == [
        "results/rb_seed1/cls/gate.json",
        "results/rb_seed1/cam/gate.json",
    ]
    write_config(tmp_path, robustness.bench_config(BASE, ["seed1", "paired"], False))
    res = tmp_path / "results" / "rb_seed1"
    (res / "cls").mkdir(parents=True)
    (res / "cam").mkdir()
    classes = {
        "a": {"positives": 20, "negatives": 30, "prevalence": 0.4, "ap": 0.94},  # gain 0.9
        "b": {"positives": 2, "negatives": 48, "prevalence": 0.04, "ap": 0.05},  # too few positives: not judged
        "c": {"positives": 25, "negatives": 25, "prevalence": 0.5, "ap": 0.8},  # gain 0.6: the least
    }
    (res / "cls" / "heldout.json").write_text(
        json.dumps({"f1": 0.9, "baseline_f1": 0.5, "map": 0.9, "prior_map": None, "steps": 432,
                    "prior": {"prior_map": 0.5, "classes": classes}})
    )  # fmt: skip
    (res / "cls" / "gate.json").write_text(json.dumps({"passed": True}))
    evidence = {
        "bg_score": 0.35,
        "classes": {"a": {"pairs": 20, "evidence": 0.2, "evidence_se": 0.05},
                    "b": {"pairs": 2, "evidence": -0.5, "evidence_se": 0.1},
                    "c": {"pairs": 25, "evidence": 0.1, "evidence_se": 0.04}},
        "pairs": {"a|b": {"images": 2, "iou": 0.9}, "a|c": {"images": 6, "iou": 0.3}},
    }  # fmt: skip
    (res / "cam" / "gate.json").write_text(json.dumps({"passed": True, "evidence": evidence}))
    row = robustness.collect_gates(tmp_path, "seed1", 300.0, 0)
    assert row["least_class_gain"] == ("c", pytest.approx(0.6))
    assert row["least_cam_evidence"] == ("c", 0.1, 0.04) and row["largest_overlap"] == ("a|c", 0.3, 6)
    assert row["verdict"] == "passes both"
    line = robustness.format_gates_table([row]).splitlines()[2]
    assert line == (
        "| seed1 | 0.900 / 0.500 (0.80) | 0.900 / 0.500 (0.80) | c 0.60 | c 0.100 ± 0.040 (0.35) | a|c 0.30 (6) "
        "| 5.0 min | passes both |"
    )
    logs = tmp_path / "logs" / "rb_paired"
    logs.mkdir(parents=True)
    (logs / "cam_gate.log").write_text("error: results/rb_paired/cam: the CAMs of a, c overlap ...\n")
    stopped = robustness.collect_gates(tmp_path, "paired", 200.0, 1)
    assert stopped["verdict"] == "cam_gate" and stopped["least_cam_evidence"] is None
