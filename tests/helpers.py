"""Running the real Snakemake workflow from tests, in a scratch working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_SYNTH = {"image_size": 64, "num_classes": 3, "num_train_aug": 24, "num_train": 8, "num_val": 8, "max_objects": 2}


def write_config(workdir: Path, config: dict) -> Path:
    """Write ``config.yaml`` into a scratch working directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run this repository's Snakefile in ``workdir`` with the project's interpreter; never raises on failure."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)

TINY_CLS = {"backbone": 18, "pretrained": "none", "norm": "batch", "freeze_stem": False, "detach_stage2": False, "k_words": 8, "batch_size": 4, "epochs": 1,
            "optimizer": "adamw", "lr": 1e-3, "resize_long": [64, 80], "crop": 64, "checkpoint_every": 2, "workers": 0}
TINY_CAM = {"scales": [1.0, 0.5], "shards": 2}
TINY_IRN = {"pretrained": "from_cls", "crop": 80, "batch_size": 4, "epochs": 1, "checkpoint_every": 2, "workers": 0,
            "crf_workers": 1, "exp_times": 4}
TINY_SEG = {"backbone": 18, "pretrained": "none", "norm": "batch", "crop": 64, "batch_size": 4, "iterations": 3,
            "scales": [0.75, 1.0], "checkpoint_every": 2, "workers": 0, "shards": 2, "crf_workers": 1}


def tiny_config(method: str = "vwl_l") -> dict:
    """A run small enough for the test suite: 64-px synthetic images, a few training steps, two CAM shards."""
    return {"device": "cpu", "datasets": {"synth": dict(TINY_SYNTH)},
            "runs": {"tiny": {"dataset": "synth", "method": method, "cls": dict(TINY_CLS), "cam": dict(TINY_CAM),
                              "irn": dict(TINY_IRN), "seg": dict(TINY_SEG)}}}
