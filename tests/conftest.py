"""Shared fixtures: one torch thread for the session, a tiny hand-made VOC-layout dataset, the repository root and
the session's tiny DAG (built once per session, also when pytest-xdist runs the tests in several workers)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning, in this process and in every job it starts (set before torch loads
# libgomp; a value the user set is kept). The two workers of `pytest -n 2` each start Snakemake jobs whose rules ask
# for 2 threads, so the 2-core machine often runs more threads than cores, and spinning threads steal the cores their
# own team waits on: two 2-thread training loops at once took 10.9x the time of one alone, 2.8x with PASSIVE
# (bench/omp_wait.py). Only how a thread waits changes, not how the work is split: the numbers are the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist only, which worker runs what, and in which order (``--dist loadgroup`` hands the first work
    unit to the first worker, the second to the second, then the rest in this order as workers become free): the
    first test that uses the session's tiny DAG comes first, so one worker builds the DAG at once; the SLURM test
    second, so the other worker starts it at once: it needs only the build's classifier (conftest
    ``tiny_dag_classifier``) and runs its cluster while the first worker builds the rest. Every other test that uses
    the build comes after all the tests that do not, so no worker waits on the build's lock while there is other
    work. Without xdist the order stays pytest's."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    users = [item for item in items if {"tiny_dag", "tiny_dag_classifier"} & set(getattr(item, "fixturenames", ()))]
    # the starter is not the SLURM test: without a cluster it skips before its fixtures are set up
    starters = [item for item in users if item.get_closest_marker("slurm") is None]
    if not starters:
        return
    slurm = [item for item in users if item.get_closest_marker("slurm") is not None]
    late = [item for item in users if item is not starters[0] and item.get_closest_marker("slurm") is None]
    user_ids = {id(item) for item in users}
    items[:] = [starters[0], *slurm, *(item for item in items if id(item) not in user_ids), *late]


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


def _build_tiny_dag(workdir: Path, targets: tuple[str, ...]) -> None:
    """Run ``targets`` of the tiny DAG (``helpers.tiny_dag_config``) in ``workdir``; fails the caller
    (``pytest.fail``) when Snakemake does."""
    from helpers import snakemake, tiny_dag_config, write_config

    if not (workdir / "config.yaml").exists():
        write_config(workdir, tiny_dag_config())
    proc = snakemake(workdir, *targets, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"the tiny DAG failed in {workdir} (exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)


def _shared_tiny_dag(tmp_path_factory: pytest.TempPathFactory, whole: bool) -> Path:
    """The session's tiny build under pytest-xdist, built in two steps: the classifier
    (``helpers.TINY_DAG_CLASSIFIER``), then the rest (``helpers.TINY_DAG_TARGETS``). The workers share one build
    (pytest-xdist's documented pattern: a folder of the whole session, ``getbasetemp().parent``, and a file lock): the
    worker that needs a step first runs it while holding the lock and then writes its marker, ``tiny_dag.classifier``
    or ``tiny_dag.done`` (the build's path), only after it succeeded, or ``tiny_dag.failed`` (the error) when it
    failed; each step has its own lock. A worker that gets a step's lock later uses what its marker says is built
    (the rest is built in the classifier's folder), or fails with the recorded error, so a failed build fails the
    tests of every worker and is never retried or taken for a finished one. With ``whole`` false the classifier is
    enough (the SLURM test): its lock is free again while another worker builds the rest, which writes only files of
    the later steps."""
    from filelock import FileLock
    from helpers import TINY_DAG_CLASSIFIER, TINY_DAG_TARGETS

    worker = os.environ["PYTEST_XDIST_WORKER"]
    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, above every worker's own basetemp
    classifier, done, failed = (shared / f"tiny_dag.{name}" for name in ("classifier", "done", "failed"))

    def step(marker: Path, build: Callable[[], Path]) -> Path:
        with FileLock(f"{marker}.lock"):  # one lock per step: tiny_dag.classifier.lock, tiny_dag.done.lock
            if failed.exists():
                pytest.fail(f"the tiny DAG build failed in another worker: {failed.read_text()}", pytrace=False)
            if not marker.exists():
                try:
                    marker.write_text(str(build()))
                except BaseException as err:  # pytest.fail, a timeout, Ctrl-C: the other workers must not wait or pass
                    failed.write_text(f"{worker}: {type(err).__name__}: {err}")
                    raise
            return Path(marker.read_text())

    def build_classifier() -> Path:
        workdir = shared / f"tiny_dag-{worker}"  # next to the markers, not in a worker's own basetemp
        workdir.mkdir()
        _build_tiny_dag(workdir, (TINY_DAG_CLASSIFIER,))
        return workdir

    def build_rest() -> Path:
        _build_tiny_dag(workdir, TINY_DAG_TARGETS)
        return workdir

    workdir = step(classifier, build_classifier)
    return step(done, build_rest) if whole else workdir


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch working directory with the whole tiny DAG built once per session (``helpers.TINY_DAG_TARGETS``:
    CAMs → IRN → DeepLab → CRF → summary, and the report figures). Tests read it or dry-run in it; a test that
    changes its config or runs anything else in it works on a copy (``helpers.copy_of_dag``). Under pytest-xdist the
    workers share one build (``_shared_tiny_dag``)."""
    from helpers import TINY_DAG_TARGETS

    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one process (no xdist, `-n 0`, `-p no:xdist`): built once anyway
        workdir = tmp_path_factory.mktemp("tiny_dag")
        _build_tiny_dag(workdir, TINY_DAG_TARGETS)  # nobody waits for the classifier alone
        return workdir
    return _shared_tiny_dag(tmp_path_factory, whole=True)


@pytest.fixture(scope="session")
def tiny_dag_classifier(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The working directory of the session's tiny build once its classifier (``helpers.TINY_DAG_CLASSIFIER``) is
    trained; under pytest-xdist another worker may still be building the rest in it, so read only the dataset, the
    config and the classifier's files, and ask for ``tiny_dag`` before anything else."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return request.getfixturevalue("tiny_dag")
    return _shared_tiny_dag(tmp_path_factory, whole=False)
