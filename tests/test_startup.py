"""wsss.runtime.startup: a stage started as a program imports with the garbage collector paused, and run_stage freezes
the imported objects and resumes it; any other program that imports a stage or wsss.runtime.cli keeps its collector.

The real stage scripts are observed from outside: a ``sitecustomize`` on PYTHONPATH records whether the collector is
on when ``torch`` is first imported, and at exit whether it is on and how many objects are frozen."""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, fresh_python, run_stage_inline

SITECUSTOMIZE = """
import atexit, gc, json, os, sys
state = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch_import" not in state:
            state["torch_import"] = gc.isenabled()
        return None
sys.meta_path.insert(0, Watch())
def report():
    state.update(exit=gc.isenabled(), frozen=gc.get_freeze_count())
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(state, fh)
atexit.register(report)
"""


def _observe(tmp_path: Path, *argv: str, **env: str) -> dict:
    """``python argv…`` with this checkout importable and the watching sitecustomize; what it recorded."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "state.json"
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin", "PROBE_OUT": str(out), **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


STAGE = str(REPO / "stages" / "infer_cam.py")  # a stage that builds a network, so it imports torch


def test_a_stage_started_as_a_program_imports_torch_with_the_collector_paused(tmp_path: Path) -> None:
    """``python stages/infer_cam.py --help``: torch is imported with the collector off; run_stage froze the imports'
    objects and turned it back on. Planted bugs caught: no gc.disable() in startup (torch_import: true, frozen 0);
    freeze_and_resume() not called by run_stage (exit: false, frozen 0)."""
    state = _observe(tmp_path, STAGE, "--help")
    assert state["torch_import"] is False
    assert state["exit"] is True
    assert state["frozen"] > 300_000  # torch, torchvision and wsss: about 530,000


def test_wsss_gc_pause_0_turns_the_pause_off(tmp_path: Path) -> None:
    """The switch bench/startup.py measures against. Planted bug caught: the variable not read (torch_import: false)."""
    state = _observe(tmp_path, STAGE, "--help", WSSS_GC_PAUSE="0")
    assert state == {"torch_import": True, "exit": True, "frozen": 0}


def test_other_programs_that_import_the_runtime_keep_their_collector(tmp_path: Path) -> None:
    """A user's script (or pytest's console script) that imports wsss.runtime.cli and torch, and a stage that a
    program runs with runpy from ``python -c`` (sys.argv[0] is then the stage's path, but sys.orig_argv does not name
    it): neither pauses nor freezes. Planted bugs caught: no check that __main__ is in stages/ (the user's script
    pauses); sys.argv instead of sys.orig_argv (the runpy stage pauses)."""
    script = tmp_path / "my_tool.py"
    script.write_text("import wsss.runtime.cli\nimport torch\n")
    assert _observe(tmp_path, str(script)) == {"torch_import": True, "exit": True, "frozen": 0}

    code = f"import runpy, sys; sys.argv[:] = [{STAGE!r}, '--help']; runpy.run_path({STAGE!r}, run_name='__main__')"
    assert _observe(tmp_path, "-c", code) == {"torch_import": True, "exit": True, "frozen": 0}


def test_importing_the_module_or_running_a_stage_in_process_leaves_the_collector_alone() -> None:
    """A Python that imports startup without running a stage script keeps its collector on and freezes nothing; so
    does this test process when it runs a stage in-process (helpers.run_stage_inline)."""
    proc = fresh_python("import gc, wsss.runtime.startup as s; print(gc.isenabled(), gc.get_freeze_count(), s.PAUSED)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "0", "False"]

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert run_stage_inline("cls_gate", "--help") == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_every_stage_script_imports_startup_first() -> None:
    """The first statement after the docstring (and a __future__ import) of each stages/*.py is
    ``import wsss.runtime.startup``: ruff keeps it first once it is there (pyproject.toml), this makes it be there.
    Planted bug caught: the line removed from stages/crf.py."""
    missing = []
    for script in sorted((REPO / "stages").glob("*.py")):
        body = ast.parse(script.read_text()).body
        statements = [
            node
            for node in body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        ]
        first = statements[0] if statements else None
        if not (isinstance(first, ast.Import) and [a.name for a in first.names] == ["wsss.runtime.startup"]):
            missing.append(script.name)
    assert not missing, f"stage scripts that do not import wsss.runtime.startup first: {missing}"
