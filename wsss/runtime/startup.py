"""The start of a stage process: Python's cyclic garbage collector is paused while the stage imports its modules.

Every script in ``stages/`` imports this module first (ruff's import order puts it there: ``pyproject.toml``,
section ``stage-startup``), and :func:`wsss.runtime.cli.run_stage` calls :func:`freeze_and_resume` before the
stage's work.

Why: importing torch and torchvision leaves about 330,000 objects that the collector tracks. While they are created,
the interpreter runs about 800 collections, five of them over everything created so far; at exit a last one walks
them all again, and during the stage every full collection does. Paused during the imports, then frozen
(:func:`gc.freeze`: the collector never examines those objects again; about 530,000 with the paused import, since
no collection untracked the tuples and dicts that hold no containers) and resumed, a job that builds a network
takes about 1 s less CPU time on this project's machine (``bench/startup.py``). The stage's own garbage is collected
as before; nothing a stage computes depends on it. The price: the unreachable cycles the imports leave (about 9,300
objects, 7 MB, with torch and torchvision) are frozen with the rest and never freed, where a collection to free
them first would cost 0.3 s. This is the pattern the :mod:`gc` documentation gives for :func:`gc.freeze` (disable
early, freeze, enable); data-loader workers forked after it do not rewrite the frozen objects' collector headers.

The pause applies only to a process that Python was started to run a script of this checkout's ``stages/`` with
(``python stages/<name>.py``, torchrun's ranks, ``os.exec`` from ``wsss.runtime.launch``). Any other program that
imports a stage or ``wsss.runtime.cli`` (pytest, a notebook, a script of the user's, a stage run in-process with
runpy) keeps its collector as it was. ``WSSS_GC_PAUSE=0`` in the environment turns the pause off (the baseline of
``bench/startup.py``; a memory investigation that wants every object collectable).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

STAGES_DIR = Path(__file__).resolve().parents[2] / "stages"


def _started_as_stage() -> bool:
    """True when ``__main__`` is a script of STAGES_DIR and is named on Python's own command line
    (``sys.orig_argv``), as in ``python stages/x.py``; not for a stage that another program runs in-process with
    runpy (which sets ``sys.argv[0]`` but not ``sys.orig_argv``)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or Path(path).resolve().parent != STAGES_DIR:
        return False
    for arg in sys.orig_argv[1:]:
        try:
            if os.path.samefile(path, arg):
                return True
        except (OSError, ValueError):  # not a path (an option, JSON params)
            continue
    return False


# whether this process's imports run with the collector paused (decided once, when this module is first imported)
PAUSED = os.environ.get("WSSS_GC_PAUSE", "1") != "0" and _started_as_stage() and gc.isenabled()
if PAUSED:
    gc.disable()


def freeze_and_resume() -> None:
    """Freeze the objects that exist now (the imported modules') and resume collection; only if this module paused
    it, and only once."""
    if PAUSED and not gc.isenabled():
        gc.freeze()
        gc.enable()
