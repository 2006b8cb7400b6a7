"""Shell quoting: a checkout (and interpreter) under a folder with a space runs real jobs, and split names that
would inject shell code are one-line configuration errors before any job runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, copy_of_dag, planned_jobs, run_group, snakemake, tiny_config, tiny_dag_config, write_config


def _copy_checkout(dest: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, as they are on disk, copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.slow
def test_checkout_and_interpreter_under_a_folder_with_a_space_run_real_jobs(tiny_dag: Path, tmp_path: Path) -> None:
    """Every launcher kind runs real jobs through the copy's paths: train_stage() (train_irn), gpu_stage()
    (make_pseudo, device auto: the lease runs unleased without a GPU) and stage() (eval_pseudo), with the interpreter
    reached through "My Projects/…/.venv" (a link to this virtualenv, so sys.executable has the space too), in a
    working directory under a space too. The working directory is a copy of the session's tiny build (no second
    whole DAG of the same config): IRNet is retrained there (-f) and everything after it up to the pseudo labels'
    evaluation reruns (mtime), so the copy must reproduce the tiny build's IRNet weights and pseudo-label mIoU.
    Planted bug caught: train_stage()'s script path not quoted (rules/common.smk)."""
    checkout = tmp_path / "My Projects" / "wsss repo"
    _copy_checkout(checkout)
    (checkout / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    python = checkout / ".venv" / "bin" / Path(sys.executable).name
    workdir = copy_of_dag(tiny_dag, tmp_path / "My Projects" / "run dir")
    config = tiny_dag_config()
    config["device"] = "auto"
    write_config(workdir, config)
    env = {**os.environ, "WSSS_GPU_LOCK_DIR": str(tmp_path / "gpu locks")}
    env.pop("PYTHONPATH", None)
    target = "results/tiny/pseudo_val_miou.txt"  # IRNet -> random walk (val shards) -> evaluation
    cmd = [str(python), "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--cores", "2", "-p"]
    # mtime only: the copy's device (auto) and Snakefile path would otherwise rerun the whole DAG
    cmd += ["--rerun-triggers", "mtime", "-f", "results/tiny/irn/model.pt", target]
    proc = run_group(cmd, workdir, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned_jobs(proc.stdout + proc.stderr) == {
        "train_irn": 1,
        "calibrate_pseudo": 1,  # the walk threshold (auto) is calibrated from the retrained IRNet
        "make_pseudo": 2,
        "eval_pseudo": 1,
    }
    printed = proc.stdout + proc.stderr
    for launcher in ["-m wsss.runtime.launch", "-m wsss.runtime.gpu_lease", "stages/eval_pseudo.py"]:
        assert launcher in printed
    assert f"PYTHONPATH='{checkout}'" in printed and f"'{python}'" in printed  # the copy's code, quoted
    model = "results/tiny/irn/model.pt"
    assert (workdir / model).stat().st_mtime > (tiny_dag / model).stat().st_mtime  # retrained, not the copy's
    if not torch.cuda.is_available():  # the same CPU run as the tiny build (with CUDA it trained on the GPU)
        got, want = (torch.load(d / model, weights_only=True) for d in (workdir, tiny_dag))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert (workdir / target).read_text() == (tiny_dag / target).read_text()


def test_injected_split_name_is_a_one_line_config_error(tmp_path: Path) -> None:
    config = tiny_config()
    config["summary"] = {"cam_split": "val; touch pwned #"}
    config["runs"]["tiny"]["seg"]["label_source"] = "gt"
    config["runs"]["tiny"]["seg"]["train_split"] = "train; touch pwned #"
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "results/summary.md")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "invalid configuration" in line]
    assert len(errors) == 1 and "does not match" in errors[0], proc.stderr[-2000:]
    assert "summary.cam_split" in errors[0] or "runs.tiny.seg.train_split" in errors[0]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "results").exists()


# Params whose value is a pre-quoted shell fragment (several words, each quoted by rules/common.smk shell_word).
PRE_QUOTED = {"params.cls_model", "params.splits"}


def test_every_rule_quotes_its_shell_words(repo: Path) -> None:
    """Each {input…}/{output…}/{params…}/{wildcards…}/{log} placeholder in a shell: block carries :q (new rules too)."""
    import re

    placeholder = re.compile(r"\{\{?((?:params|input|output|wildcards|log)(?:\.\w+)?)(:[^}]*)?\}")
    unquoted = []
    for smk in sorted((repo / "rules").glob("*.smk")):
        in_shell = False
        for number, line in enumerate(smk.read_text().splitlines(), 1):
            if re.match(r"^\s{4}shell:\s*$", line):
                in_shell = True
                continue
            if in_shell and not line.startswith("        "):
                in_shell = False
            if in_shell:
                unquoted += [
                    f"{smk.name}:{number}: {m.group(0)}"
                    for m in placeholder.finditer(line)
                    if m.group(1) not in PRE_QUOTED and m.group(2) != ":q"
                ]
    assert not unquoted
