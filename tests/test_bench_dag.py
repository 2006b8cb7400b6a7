"""bench/bench_dag.py: Snakemake's main log, benchmark TSVs and stage logs → per-job times, critical path, idle
cores, start-up overhead (a hand-made run with known answers), and one real run of a tiny target."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, tiny_config

_spec = importlib.util.spec_from_file_location("bench_dag", REPO / "bench" / "bench_dag.py")
bench_dag = importlib.util.module_from_spec(_spec)
sys.modules["bench_dag"] = bench_dag  # dataclasses look their module up
_spec.loader.exec_module(bench_dag)

# Four jobs on 2 cores: prep (0–10 s) → {train (10–70 s, 2 threads), other (10–30 s)}; report needs both
# (70–75 s). The heaviest chain is prep → train → report = 10 + 58 + 4 = 72 s (benchmark walls).
MAIN_LOG = """Building DAG of jobs...
Provided cores: 2
[Tue Dec  1 10:00:00 2026]
localrule prep:
    output: resources/d/labels.tsv, resources/d/classes.txt
    log: logs/prep.log
    jobid: 3
    benchmark: benchmarks/prep.tsv
    reason: Missing output files: resources/d/labels.tsv
    wildcards: dataset=d
    resources: tmpdir=/tmp
[Tue Dec  1 10:00:10 2026]
Finished jobid: 3 (Rule: prep)
1 of 4 steps (25%) done
[Tue Dec  1 10:00:10 2026]
rule train:
    input: resources/d/labels.tsv, resources/d/classes.txt
    output: results/r/model.pt
    log: logs/train.log
    jobid: 2
    benchmark: benchmarks/train.tsv
    threads: 2
    resources: tmpdir=/tmp
[Tue Dec  1 10:00:10 2026]
rule other:
    input: resources/d/classes.txt
    output: results/r/shard_0
    log: logs/other.log
    jobid: 4
    benchmark: benchmarks/other.tsv
    resources: tmpdir=/tmp
[Tue Dec  1 10:00:30 2026]
Finished jobid: 4 (Rule: other)
[Tue Dec  1 10:01:10 2026]
Finished jobid: 2 (Rule: train)
[Tue Dec  1 10:01:10 2026]
localrule report:
    input: results/r/model.pt, results/r/shard_0/a.npz
    output: results/r/report.md
    jobid: 1
    resources: tmpdir=/tmp
[Tue Dec  1 10:01:15 2026]
Finished jobid: 1 (Rule: report)
4 of 4 steps (100%) done
Complete log(s): /x/.snakemake/log/2026-12-01T100000.snakemake.log
Elapsed time: 0:01:20.000000
"""

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _fake_run(root: Path) -> None:
    (root / ".snakemake/log").mkdir(parents=True)
    (root / ".snakemake/log/2026-12-01T100000.snakemake.log").write_text(MAIN_LOG)
    (root / "benchmarks").mkdir()
    (root / "logs").mkdir()
    for name, wall, cpu, rss, done in [
        ("prep", 10.0, 8.0, 50, 7.5),
        ("train", 58.0, 100.0, 900, 55.0),
        ("other", 20.0, 18.0, 300, None),
    ]:
        (root / f"benchmarks/{name}.tsv").write_text(
            BENCH_HEADER + f"{wall}\t0:00:{int(wall):02d}\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n"
        )
        text = "2026-12-01 10:00:02,000 INFO stage x\n" + (
            f"2026-12-01 10:00:09,000 INFO done in {done} s\n" if done is not None else "Traceback ...\n"
        )
        (root / f"logs/{name}.log").write_text(text)


def test_known_answers_from_a_hand_made_run(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    report = bench_dag.analyze(tmp_path, cores=2)
    jobs = {j.rule: j for j in report.jobs}
    assert [j.rule for j in report.jobs] == ["prep", "train", "other", "report"]
    assert jobs["prep"].wildcards == "dataset=d" and jobs["train"].threads == 2 and jobs["other"].threads == 1
    assert jobs["train"].wall == 58.0 and jobs["train"].cpu == 100.0 and jobs["train"].max_rss == 900
    assert jobs["report"].wall == 5.0  # no benchmark: finish − start from the main log
    deps = bench_dag.dependencies(report.jobs)
    assert deps == {3: set(), 2: {3}, 4: {3}, 1: {2, 4}}  # report's input lies inside the directory output shard_0
    assert [j.rule for j in report.path] == ["prep", "train", "report"]
    assert report.path_seconds == pytest.approx(10 + 58 + 5)
    assert report.wall == 80.0  # Snakemake's Elapsed time
    assert report.idle_fraction == pytest.approx(1 - (8 + 100 + 18) / (2 * 80))
    assert report.reserved_fraction == pytest.approx((10 + 2 * 58 + 20 + 5) / (2 * 80))
    assert jobs["prep"].overhead == pytest.approx(2.5) and jobs["train"].overhead == pytest.approx(3.0)
    assert jobs["other"].overhead is None  # no "done in": unknown, not zero
    text = bench_dag.format_report(report)
    assert "critical path: 73.0 s (91 % of the wall): prep[dataset=d] -> train -> report" in text
    assert "start-up overhead: 5.5 s over 2 stage jobs (mean 2.8 s), 5.5 s on the critical path" in text


def test_runs_a_tiny_target_from_an_empty_workdir(tmp_path: Path) -> None:
    """The real thing on the cheapest target (the tiny synthetic dataset): Snakemake's own log format parses, the
    job's benchmark and stage log are found, and the checkout's results/ is not touched."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    workdir = tmp_path / "dag"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/bench_dag.py"),
            "--configfile",
            str(config),
            "--cores",
            "1",
            "--workdir",
            str(workdir),
            "resources/synth/labels.tsv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    row = next(line for line in lines if line.startswith("prepare_dataset[dataset=synth]"))
    fields = row.split()
    wall, cpu, startup = float(fields[2]), float(fields[3]), float(fields[7])
    assert fields[-1] == "*" and 0 < wall < 120 and cpu >= 0 and 0 <= startup <= wall
    assert "jobs: 1, cores: 1" in run.stdout and "critical path:" in run.stdout and "idle-core fraction" in run.stdout
    assert (workdir / "resources/synth/labels.tsv").is_file()
    again = subprocess.run(
        [sys.executable, str(REPO / "bench/bench_dag.py"), "--configfile", str(config), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode != 0 and again.stderr.strip().splitlines()[-1].startswith("error: ")  # not empty
