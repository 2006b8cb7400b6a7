"""The dataset report (wsss.pipeline.dataset_report, stage dataset_report) on a synthetic dataset with a frequent class and
on a folder dataset of one's own: tables, warnings, the figure, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO
from PIL import Image
from test_folder import make_folder

from wsss.data.folder import prepare_folder
from wsss.data.synth import generate_dataset


def _report(dataset: Path, split: str, out: Path) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "dataset_report.py"),
            "--params",
            json.dumps({"run": "r"}),
            "--dataset",
            str(dataset),
            "--split",
            split,
            *(a for k in ("json", "md", "png", "html") for a in (f"--{k}", str(out / f"report.{k}"))),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_synthetic_dataset_report_warns_about_the_frequent_class(tmp_path: Path) -> None:
    """Planted bug caught: prevalence over the wrong axis (per image instead of per class) gives no warning."""
    root = tmp_path / "synth"
    generate_dataset(
        root,
        {
            "image_size": 48,
            "num_classes": 3,
            "num_train_aug": 60,
            "num_train": 10,
            "num_val": 10,
            "max_objects": 2,
            "frequent_class": "circle_rings",
        },
        progress=False,
    )
    proc = _report(root, "train_aug", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out/report.json").read_text())
    assert summary["splits"] == {
        "train": {"images": 10, "masks": 10},
        "train_aug": {"images": 60, "masks": 60},
        "val": {"images": 10, "masks": 10},
    }
    assert summary["image_sizes"] == {"48x48": 70} and summary["labels"]["images"] == 60
    assert summary["labels"]["prevalence"][0] > 0.9 and summary["warnings"][0].startswith("class 'circle_rings'")
    assert "WARNING class 'circle_rings' is present in" in proc.stderr
    md = (tmp_path / "out/report.md").read_text()
    assert "![co-occurrence](report.png)" in md and "| circle_rings |" in md
    html = (tmp_path / "out/report.html").read_text()
    assert "data:image/png;base64," in html and "circle_rings" in html
    with Image.open(tmp_path / "out/report.png") as im:
        assert im.size[0] > 600 and im.size[1] > 300


def test_folder_dataset_report_counts_masks_and_sizes(tmp_path: Path) -> None:
    root, out = tmp_path / "mine", tmp_path / "resources" / "mine"
    make_folder(root)
    splits = prepare_folder({"root": str(root), "val_fraction": 0.4}, out)
    proc = _report(out, "train", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out/report.json").read_text())
    assert summary["splits"]["train"]["images"] == len(splits["train"])
    assert sum(s["masks"] for s in summary["splits"].values()) == 2  # a and c have masks
    assert summary["image_sizes"] == {"60x40": 1, "50x33": 1, "48x48": 1, "70x30": 1, "41x52": 1}
    stats = summary["labels"]
    assert stats["classes"] == ["cat", "dog"] and stats["images"] == len(splits["train"])
    # every class has fewer than 20 images: both named
    assert sum("has only" in w for w in summary["warnings"]) == 2
    bad = _report(out, "nosuch", tmp_path / "bad")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "bad/report.json").exists()
