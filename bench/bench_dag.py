#!/usr/bin/env python
"""Benchmark a whole DAG: run a target from an empty working directory and report, per job and in total, where
the wall time goes.

The run happens in a scratch working directory (``--workdir``, default a new temporary folder; nothing of the
checkout's ``results/``, ``resources/``, ``logs/`` or ``benchmarks/`` is read or written) with this checkout's
Snakefile and a copy of the config (``--configfile``, default ``config.yaml``; ``--config`` overrides as for
Snakemake), so the default target starts from nothing, dataset preparation included. ``--analyze DIR`` only reads
an earlier run's working directory.

Read back from Snakemake's own records: the main log (``.snakemake/log/*.snakemake.log``: each job's rule,
wildcards, inputs, outputs, threads, log and benchmark files, start and finish to the second), the ``benchmark:``
TSVs (wall ``s`` and ``cpu_time`` of the job's command, ``max_rss``) and each stage's log (``wsss.runtime.cli.run_stage``
ends it with ``done in X s``, the time from the parsed arguments to the end: the useful work). Printed:

- per job: start (s after the first job), wall, CPU seconds, CPU/wall, peak RSS, and the start-up overhead =
  benchmark wall − the stage's own ``done in`` time (interpreter start, imports, GPU lease; exit is negligible);
- the critical path: the chain of dependent jobs (job B depends on A when an input of B is an output of A or lies
  inside one) with the largest summed wall time, a lower bound of the DAG's wall time on unlimited cores;
- the idle-core fraction: 1 − Σ CPU seconds / (cores × DAG wall), and the reserved-core fraction
  Σ threads × wall / (cores × DAG wall) (what the scheduler kept busy on paper);
- the start-up overhead summed over all jobs and over the critical path.

    python bench/bench_dag.py                                        # the default target, all cores
    python bench/bench_dag.py --cores 2 results/synth/cam_val_miou.txt
    python bench/bench_dag.py --configfile my.yaml --workdir /tmp/dag --keep
    python bench/bench_dag.py --analyze /tmp/dag                      # report an earlier run again
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_FIELD = re.compile(r"^    (\w+): (.*)$")
_ELAPSED = re.compile(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_DONE = re.compile(r"\bdone in ([0-9.]+) s\s*$")


@dataclass
class Job:
    """One executed job as Snakemake's main log and its benchmark/stage log files describe it."""

    jobid: int
    rule: str
    start: datetime
    wildcards: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    benchmark: str | None = None
    threads: int = 1
    end: datetime | None = None
    wall: float | None = None  # benchmark s, else end − start (1 s resolution)
    cpu: float = 0.0  # benchmark cpu_time
    max_rss: float | None = None  # MB
    useful: float | None = None  # the stage's "done in X s"

    @property
    def name(self) -> str:
        return f"{self.rule}[{self.wildcards}]" if self.wildcards else self.rule

    @property
    def overhead(self) -> float | None:
        """Benchmark wall − the stage's own time: start-up (interpreter, imports, lease) before the useful work."""
        if self.wall is None or self.useful is None:
            return None
        return max(0.0, self.wall - self.useful)


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(", ") if v.strip()]


def parse_main_log(text: str) -> tuple[list[Job], float | None]:
    """Jobs (in start order) and the ``Elapsed time`` in seconds (None if the run did not end) of a Snakemake
    main log."""
    jobs: dict[int, Job] = {}
    order: list[int] = []
    stamp: datetime | None = None
    current: Job | None = None
    elapsed = None
    for line in text.splitlines():
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            current = None
            continue
        if (m := _RULE.match(line)) and stamp is not None:
            current = Job(jobid=-1, rule=m.group(1), start=stamp)
            continue
        if current is not None and (m := _FIELD.match(line)):
            key, value = m.groups()
            if key == "jobid":
                current.jobid = int(value)
                jobs[current.jobid] = current
                order.append(current.jobid)
            elif key == "input":
                current.inputs = _split_list(value)
            elif key == "output":
                current.outputs = _split_list(value)
            elif key == "log":
                current.log = _split_list(value)
            elif key == "benchmark":
                current.benchmark = value.strip()
            elif key == "threads":
                current.threads = int(value)
            elif key == "wildcards":
                current.wildcards = value.strip()
            continue
        if (m := _FINISHED.match(line)) and stamp is not None:
            job = jobs.get(int(m.group(1)))
            if job is not None:
                job.end = stamp
            current = None
            continue
        if m := _ELAPSED.match(line):
            elapsed = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        current = None if not line.startswith("    ") else current
    return [jobs[i] for i in order], elapsed


