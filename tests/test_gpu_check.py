"""bench/gpu_check.py --cpu: every part of the GPU check (CUDA unit checks, per-stage training and CAM speed, the
DAG) runs at tiny sizes, so the script cannot rot between the rare runs on a GPU; and a run cut short or hit by a
failing part still reports every row as it comes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

SCRIPT = str(REPO / "bench/gpu_check.py")


def _rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| part")
    ]


@pytest.mark.slow
def test_cpu_smoke_run_covers_every_part(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import LIMITS

    out = tmp_path / "rows.json"
    run = subprocess.run(
        [sys.executable, SCRIPT, "--cpu", "--json", str(out)], capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    rows = _rows(run.stdout)
    assert [r["part"] for r in json.loads(out.read_text())["rows"]] == [r[0] for r in rows]
    assert set(LIMITS) == {r[0] for r in rows}  # every part reported
    assert all(r[3] not in ("FAILED", "TIMEOUT") for r in rows), rows
    checks = [(r[0], r[2].split(",")[0]) for r in rows]
    for stage in ("train_cls", "train_irn", "train_seg"):
        assert (stage, "float32") in checks and (stage, "bfloat16") in checks
    for row in rows:
        if row[0].startswith("train_") or row[0] == "infer_cam":
            assert row[3].endswith(" img/s") and float(row[3].split()[0]) > 0, row
        if row[0] in ("resume", "fit_amp", "cam", "walk", "syncbn", "lease", "tests"):
            assert row[3] in ("ok", "passed", "ok"), row
    dag = next(r for r in rows if r[0] == "dag")
    assert dag[2] == "device: cpu, tiny dataset (dataset only)" and dag[3].endswith(" s")


def test_rows_come_as_parts_finish_and_a_failing_or_hanging_part_does_not_stop_the_rest(tmp_path: Path) -> None:
    """resume runs, walk raises, syncbn hangs past its limit, lease runs: each row is printed (flushed) when its
    part ends — resume's while the run is still going — and the JSON file has them all. Planted bugs caught: rows
    printed only at the end (resume's row arrives after the exit); an uncaught timeout (no lease row, a
    traceback); a part's exception ending the run."""
    out = tmp_path / "rows.json"
    cmd = [
        sys.executable,
        SCRIPT,
        "--cpu",
        "--json",
        str(out),
        "--only",
        "resume",
        "walk",
        "syncbn",
        "lease",
        "--fault",
        "walk:raise",
        "--fault",
        "syncbn:hang",
        "--limit",
        "syncbn=8",  # the hang: resume's and lease's rows come at least these 8 s apart
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the script must flush by itself
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    arrivals: list[tuple[str, bool, float]] = []  # (line, run still going, time)
    start = time.monotonic()
    for line in proc.stdout:
        arrivals.append((line, proc.poll() is None, time.monotonic() - start))  # noqa: PERF401
    stderr = proc.stderr.read()
    proc.wait(timeout=600)
    text = "".join(line for line, _, _ in arrivals)
    rows = _rows(text)
    assert [r[0] for r in rows] == ["resume", "resume", "walk", "syncbn", "lease"], text + stderr[-2000:]
    assert rows[0][3] == "ok" and rows[-1][3] == "ok", text
    assert rows[2][1] == "FAILED" and "planted failure in walk" in rows[2][4], rows[2]
    assert rows[3][1] == "TIMEOUT" and rows[3][2] == "over 8 s", rows[3]
    first = next(a for a in arrivals if a[0].startswith("| resume"))
    last = next(a for a in arrivals if a[0].startswith("| lease"))
    assert first[1] and last[2] - first[2] > 7, "resume's row must come out before the hanging part ends"
    assert proc.returncode == 1
    record = json.loads(out.read_text())
    assert [r["part"] for r in record["rows"]] == [r[0] for r in rows] and record["device"].startswith("CPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line() -> None:
    run = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: gpu_check: no CUDA device visible (use --cpu for the smoke run)"
