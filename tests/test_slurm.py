"""The tiny DAG through a real one-node SLURM cluster with profiles/slurm, against the session's local build of the
same config (conftest ``tiny_dag``; no second local run). SLURM starts from the dataset and the trained classifier of
that build (conftest ``tiny_dag_classifier``: under pytest-xdist another worker builds the rest meanwhile): every
other job of the DAG, each rule of it (GPU and CPU, training and not), goes through sbatch and must give the local
build's files byte for byte."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, TINY_DAG_CLASSIFIER, require_or_skip, tiny_dag_config, write_config
from slurm_cluster import SlurmCluster, missing_binaries

# under pytest-xdist the module's tests run in one worker, one after the other: each starts a cluster whose node
# claims 8 CPUs and runs the whole tiny DAG, too much twice at once on the 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]

TARGET = "results/tiny/deeplab_val_miou.txt"
# train_cls, the longest job (about a third of the DAG's CPU time), is not rerun: its outputs are copied from the
# local build, and the other two training rules take the same path (wsss.runtime.launch) with the same kind of resources
KEPT = (TINY_DAG_CLASSIFIER, "results/tiny/cls/train_log.csv", "results/tiny/cls/heldout.json")
GPU_RULES = {
    "infer_cam",
    "calibrate",
    "cam_gate",
    "train_irn",
    "calibrate_pseudo",
    "make_pseudo",
    "train_seg",
    "seg_gate",
    "infer_seg",
}


@pytest.fixture
def cluster(tmp_path: Path):
    """munged + slurmctld + slurmd under tmp_path; stopped by PID afterwards, also when the test fails."""
    if os.geteuid() != 0:
        require_or_skip(
            "slurm", "the SLURM cluster test starts munged/slurmctld/slurmd and runs jobs as root: not root"
        )
    missing = missing_binaries()
    if missing:
        require_or_skip(
            "slurm",
            f"SLURM/munge not installed ({', '.join(missing)}): apt-get install munge slurmctld slurmd slurm-client",
        )
    slurm = SlurmCluster(tmp_path / "cluster")
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def _hash(h, value) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(repr(key).encode())
            _hash(h, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _hash(h, item)
    elif torch.is_tensor(value):
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(value).encode())


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root; of the loaded tensors for .pt files, since torch.save names the archive's
    root folder after the file it writes, a random temporary name here (wsss.runtime.io.atomic_path)."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        if path.suffix == ".pt":
            _hash(h, torch.load(path, map_location="cpu", weights_only=True))
        else:
            h.update(path.read_bytes())
        digests[str(path.relative_to(root))] = h.hexdigest()
    return digests


def test_tiny_dag_runs_through_slurm_and_matches_a_local_run(
    cluster: SlurmCluster, tiny_dag_classifier: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # device auto: the GPU rules ask SLURM for the node's (fake) GPUs and run on the CPU. With CUDA present both
    # runs would train on it, which is not bit-reproducible, so they stay on the CPU (GPU requests then untested).
    config = tiny_dag_config()
    config["device"] = "cpu" if torch.cuda.is_available() else "auto"
    remote = tmp_path / "slurm"  # the local build's config (but device), dataset and classifier, nothing else
    write_config(remote, config)
    shutil.copytree(tiny_dag_classifier / "resources", remote / "resources", symlinks=True)
    for kept in KEPT:  # with their times, newer than the dataset's; no Snakemake metadata (the build used device cpu:
        # its records would rerun train_cls for a changed param), so Snakemake judges them by time, as after a copy
        (remote / kept).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tiny_dag_classifier / kept, remote / kept)
    # The target first: --default-resources takes every word after it. squeue as the status command (this
    # cluster keeps no accounting database); the first poll after 1 s instead of the plugin's 40 s, and the next
    # ones at most 2 s apart instead of 10 s more each time (snakemake_quick_poll.py).
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("snakemake_quick_poll.py")),
        "-s",
        str(REPO / "Snakefile"),
        TARGET,
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        "--default-resources",
        "slurm_partition=gpu",
        "slurm_account=",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-keep-successful-logs",
    ]
    env = cluster.env()
    env["WSSS_GPU_LOCK_DIR"] = str(tmp_path / "gpu-locks")  # GPU leases of the jobs stay in the test's folder
    proc = subprocess.run(cmd, cwd=remote, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:] + cluster.log("slurmctld")[-2000:]

    # every planned job went through SLURM: one sbatch job each, completed, on the requested partition
    start = proc.stderr.index("Job stats")
    table = proc.stderr[start : proc.stderr.index("\ntotal", start)]
    planned = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "total"}
    assert set(planned) == {"cls_gate", "cam_to_ir_label", "crf", "eval_seg"} | GPU_RULES
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.", proc.stderr)
    assert len({slurm_id for slurm_id, _ in submitted}) == len(submitted) == sum(planned.values())
    rules: dict[str, list[dict[str, str]]] = {}
    slurmd_log = cluster.log("slurmd")  # the batch script, then the job step srun starts inside it
    for slurm_id, slurm_log in submitted:
        job = cluster.job(slurm_id)
        assert job["JobState"] == "COMPLETED" and job["Partition"] == "gpu", job
        rule = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", job["Comment"]).group(1)
        rules.setdefault(rule, []).append(job)
        assert f"Launching batch job {slurm_id} " in slurmd_log and f"launch task StepId={slurm_id}.0 " in slurmd_log
        assert Path(slurm_log).is_relative_to(remote / "logs/slurm" / f"rule_{rule}") and Path(slurm_log).is_file()
    assert {rule: len(jobs) for rule, jobs in rules.items()} == planned
    # the resources reach sbatch: a GPU and the profile's CPUs per GPU for the GPU rules, the rule's threads (all
    # 1 in the tiny run) for the others, and the rule's memory and runtime
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    for rule, jobs in rules.items():
        for job in jobs:
            if config["device"] == "auto" and rule in GPU_RULES:
                cpus = profile["set-resources"][rule]["cpus_per_gpu"]
                assert job.get("TresPerJob") == "gres:gpu:1" and job["NumCPUs"] == str(cpus), job
            else:
                assert "TresPerJob" not in job and job["NumCPUs"] == ("2" if rule.startswith("train") else "1"), job
    assert rules["train_seg"][0]["MinMemoryNode"] == "16000M" and rules["train_seg"][0]["TimeLimit"] == "1-00:00:00"

    # the same results as the local run, byte for byte (.pt files: tensor for tensor); the local build made more
    # targets (summary, report), so every file the SLURM run wrote is compared with the local one of that path
    local = request.getfixturevalue("tiny_dag")  # the whole local build (waits for the worker that builds it)
    remote_digests, local_digests = _digests(remote / "results"), _digests(local / "results")
    written = {k: v for k, v in remote_digests.items() if f"results/{k}" not in KEPT}
    assert len(written) > 100 and {k: local_digests.get(k) for k in written} == written
    assert float((remote / TARGET).read_text()) == float((local / TARGET).read_text())
