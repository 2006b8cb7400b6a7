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