def read_benchmark(path: Path) -> dict[str, float]:
    """The last row of a Snakemake benchmark TSV as {column: number} (non-numbers and 'NA' left out)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:  # noqa: SIM105
            out[key] = float(value)
        except (TypeError, ValueError):
            pass
    return out


def stage_seconds(path: Path) -> float | None:
    """The ``done in X s`` of a stage log (``wsss.runtime.cli.run_stage``'s last line), None when absent."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = _DONE.findall(text)
    return float(found[-1]) if found else None


def fill_in(jobs: list[Job], workdir: Path) -> None:
    """Add benchmark wall/CPU/RSS and the stages' own times from the files under ``workdir``."""
    for job in jobs:
        if job.benchmark and (workdir / job.benchmark).is_file():
            bench = read_benchmark(workdir / job.benchmark)
            job.wall = bench.get("s")
            job.cpu = bench.get("cpu_time", 0.0)
            job.max_rss = bench.get("max_rss")
        if job.wall is None and job.end is not None:
            job.wall = (job.end - job.start).total_seconds()
        times = [t for t in (stage_seconds(workdir / p) for p in job.log) if t is not None]
        job.useful = max(times) if times else None


def dependencies(jobs: list[Job]) -> dict[int, set[int]]:
    """{jobid: the jobids it depends on}: B depends on A when an input of B is an output of A or lies inside one
    (directory outputs)."""
    producers: dict[str, int] = {}
    for job in jobs:
        for out in job.outputs:
            producers[os.path.normpath(out)] = job.jobid
    deps: dict[int, set[int]] = {job.jobid: set() for job in jobs}
    for job in jobs:
        for item in job.inputs:
            path = os.path.normpath(item)
            while path not in ("", ".", os.sep):
                if path in producers and producers[path] != job.jobid:
                    deps[job.jobid].add(producers[path])
                    break
                path = os.path.dirname(path)
    return deps


def critical_path(jobs: list[Job], deps: dict[int, set[int]]) -> tuple[float, list[Job]]:
    """(summed wall, jobs in order) of the dependency chain with the largest summed wall time."""
    by_id = {job.jobid: job for job in jobs}
    best: dict[int, tuple[tuple[float, int], int | None]] = {}

    def longest(jobid: int) -> tuple[float, int]:
        """(summed wall, jobs) of the heaviest chain ending at ``jobid`` (ties: the longer chain)."""
        if jobid not in best:
            best[jobid] = ((0.0, 0), None)  # cycle guard (a DAG has none)
            pred = max(sorted(d for d in deps.get(jobid, ()) if d in by_id), key=longest, default=None)
            seconds, count = longest(pred) if pred is not None else (0.0, 0)
            best[jobid] = ((seconds + (by_id[jobid].wall or 0.0), count + 1), pred)
        return best[jobid][0]

    if not jobs:
        return 0.0, []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * len(jobs) + 100))
    end = max(by_id, key=longest)
    chain = []
    node: int | None = end
    while node is not None:
        chain.append(by_id[node])
        node = best[node][1]
    return best[end][0][0], chain[::-1]


@dataclass
class Report:
    jobs: list[Job]
    cores: int
    wall: float
    path_seconds: float
    path: list[Job]

    @property
    def idle_fraction(self) -> float:
        return max(0.0, 1.0 - sum(j.cpu for j in self.jobs) / (self.cores * self.wall)) if self.wall > 0 else 0.0

    @property
    def reserved_fraction(self) -> float:
        total = sum(j.threads * (j.wall or 0.0) for j in self.jobs)
        return total / (self.cores * self.wall) if self.wall > 0 else 0.0


