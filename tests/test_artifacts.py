"""The CAM artifact format (wsss/artifacts/cam.py) is numpy-only: a fresh interpreter reads and writes CAM files
without importing torch or the models."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

SCRIPT = """
import sys
import numpy as np
from wsss.artifacts.cam import CamRecord, index_cam_dirs, load_cam, save_cam
rec = CamRecord(np.array([2]), np.ones((1, 3, 4), np.float16), (12, 16), np.array([0.1, 0.2, 0.9], np.float32),
                np.full((1, 12, 16), 0.5, np.float16))
save_cam(sys.argv[1] + "/a.npz", rec)
back = load_cam(index_cam_dirs([sys.argv[1]], ["a"])["a"])
assert back.keys.tolist() == [2] and back.size == (12, 16) and float(back.full_res().max()) == 0.5
assert "torch" not in sys.modules, "torch imported"
"""


def test_cam_files_read_and_write_without_torch(tmp_path) -> None:
    """Planted bug: ``import torch`` at the top of wsss/artifacts/cam.py (or importing wsss.pipeline.classify) fails here."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
