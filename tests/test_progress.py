"""wsss.runtime.progress: a live bar on a terminal; in a log file one plain line per interval, never a carriage return."""

from __future__ import annotations

import io
import re

import pytest
import tqdm.std

from wsss.runtime import progress as progress_module
from wsss.runtime.progress import progress


class _Clock:
    """A fake clock for tqdm (its module-level ``time``), moved on by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(file: io.StringIO, monkeypatch: pytest.MonkeyPatch, steps: int = 100, dt: float = 1.0) -> str:
    clock = _Clock()
    monkeypatch.setattr(tqdm.std, "time", clock)
    for _ in progress(range(steps), desc="train", file=file, mininterval=5.0):
        clock.now += dt
    return file.getvalue()


def test_log_file_gets_one_plain_line_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 steps of 1 s with a 30 s interval: the start, one line each 30 s (at 30, 60, 90 s) and the end, each a
    whole line with the step count, rate and ETA. Caught: tqdm's own file (one line of carriage returns) and an
    interval ignored (a line per step)."""
    monkeypatch.delenv("WSSS_PROGRESS_INTERVAL", raising=False)
    text = _run(io.StringIO(), monkeypatch)
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    steps = [int(re.search(r"(\d+)/100", line).group(1)) for line in lines]
    assert steps[0] == 0 and steps[-1] == 100
    assert 4 <= len(lines) <= 6, lines  # 0, ~30, ~60, ~90, 100
    assert all(later - earlier >= 29 for earlier, later in zip(steps[1:-2], steps[2:-1]))  # noqa: RUF007
    assert all(line.startswith("train:") for line in lines)
    assert re.search(r"\d+/100 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+it/s\]", lines[2])  # elapsed<ETA, rate


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSSS_PROGRESS_INTERVAL", "10")
    lines = _run(io.StringIO(), monkeypatch).splitlines()
    assert 10 <= len(lines) <= 13, lines  # 0, 10, ..., 90, 100


def test_terminal_keeps_the_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bar redraws in place (carriage returns) at tqdm's own interval (5 s here)."""
    text = _run(_Terminal(), monkeypatch)
    assert text.count("\r") >= 15 and "100/100" in text
    assert progress_module.is_terminal(_Terminal()) and not progress_module.is_terminal(io.StringIO())