def main_log(workdir: Path) -> Path:
    """The newest Snakemake main log of a working directory."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"error: {workdir}: no Snakemake log under .snakemake/log (has Snakemake run there?)")
    return logs[-1]


def analyze(workdir: Path, cores: int, wall: float | None = None) -> Report:
    """Read a finished run's records in ``workdir`` (see the module doc); ``wall`` defaults to Snakemake's
    ``Elapsed time``."""
    jobs, elapsed = parse_main_log(main_log(workdir).read_text(errors="replace"))
    fill_in(jobs, workdir)
    if wall is None:
        wall = elapsed
    if wall is None:
        ends = [j.end for j in jobs if j.end is not None]
        wall = (max(ends) - min(j.start for j in jobs)).total_seconds() if ends else 0.0
    seconds, path = critical_path(jobs, dependencies(jobs))
    return Report(jobs, cores, wall, seconds, path)


def _num(value: float | None, fmt: str = "8.1f") -> str:
    return format(value, fmt) if value is not None else format("–", ">" + fmt[:-1].split(".")[0] + "s")


def format_report(report: Report) -> str:
    """The tables and totals as text."""
    jobs = report.jobs
    t0 = min((j.start for j in jobs), default=None)
    on_path = {j.jobid for j in report.path}
    width = max([len(j.name) for j in jobs] + [3])
    lines = [
        f"{'job':<{width}} {'start':>6} {'wall s':>8} {'cpu s':>8} {'cpu/wall':>8} {'rss MB':>8} "
        f"{'thr':>3} {'startup':>8}  path"
    ]
    for j in sorted(jobs, key=lambda j: (j.start, j.jobid)):
        ratio = j.cpu / j.wall if j.wall else None
        lines.append(
            f"{j.name:<{width}} {(j.start - t0).total_seconds():>6.0f} {_num(j.wall)} {_num(j.cpu)} "
            f"{_num(ratio, '8.2f')} {_num(j.max_rss, '8.0f')} {j.threads:>3} {_num(j.overhead)}  "
            f"{'*' if j.jobid in on_path else ''}"
        )
    overheads = [j.overhead for j in jobs if j.overhead is not None]
    path_overheads = [j.overhead for j in report.path if j.overhead is not None]
    lines += [
        "",
        f"jobs: {len(jobs)}, cores: {report.cores}, DAG wall: {report.wall:.1f} s",
        f"critical path: {report.path_seconds:.1f} s ({100 * report.path_seconds / report.wall:.0f} % of the wall): "
        + " -> ".join(j.name for j in report.path)
        if report.wall > 0
        else "critical path: –",
        f"CPU: {sum(j.cpu for j in jobs):.1f} s of {report.cores * report.wall:.1f} core-seconds; idle-core "
        f"fraction {report.idle_fraction:.2f}; reserved {report.reserved_fraction:.2f}",
        f"start-up overhead: {sum(overheads):.1f} s over {len(overheads)} stage jobs "
        f"(mean {sum(overheads) / max(1, len(overheads)):.1f} s), {sum(path_overheads):.1f} s on the critical path",
    ]
    return "\n".join(lines)


def run_dag(
    workdir: Path,
    configfile: Path,
    targets: list[str],
    cores: int,
    config: list[str],
    snakefile: Path = REPO / "Snakefile",
    extra: list[str] | None = None,
) -> float:
    """Run Snakemake in ``workdir`` (a copy of ``configfile`` as its config.yaml); the wall seconds. A failed run
    is a one-line error with the log's tail on stderr."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("results", "logs", "benchmarks", ".snakemake"):
        if (workdir / name).exists():
            raise SystemExit(f"error: {workdir / name}: the working directory is not empty (use a new --workdir)")
    shutil.copyfile(configfile, workdir / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--cores", str(cores), *targets]
    if config:
        cmd += ["--config", *config]
    cmd += extra or []
    start = time.perf_counter()
    with open(workdir / "snakemake.out", "w") as out:
        proc = subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (workdir / "snakemake.out").read_text(errors="replace").splitlines()[-20:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"error: {workdir / 'snakemake.out'}: Snakemake failed (exit {proc.returncode})")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: the default target)")
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="Snakemake --config overrides")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, help="scratch working directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    parser.add_argument("--analyze", type=Path, metavar="DIR", help="only report the run already in DIR")
    args = parser.parse_args(argv)
    if args.analyze:
        print(format_report(analyze(args.analyze, args.cores)))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsss-dag-"))
    try:
        wall = run_dag(workdir, args.configfile, args.targets, args.cores, args.config)
        print(f"working directory: {workdir}")
        print(format_report(analyze(workdir, args.cores, wall)))
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
