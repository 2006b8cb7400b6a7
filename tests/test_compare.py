"""The comparison target's pieces (wsss/outputs/compare.py): run expansion, reading a run's results and gate verdicts,
benchmark times per stage, the table's statistics. The DAG itself: tests/test_workflow-style run in
test_compare_target_on_the_tiny_config (slow)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from wsss.outputs.compare import STAGE_RULES, RunResult, compare_runs, compare_table, read_run, stage_times
from wsss.runtime.config import load_schema, validate_config
from wsss.runtime.errors import InputError

SCHEMA = load_schema(REPO / "schemas" / "config.schema.yaml")
SPLITS = {"cam_split": "val", "pseudo_split": "val", "seg_split": "val"}


def _config(compare: dict) -> dict:
    return validate_config(
        {
            "runs": {
                "a": {"dataset": "synth", "method": "vwl_l"},
                "b": {"dataset": "synth", "method": "cam", "cls": {"crop": 128}},
            },
            "compare": compare,
        },
        SCHEMA,
    )


def test_expansion_methods_by_runs_by_seeds() -> None:
    """Planted bug: the derived run keeping the base run's method fails the method check."""
    config = _config({"t": {"runs": ["a", "b"], "methods": ["cam", "recam"], "seeds": [3, 4]}})
    runs = compare_runs(config, "t")
    assert [r["run"] for r in runs] == [
        "a-cam_s3",
        "a-cam_s4",
        "a-recam_s3",
        "a-recam_s4",
        "b-cam_s3",
        "b-cam_s4",
        "b-recam_s3",
        "b-recam_s4",
    ]
    entry = config["runs"]["b-recam_s4"]
    assert entry["method"] == "recam" and entry["cls"]["crop"] == 128
    assert (entry["cls"]["seed"], entry["irn"]["seed"], entry["seg"]["seed"]) == (4, 4, 4)
    assert validate_config(config, SCHEMA)["runs"] == config["runs"]  # idempotent


def test_expansion_reuses_the_base_run_and_checks_names() -> None:
    """Planted bug: reusing the base run without comparing its seg seed (default 0) fails the first assertion."""
    assert [r["run"] for r in compare_runs(_config({"t": {"runs": ["a"], "seeds": [1]}}), "t")] == ["a-vwl_l_s1"]
    config = _config({"t": {"runs": ["a"], "seeds": [1]}})
    config["runs"]["a"]["seg"] = {"seed": 1}
    assert [r["run"] for r in compare_runs(config, "t")] == ["a"]
    with pytest.raises(InputError, match="compare.t.runs: 'zz' is not a run"):
        _config({"t": {"runs": ["zz"]}})
    with pytest.raises(InputError, match="compare.t.methods: 'nosuch' is not a method"):
        _config({"t": {"runs": ["a"], "methods": ["nosuch"]}})


def test_stage_times_sum_shards_and_map_rules(tmp_path: Path) -> None:
    """calibrate_pseudo is IRN, calibrate is CAM; shards add up; the CPU column is read on its own. Planted bugs:
    matching rule prefixes in dict order (calibrate before calibrate_pseudo); the wall column read for the CPU time."""

    def bench(rel: str, seconds: float) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:01\t10\t{seconds / 4}\n")

    bench("train_cls.tsv", 10)
    bench("calibrate.tsv", 1)
    bench("calibrate_pseudo.tsv", 2)
    bench("infer_cam/val_0.tsv", 3)
    bench("infer_cam/val_1.tsv", 4)
    bench("crf/val_0.tsv", 5)
    bench("eval_seg_val.tsv", 6)
    bench("report_figures.tsv", 100)
    times = stage_times(tmp_path, "s", "cpu_time")
    assert times["s"] == {"CAM": 18.0, "IRN": 2.0, "DeepLab": 6.0, "CRF": 5.0}
    assert times["cpu_time"] == {"CAM": 4.5, "IRN": 0.5, "DeepLab": 1.5, "CRF": 1.25}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_read_run_stops_at_a_gate(tmp_path: Path) -> None:
    """A run stopped by the seg gate has CAM and pseudo numbers, no DeepLab, and the gate's line; a missing
    metrics file past a passed gate is an error naming the file."""
    res = tmp_path / "results" / "r"
    _write(res / "cls" / "heldout.json", {"f1": 0.8})
    _write(res / "cls" / "verdict.json", {"passed": True, "message": "ok"})
    _write(res / "cam_val_metrics.json", {"miou_present": 0.5})
    _write(res / "cam_val_sweep.json", {"bg_score": 0.3, "rows": [{"miou": 0.4}, {"miou": 0.55}]})
    _write(res / "cam" / "verdict.json", {"passed": True, "message": "ok"})
    _write(res / "pseudo_val_metrics.json", {"miou_present": 0.6})
    _write(res / "pseudo_val_sweep.json", {"bg_threshold": 0.2, "rows": [{"miou": 0.61}]})
    _write(res / "deeplab" / "verdict.json", {"passed": False, "message": "DeepLab reproduces ..."})
    r = read_run(tmp_path, {"run": "r", "dataset": "synth", "method": "cam", "seed": 0}, SPLITS)
    assert r.metrics == {"cam": 50.0, "pseudo": 60.0} and r.oracle == pytest.approx({"cam": 55.0, "pseudo": 61.0})
    assert r.stopped and r.seg_gate == "stopped" and r.gate_lines == ["r: seg gate: DeepLab reproduces ..."]
    _write(res / "deeplab" / "verdict.json", {"passed": True, "message": "ok"})
    with pytest.raises(InputError, match="deeplab_val_metrics.json: DeepLab metrics file is missing"):
        read_run(tmp_path, {"run": "r", "dataset": "synth", "method": "cam", "seed": 0}, SPLITS)


