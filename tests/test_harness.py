"""The test harness itself: required prerequisites fail instead of skipping, a per-test timeout is set, and a
timed-out subprocess takes its whole process group with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import require_or_skip, run_group


def test_missing_prerequisite_skips_unless_required(monkeypatch) -> None:
    monkeypatch.delenv("WSSS_REQUIRE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        require_or_skip("chromium", "no chromium")
    monkeypatch.setenv("WSSS_REQUIRE", "slurm, chromium")
    with pytest.raises(pytest.fail.Exception, match="no chromium .required: chromium is in WSSS_REQUIRE"):
        require_or_skip("chromium", "no chromium")
    monkeypatch.setenv("WSSS_REQUIRE", "slurm")
    with pytest.raises(pytest.skip.Exception):
        require_or_skip("chromium", "no chromium")


def test_ci_requires_the_cluster_and_browser_tests(repo: Path) -> None:
    ci = (repo / ".ci" / "run").read_text()
    assert 'WSSS_REQUIRE="${WSSS_REQUIRE-slurm,chromium}"' in ci
    assert ci.index("WSSS_REQUIRE") < ci.index("-m pytest")


def test_every_test_has_a_timeout(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) >= 1200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (killed, not yet reaped by init) counts as gone
        return fh.read().split(") ", 1)[1][0] != "Z"


def test_timed_out_command_takes_its_process_group_with_it(tmp_path: Path) -> None:
    """A shell that started a background grandchild (as Snakemake starts its jobs) times out: both are killed."""
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(["sh", "-c", script], tmp_path, timeout=2)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_run_group_returns_the_completed_process(tmp_path: Path) -> None:
    proc = run_group([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "out\n")


def test_an_xdist_group_runs_in_one_worker(tmp_path: Path) -> None:
    """``--dist loadgroup`` keeps an ``xdist_group``'s tests in one worker, in their order, as the suite relies on
    (conftest: the tiny build, then the SLURM test on it). With pytest 9.2 and pytest-xdist 3.8 the mark is dropped
    without a word (pytest-dev/pytest-xdist#1386) and the six tests below spread over both workers."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.xdist_group('g')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_member(i):\n"
        "    with open(os.environ['ORDER_FILE'], 'a') as fh:\n"
        "        fh.write(f\"{os.environ['PYTEST_XDIST_WORKER']} {i}\\n\")\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_single(i):\n"
        "    pass\n"
    )
    order = tmp_path / "order.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider", "-p",
         "no:randomly", str(tmp_path / "test_grouped.py")],
        cwd=tmp_path, env={**os.environ, "ORDER_FILE": str(order)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.split() for line in order.read_text().splitlines()]
    assert len({worker for worker, _ in rows}) == 1, rows
    assert [int(i) for _, i in rows] == list(range(6))
