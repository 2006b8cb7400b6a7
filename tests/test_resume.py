"""A user's ``kill -9`` of a running pipeline during training, then the same ``snakemake`` command: the training
job resumes from its last checkpoint and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import snakemake, snakemake_cmd, tiny_config, write_config

from wsss.engine.train import Checkpoint

TARGET = "results/tiny/cls/model.pt"
STEPS = 28  # 64 images, 7 held out: 57 // batch 8 = 7 steps, 4 epochs


def _config() -> dict:
    config = tiny_config("vwl_m")  # the memory bank is training state too
    config["runs"]["tiny"]["cls"].update(epochs=4, checkpoint_every=3)
    return config


def _live_members(pgid: int) -> list[int]:
    """Pids of the not-yet-dead (non-zombie) processes of process group ``pgid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _kill_group_after_first_checkpoint(workdir: Path) -> int:
    """Start ``snakemake TARGET`` in its own process group, SIGKILL the whole group (Snakemake, the job's shell
    and the training process) once a checkpoint exists; return the checkpoint's step."""
    checkpoint = workdir / "results/tiny/cls/checkpoint.pt"
    job = subprocess.Popen(
        snakemake_cmd(TARGET), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 900
        while not checkpoint.exists():
            assert job.poll() is None, "snakemake ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 900 s"
            time.sleep(0.02)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    deadline = time.monotonic() + 30
    while _live_members(job.pid):
        assert time.monotonic() < deadline, f"still alive after SIGKILL: {_live_members(job.pid)}"
        time.sleep(0.1)
    return Checkpoint.load(checkpoint).step


@pytest.mark.slow
def test_kill_9_during_training_then_rerun_resumes_to_identical_weights(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for workdir in (reference, killed):
        write_config(workdir, _config())
    proc = snakemake(reference, TARGET, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]

    step = _kill_group_after_first_checkpoint(killed)
    assert 0 < step < STEPS
    assert not (killed / TARGET).exists()
    # Snakemake's lock outlives a SIGKILL: the user unlocks, then reruns the same command (the workflow profile
    # sets rerun-incomplete).
    proc = snakemake(killed, TARGET)
    assert proc.returncode != 0 and "Directory cannot be locked" in proc.stdout + proc.stderr
    assert snakemake(killed, "--unlock").returncode == 0
    proc = snakemake(killed, TARGET, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]

    log = (killed / "logs/tiny/train_cls.log").read_text()
    assert f"resuming from results/tiny/cls/checkpoint.pt at step {step}" in log
    assert not (killed / "results/tiny/cls/checkpoint.pt").exists()
    ours = torch.load(killed / TARGET, map_location="cpu", weights_only=True)
    theirs = torch.load(reference / TARGET, map_location="cpu", weights_only=True)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    # the loss log of the resumed run is that of the uninterrupted one: every step once, same values
    assert (killed / "results/tiny/cls/train_log.csv").read_text() == (
        reference / "results/tiny/cls/train_log.csv"
    ).read_text()
