"""A killed stage leaves no garbage: SIGTERM/SIGINT unwind it (temporary outputs removed, non-zero exit), and
what SIGKILL leaves behind is swept when the output is next written."""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIG = {"image_size": 64, "num_classes": 2, "num_train_aug": 20000, "num_train": 10, "num_val": 10, "max_objects": 1}
SMALL = {**BIG, "num_train_aug": 12}


def _default_signals() -> None:
    """In the child: SIGINT/SIGTERM at their default actions, as from a terminal or Snakemake (a shell that starts
    pytest in the background leaves SIGINT ignored, and an ignored signal is inherited and respected)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(out: Path, params: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "stages" / "prepare_dataset.py"),
            "--kind",
            "synth",
            "--params",
            json.dumps(params),
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )


def _wait_for_temp(parent: Path, proc: subprocess.Popen, min_files: int = 5) -> Path:
    """The stage's temporary output folder, once it holds a few images (the stage is mid-write)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        for temp in parent.glob(".synth.*.tmp"):
            images = temp / "JPEGImages"
            if images.is_dir() and sum(1 for _ in images.iterdir()) >= min_files:
                return temp
        time.sleep(0.05)
    raise AssertionError("the stage never started writing")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stage_removes_temp_and_rerun_completes(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "synth"
    proc = _start(out, BIG)
    try:
        temp = _wait_for_temp(tmp_path, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert not temp.exists() and list(tmp_path.iterdir()) == []  # no temp, no partial output

    rerun = _start(out, SMALL)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
    assert len(list((out / "JPEGImages").iterdir())) == SMALL["num_train_aug"] + SMALL["num_val"]


def test_sigkill_leftover_swept_by_the_rerun(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: its temp folder stays, named with the dead pid, and the next run removes it."""
    out = tmp_path / "synth"
    proc = _start(out, BIG)
    try:
        temp = _wait_for_temp(tmp_path, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert temp.exists() and f"-{proc.pid}-" in temp.name
    rerun = _start(out, SMALL)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "stale temp" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_child_process_does_not_unwind_the_parent_stack() -> None:
    """A process forked inside a stage (DataLoader worker, CRF pool) dies of SIGTERM as usual instead of
    raising into the copy of the stage's stack it inherited."""
    code = (
        "import os, signal, sys, time\n"
        "from wsss.runtime.cli import StageInterrupted, signals_as_exceptions\n"
        "with signals_as_exceptions():\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
        "        except StageInterrupted:\n"
        "            os._exit(7)\n"
        "        os._exit(0)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    print(os.waitstatus_to_exitcode(status))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(-signal.SIGTERM)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Announces 64 MiB and trickles it out, so a download is in flight for as long as the test needs."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(64 << 20))
        self.end_headers()
        try:
            for _ in range(64 << 4):
                self.wfile.write(b"\0" * (1 << 16))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_sigterm_mid_download_leaves_no_partial_file(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "voc"
    params = {"voc_url": f"http://127.0.0.1:{server.server_address[1]}/VOC.tar", "voc_md5": "0" * 32}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "stages" / "prepare_dataset.py"),
            "--kind",
            "voc",
            "--params",
            json.dumps(params),
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in (out / "downloads").glob(".VOC.tar.*.tmp*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert list((out / "downloads").iterdir()) == []
