"""Progress bars that read well both live and in log files: the one place that picks how progress is shown.

On a terminal :func:`progress` is a plain ``tqdm`` bar, redrawn in place. Elsewhere (a stage's ``> log 2>&1``,
a SLURM log, a pipe) tqdm's carriage returns would make the whole run one line that ``tail -f`` and ``less``
show as a smear; there the same bar is written as one plain line per :data:`LOG_INTERVAL` seconds (steps, rate,
elapsed and ETA, as tqdm formats them), plus the final state, with no carriage return.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log file (WSSS_PROGRESS_INTERVAL overrides)


class _Lines:
    """A file for tqdm that turns its in-place redraws (``\\r`` + status) into whole lines: every non-blank
    status once, ending in ``\\n``; the final redraw of an unchanged status is not repeated."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.last = ""

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            line = part.rstrip()
            if line and line != self.last:
                self.file.write(line + "\n")
                self.last = line
        self.file.flush()

    def flush(self) -> None:
        self.file.flush()


def is_terminal(file: Any) -> bool:
    """Whether ``file`` is an interactive terminal (False for files without ``isatty`` or closed ones)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Any = None, *, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` written to ``file`` (default stderr): the live bar on a terminal, else one
    plain line per ``LOG_INTERVAL`` seconds (or ``mininterval``, when longer), without carriage returns."""
    file = sys.stderr if file is None else file
    if is_terminal(file):
        return tqdm(iterable, file=file, **kwargs)
    interval = float(os.environ.get("WSSS_PROGRESS_INTERVAL", LOG_INTERVAL))
    kwargs["mininterval"] = max(interval, float(kwargs.get("mininterval", 0.0)))
    kwargs["maxinterval"] = kwargs["mininterval"]  # tqdm's monitor thread redraws a slow bar after maxinterval
    kwargs.setdefault("ascii", True)
    kwargs["dynamic_ncols"] = False
    kwargs.setdefault("ncols", 100)
    return tqdm(iterable, file=_Lines(file), **kwargs)


__all__ = ["LOG_INTERVAL", "is_terminal", "progress"]
