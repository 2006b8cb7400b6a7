"""wsss.runtime.startup: a stage started as a program imports with the garbage collector paused, and run_stage freezes
the imported objects and resumes it; a process that only imports or runs a stage module keeps its collector as is."""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, fresh_python, run_stage_inline

# a stage-like script: what the collector's state is during its imports, then inside run_stage's main
PROBE_STAGE = """
import wsss.runtime.startup  # noqa: F401

import gc
import json
import sys

state = {"imports": gc.isenabled()}
import torch  # noqa: E402

from wsss.runtime.cli import run_stage, stage_parser  # noqa: E402

state["frozen_before_stage"] = gc.get_freeze_count()


def main(args, params):
    state.update(stage=gc.isenabled(), frozen=gc.get_freeze_count(), threshold=gc.get_threshold()[0])
    print(json.dumps(state))


sys.exit(run_stage(main, stage_parser("probe")))
"""


def _run_script(path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(path), *argv],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_a_stage_started_as_a_program_imports_with_the_collector_paused(tmp_path: Path) -> None:
    """Paused during the imports, resumed inside run_stage with torch's objects frozen. Planted bugs caught: no
    gc.disable() in startup (imports: true); resume() not called by run_stage (stage: false, frozen 0)."""
    script = tmp_path / "probe_stage.py"
    script.write_text(PROBE_STAGE)
    proc = _run_script(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["imports"] is False and state["frozen_before_stage"] == 0
    assert state["stage"] is True and state["threshold"] > 0
    assert state["frozen"] > 100_000  # torch's import-time objects (about 330,000 with torchvision)


def test_importing_the_module_or_running_a_stage_in_process_leaves_the_collector_alone(tmp_path: Path) -> None:
    """A Python that imports startup without running a stage script as its program (a test, a notebook) keeps its
    collector on and freezes nothing; a stage run in-process with runpy (helpers.run_stage_inline) too. Planted bug
    caught: the pause without the program check (imports: false in the first probe)."""
    proc = fresh_python("import gc, wsss.runtime.startup as s; print(gc.isenabled(), gc.get_freeze_count(), s.PAUSED)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "0", "False"]

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert run_stage_inline("cls_gate", "--help") == 0  # argv[0] is the stage's name, not this process's program
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