def test_table_mean_and_sample_std_over_seeds() -> None:
    """Mean ± sample std (n − 1) over the seeds that got there; a stopped seed is (k/n), not a zero; the wall and CPU
    time tables each from their own numbers. Planted bugs: counting a stopped seed's missing DeepLab as 0; the CPU
    table filled from the wall times."""
    rows = [
        RunResult(
            "r_s0",
            "synth",
            "cam",
            0,
            0.8,
            cls_gate="passed",
            cam_gate="passed",
            seg_gate="passed",
            metrics={"cam": 40.0, "pseudo": 50.0, "deeplab": 60.0, "deeplab_crf": 61.0},
        ),
        RunResult(
            "r_s1",
            "synth",
            "cam",
            1,
            0.9,
            cls_gate="passed",
            cam_gate="passed",
            seg_gate="passed",
            metrics={"cam": 44.0, "pseudo": 54.0, "deeplab": 66.0, "deeplab_crf": 67.0},
        ),
        RunResult(
            "r_s2",
            "synth",
            "cam",
            2,
            0.7,
            cls_gate="passed",
            cam_gate="passed",
            seg_gate="stopped",
            metrics={"cam": 42.0, "pseudo": 52.0},
        ),
    ]
    for r, wall, cpu in zip(rows, (10.0, 20.0, 30.0), (4.0, 6.0, 8.0)):
        r.times, r.cpu_times = dict.fromkeys(STAGE_RULES, wall), dict.fromkeys(STAGE_RULES, cpu)
    text = compare_table("t", rows, SPLITS)
    wall_part, cpu_part = text.split("Wall time per stage", 1)[1].split("CPU time per stage", 1)
    for part, stage, total in ((wall_part, "20 ± 10", "80 ± 40"), (cpu_part, "6 ± 2", "24 ± 8")):
        line = next(x for x in part.splitlines() if x.startswith("| synth | cam |"))
        assert [c.strip() for c in line.split("|")[3:-1]] == [stage] * len(STAGE_RULES) + [total]
    line = next(x for x in text.splitlines() if x.startswith("| synth | cam | 3 |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[3] == f"42.00 ± {statistics.stdev([40, 44, 42]):.2f}"
    assert cells[5] == "63.00 ± 4.24 (2/3)"
    assert cells[9] == "0.800 ± 0.100"
    assert cells[10] == "s2 stopped at seg gate"
    rows[1].seg_gate, rows[1].metrics = "stopped", {"cam": 44.0, "pseudo": 54.0}
    line = next(x for x in compare_table("t", rows, SPLITS).splitlines() if x.startswith("| synth | cam | 3 |"))
    assert [c.strip() for c in line.split("|")[1:-1]][5:7] == ["60.00 (1/3)", "61.00 (1/3)"]  # one seed: no ± 0.00


def test_schema_rejects_a_bad_compare_entry() -> None:
    with pytest.raises(InputError, match="compare.t"):
        validate_config(yaml.safe_load("runs: {a: {dataset: synth}}\ncompare: {t: {seeds: [0]}}"), SCHEMA)


@pytest.mark.slow
def test_a_run_stopped_by_a_gate_shows_in_the_table_and_the_target_completes(tmp_path: Path) -> None:
    """The tiny config, methods cam and recam, one seed, with gates.min_cls_f1 above what a classifier trained for
    a few steps reaches: both runs stop at the cls gate, and results/compare/t.md still gets written, showing them
    as stopped (no DeepLab is trained). Planted bug: compare_inputs asking for a stopped run's CAM metrics fails
    the target (infer_cam waits on the failing cls_gate)."""
    from helpers import snakemake, tiny_config, write_config

    config = tiny_config("cam")
    config["runs"]["tiny"]["cls"].update(epochs=0.3, recam_epochs=0.3)
    config["gates"]["min_cls_f1"] = 1.0
    config["compare"] = {"t": {"runs": ["tiny"], "methods": ["cam", "recam"], "seeds": [0]}}
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "results/compare/t.md", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "results" / "compare" / "t.md").read_text()
    records = json.loads((tmp_path / "results" / "compare" / "t.json").read_text())
    assert [r["run"] for r in records] == ["tiny-cam_s0", "tiny-recam_s0"]
    assert all(r["stopped"] and r["cls_gate"] == "stopped" and r["metrics"] == {} for r in records)
    assert "s0 stopped at cls gate" in text and (tmp_path / "results" / "compare" / "t.png").stat().st_size > 0
    assert not (tmp_path / "results" / "tiny-cam_s0" / "deeplab").exists()
