"""Shared fixtures: one torch thread for the session, a tiny hand-made VOC-layout dataset and the repository root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.dataset import format_labels_tsv
from wsss.runtime.io import write_jpeg, write_label_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One intra-op thread for the whole session: on a shared 2-core machine OpenMP spin-waiting makes tiny
    convolutions many times slower. The previous count is restored at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """A 3-image VOC-layout root: classes background/cat/dog, masks with ignore pixels, train and val lists."""
    root = tmp_path / "tiny"
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    labels = {}
    for k, (image_id, cls) in enumerate([("a_1", [1]), ("b_2", [2]), ("c_3", [1, 2])]):  # noqa: B007
        mask = np.zeros((12, 16), np.uint8)
        for j, c in enumerate(cls):
            mask[2:8, 2 + 6 * j : 7 + 6 * j] = c
        mask[0, :] = 255
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        labels[image_id] = [["cat", "dog"][c - 1] for c in cls]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a_1\nb_2\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c_3\n")
    (root / "labels.tsv").write_text(format_labels_tsv(labels))
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "dataset.yaml").write_text("name: tiny\n")
    return root


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch working directory with the whole tiny DAG built once per session (``helpers.TINY_DAG_TARGETS``:
    CAMs → IRN → DeepLab → CRF → summary, and the report figures). Tests read it or dry-run in it; a test that
    changes its config or reruns a rule works on a copy (``helpers.copy_of_dag``)."""
    from helpers import TINY_DAG_TARGETS, snakemake, tiny_dag_config, write_config

    workdir = tmp_path_factory.mktemp("tiny_dag")
    write_config(workdir, tiny_dag_config())
    proc = snakemake(workdir, *TINY_DAG_TARGETS, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir
