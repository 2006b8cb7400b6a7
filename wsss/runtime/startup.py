"""The start of a stage process: Python's cyclic garbage collector is paused while the stage imports its modules.

Every script in ``stages/`` imports this module first (ruff's import order puts it there: ``pyproject.toml``,
section ``stage-startup``), and :func:`wsss.runtime.cli.run_stage` calls :func:`resume` before the stage's work.

Why: importing torch and torchvision creates about 330,000 objects that the collector tracks. While they are created,
the interpreter runs about 800 collections, five of them over everything created so far; at exit a last one walks
them all again, and during the stage every full collection does. Paused during the imports, then frozen
(:func:`gc.freeze`: the collector never examines those objects again) and resumed, a job that builds a network
takes about 1 s less CPU time on this project's machine: ``bench/startup.py`` measured 57.1 → 48.2 CPU seconds for
the 13 jobs of a small synthetic DAG, with the same files written. The stage's own garbage is collected as before;
nothing a stage computes depends on it. The price: the unreachable cycles the imports leave (about 9,300 objects
with torch and torchvision) are frozen with the rest and never freed; a collection to free them first would cost
0.3 s. This is the pattern the :mod:`gc` documentation gives for :func:`gc.freeze`
(disable early, freeze, enable), which also keeps forked data-loader workers from touching the frozen objects' pages.

The pause applies only to a process that runs a script as its main program (``python stages/<name>.py``, torchrun's
ranks, ``os.exec`` from ``wsss.runtime.launch``): a test or a notebook that imports or runs a stage module in its own
process keeps its collector as it was.
"""

from __future__ import annotations

import gc
import os
import sys


def _started_as_program() -> bool:
    """True when ``__main__`` is a script named on Python's own command line (``sys.orig_argv``), as in ``python
    stages/x.py``; not for a stage that another program runs in-process with runpy (which sets ``sys.argv[0]``)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    for arg in sys.orig_argv[1:]:
        try:
            if os.path.samefile(path, arg):
                return True
        except (OSError, ValueError):  # not a path (an option, JSON params)
            continue
    return False


PAUSED = _started_as_program() and gc.isenabled()
if PAUSED:
    gc.disable()


def resume() -> None:
    """Freeze the objects that exist now (the imported modules') and resume collection; once, and only if this
    module paused it."""
    if PAUSED and not gc.isenabled():
        gc.freeze()
        gc.enable()
