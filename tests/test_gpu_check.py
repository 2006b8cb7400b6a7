"""bench/gpu_check.py --cpu: the GPU check's code paths (training steps fp32/bf16 of the three trainings, CAM
inference, sparse vs dense random walk, the DAG through bench_dag.py) run at tiny sizes, so the script cannot rot
between the rare runs on a GPU."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from helpers import REPO


@pytest.mark.slow
def test_cpu_smoke_run_fills_the_table() -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--cpu", "--skip", "tests"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in run.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| check")]
    checks = [(r[0], r[1].split(",")[0]) for r in rows]
    for stage in ("train_cls", "train_irn", "train_seg"):
        assert (stage, "float32") in checks and (stage, "bfloat16") in checks
    for row in rows:
        if row[0].startswith("train_") or row[0] == "infer_cam":
            assert re.fullmatch(r"\d+\.\d img/s", row[2]) and float(row[2].split()[0]) > 0, row
    walk = next(r for r in rows if r[0] == "random walk")
    assert float(walk[2].split()[-1]) <= 1e-4  # the sparse walk agrees with the dense reference
    dag = next(r for r in rows if r[0] == "synthetic DAG")
    assert dag[1] == "device: cpu (dataset only)" and dag[2].endswith(" s") and "critical path" in dag[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line() -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: gpu_check: no CUDA device visible (use --cpu for the smoke run)"
