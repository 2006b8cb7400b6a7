"""Running the real Snakemake workflow from tests, in a scratch working directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

# 64 images of 64 px, 2 classes: the plumbing tests' data (tiny_config), as cheap as a real DAG gets. It does not
# learn enough to pass the gates; the session's shared build (tiny_dag_config) is the one that learns.
TINY_SYNTH = {"image_size": 64, "num_classes": 2, "num_train_aug": 64, "num_train": 8, "num_val": 8, "max_objects": 2}


def schema_section(section: str, **overrides) -> dict:
    """A stage section of the schema's defaults (the validated minimal config), with ``overrides``."""
    from wsss.runtime.config import default_config

    return {**default_config()[section], **overrides}


def write_config(workdir: Path, config: dict) -> Path:
    """Write ``config.yaml`` into a scratch working directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_cmd(*args: str) -> list[str]:
    """The command line that runs this repository's Snakefile with the project's interpreter on 2 cores."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *args]


def run_group(
    cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a new session: on a timeout, or when the test is
    interrupted (pytest-timeout, Ctrl-C), the whole process group is killed (Snakemake and every job it started),
    not just ``cmd``; the exception is raised again."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a job that left the group may hold the pipes
            proc.communicate(timeout=30)
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run this repository's Snakefile in ``workdir`` with the project's interpreter; never raises on failure
    (a timeout raises ``subprocess.TimeoutExpired`` after killing Snakemake's whole process group)."""
    return run_group(snakemake_cmd(*args), workdir, timeout)


def require_or_skip(name: str, reason: str) -> None:
    """Skip the test for a missing prerequisite, or fail it when ``name`` is listed in ``$WSSS_REQUIRE``
    (comma-separated, e.g. ``slurm,chromium``, set by .ci/run) so that CI cannot pass without it."""
    if name in {n.strip() for n in os.environ.get("WSSS_REQUIRE", "").split(",")}:
        pytest.fail(f"{reason} (required: {name} is in WSSS_REQUIRE)", pytrace=False)
    pytest.skip(reason)


# The synthetic run's from-scratch recipe (config.yaml runs.synth) shrunk: ResNet-10, AdamW 2e-3, 8 epochs of
# 57 images (7 of the 64 held out, cls.holdout_fraction) = 56 steps of batch 8.
TINY_CLS = {
    "backbone": 10,
    "pretrained": "none",
    "norm": "batch",
    "freeze_stem": False,
    "detach_stage2": False,
    "k_words": 8,
    "batch_size": 8,
    "epochs": 8,
    "optimizer": "adamw",
    "lr": 2e-3,
    "lr_mult_new": 1,
    "resize_long": [64, 80],
    "crop": 64,
    "checkpoint_every": 1000,
    "workers": 0,
}
TINY_CAM = {"scales": [1.0, 0.5], "shards": 2, "bg_score": 0.35}  # fixed: the configured path (tiny_dag_config: auto)
TINY_IRN = {
    "pretrained": "from_cls",
    "crop": 64,
    "radius": 5,
    "batch_size": 8,
    "epochs": 2,
    "checkpoint_every": 1000,
    "workers": 0,
    "crf_workers": 1,
    "exp_times": 4,
    "conf_fg": 0.6,
    "conf_bg": 0.3,
    "bg_threshold": 0.5,
}
TINY_SEG = {
    "backbone": 10,
    "pretrained": "from_cls",
    "norm": "fixed",
    "crop": 64,
    "batch_size": 8,
    "iterations": 20,
    "optimizer": "adamw",
    "lr": 1e-3,
    "lr_mult_weight": 1,
    "lr_mult_bias": 1,
    "scales": [0.75, 1.0],
    "checkpoint_every": 1000,
    "workers": 0,
    "shards": 2,
    "crf_workers": 1,
}


def tiny_config(method: str = "vwl_l") -> dict:
    """The plumbing config: 64-px synthetic images, ResNet-10, two shards, a few steps per stage, fixed thresholds and
    the gates relaxed. For tests of mechanics (resume, quoting, gate paths, partial DAGs) that do not need a run that
    learns; the session's shared build (``tiny_dag_config``, conftest ``tiny_dag``) is the run that learns."""
    # gates relaxed: 7 held-out images and 2 classes, 8 epochs, 20 DeepLab iterations cannot show a margin over the
    # label prior, localisation evidence or a fit; tests/test_heldout.py and tests/test_gates.py test the gates
    return {
        "device": "cpu",
        "datasets": {"synth": dict(TINY_SYNTH)},
        "gates": {
            "min_cls_f1": 0.0,
            "min_seg_fit": 0.0,
            "min_prior_gain": None,
            "min_cam_evidence": None,
            "max_cam_overlap": 1.0,
        },
        "runs": {
            "tiny": {
                "dataset": "synth",
                "method": method,
                "cls": dict(TINY_CLS),
                "cam": dict(TINY_CAM),
                "irn": dict(TINY_IRN),
                "seg": dict(TINY_SEG),
            }
        },
    }


# The session's shared build: the smallest synthetic config found where every stage learns with the gates on at
# their defaults (issue 23; README "Tests"): the default data's make-up (4 classes, 1-2 objects per image) at 64 px
# and 128 images, 60 classifier epochs (840 steps of 8), every threshold calibrated without masks (auto), 200 DeepLab
# iterations. With one object per image (cheaper labels) a classifier can name a class by the absence of the others
# and the cam gate stops the run (no localisation evidence for that class): the 1-2 objects are needed.
TINY_DAG_SYNTH = {**TINY_SYNTH, "num_classes": 4, "num_train_aug": 128, "num_val": 16}


def tiny_dag_config(method: str = "vwl_l") -> dict:
    """The config of the session's shared tiny build (conftest ``tiny_dag``): ``tiny_config`` with the data, steps
    and auto thresholds of a run that learns, and the gates at their defaults."""
    config = tiny_config(method)
    del config["gates"]
    config["datasets"]["synth"] = dict(TINY_DAG_SYNTH)
    run = config["runs"]["tiny"]
    run["cls"]["epochs"] = 60
    run["cam"]["bg_score"] = "auto"
    run["irn"].update(conf_fg="auto", conf_bg="auto", bg_threshold="auto")
    run["seg"]["iterations"] = 200
    return config


# What the session's tiny DAG (conftest ``tiny_dag``) builds: every stage of run "tiny" and its report figures; first
# its classifier alone (conftest ``tiny_dag_classifier``: the SLURM test starts from it while the rest is built).
TINY_DAG_TARGETS = ("results/summary.md", "results/tiny/report/done")
TINY_DAG_CLASSIFIER = "results/tiny/cls/model.pt"


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """The ``Job stats`` table of a ``snakemake -n`` output as {rule: count} (no ``total``); {} if nothing to do."""
    if "Job stats:" not in dry_run_stdout:
        return {}
    jobs = {}
    for line in dry_run_stdout.split("Job stats:", 1)[1].splitlines()[3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            break
        if fields[0] != "total":
            jobs[fields[0]] = int(fields[1])
    return jobs


def planned_reasons(dry_run_stdout: str) -> dict[str, set[str]]:
    """The ``Reasons`` block of a ``snakemake -n`` output as {reason: rules}."""
    reasons: dict[str, set[str]] = {}
    lines = dry_run_stdout.split("Reasons:", 1)[1].splitlines()[2:] if "Reasons:" in dry_run_stdout else []
    for head, rules in zip(lines[::2], lines[1::2]):
        if not (head.startswith("    ") and head.endswith(":") and rules.startswith("        ")):
            break
        reasons[head.strip().rstrip(":")] = set(rules.strip().split(", "))
    return reasons


def copy_of_dag(workdir: Path, dest: Path, config: dict | None = None) -> Path:
    """A copy of a built working directory (outputs, timestamps, Snakemake's metadata) at ``dest``, with
    ``config`` as its config.yaml when given: tests that change or rerun anything work on a copy, never on the
    session's shared ``tiny_dag`` (a failed assert would leave it changed for every later test)."""
    import shutil

    shutil.copytree(workdir, dest, symlinks=True)
    if config is not None:
        write_config(dest, config)
    return dest


class NoisyRegression(torch.utils.data.Dataset):
    """16 regression items for ``wsss.engine.train.fit`` tests, indexed by (index, aug seed): the input's augmentation noise
    depends only on the aug seed, so a resumed or re-sharded run sees the same data."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self) -> int:
        return 16

    def __getitem__(self, key):
        i, seed = key
        noise = float(np.random.default_rng(seed).normal(0, 0.1))
        return {"x": self.x[i] + noise, "y": self.y[i]}


def interrupt_at(objective: Callable, fail_at: int | None) -> Callable:
    """``objective`` that raises KeyboardInterrupt at step ``fail_at`` (a run killed mid-way); unchanged for None."""
    if fail_at is None:
        return objective

    def interrupted(model, batch, step):
        if step == fail_at:
            raise KeyboardInterrupt("killed")
        return objective(model, batch, step)

    return interrupted


def fresh_python(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c script args`` in a fresh interpreter that sees only this checkout (for what it imports)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def run_stage_inline(name: str, *argv: str) -> int:
    """Run stages/<name>.py in this process (as ``python stages/<name>.py argv…``); returns its exit status."""
    import runpy

    import pytest

    old = sys.argv
    sys.argv = [name, *argv]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(REPO / "stages" / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = old
    return done.value.code


def png_labels(path: Path) -> np.ndarray:
    """A label PNG's class ids (palette indices), read with PIL alone."""
    from PIL import Image

    with Image.open(path) as img:
        return np.array(img)


def miou_of_pngs(preds: dict[str, Path], masks: Path, num_classes: int) -> float:
    """mIoU (%) of label PNGs ``{id: path}`` against ``masks/<id>.png``, computed here independently of
    wsss.engine.metrics: per class, intersection and union of boolean maps summed over the images (mask 255 ignored),
    averaged over the classes that have ground-truth pixels (wsss's ``miou_present``)."""
    inter, union, present = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes, bool)
    for image_id, path in preds.items():
        gt, pred = png_labels(masks / f"{image_id}.png"), png_labels(path)
        assert gt.shape == pred.shape, image_id
        valid = gt != 255
        for c in range(num_classes):
            g, p = (gt == c) & valid, (pred == c) & valid
            inter[c] += (g & p).sum()
            union[c] += (g | p).sum()
            present[c] |= bool(g.any())
    return 100 * float((inter[present] / union[present]).mean())


def baseline_miou(ids: list[str], masks: Path, num_classes: int, label: int = 0) -> float:
    """The mIoU (%) of predicting ``label`` everywhere (0: all background) on these images, by :func:`miou_of_pngs`'s
    arithmetic."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        preds = {}
        for image_id in ids:
            gt = png_labels(masks / f"{image_id}.png")
            preds[image_id] = Path(tmp) / f"{image_id}.png"
            Image.fromarray(np.full(gt.shape, label, np.uint8)).save(preds[image_id])
        return miou_of_pngs(preds, masks, num_classes)


def shard_pngs(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the label PNGs of a sharded output folder (``<folder>/shard_*/<id>.png``)."""
    return {p.stem: p for p in sorted(folder.glob("shard_*/*.png"))}


def deeplab_miou_from_pngs(workdir: Path, run: str, dataset: str, split: str = "val") -> tuple[float, float, float]:
    """(reported DeepLab+CRF mIoU, the same recomputed from the CRF label PNGs by :func:`miou_of_pngs`, the
    all-background mIoU of those images), all in %, for a built run (the dataset's VOC layout under resources/)."""
    root = workdir / "resources" / dataset
    num_classes = len((root / "classes.txt").read_text().split())
    pngs = shard_pngs(workdir / "results" / run / "seg_crf" / split)
    assert pngs and set(pngs) == set((root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split())
    reported = float((workdir / "results" / run / f"deeplab_{split}_miou.txt").read_text())
    masks = root / "SegmentationClass"
    return reported, miou_of_pngs(pngs, masks, num_classes), baseline_miou(sorted(pngs), masks, num_classes)
