"""Shared fixtures: one torch thread for the session, a tiny hand-made VOC-layout dataset, the repository root and
the session's tiny DAG (built once per session, also when pytest-xdist runs the tests in several workers)."""

from __future__ import annotations

import os
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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist only, which worker runs what, and in which order (``--dist loadgroup`` hands out the
    ``xdist_group``s of several tests first, then single tests in this order as workers become free): the first test
    that uses the session's tiny DAG joins the SLURM tests' group, so one worker builds the DAG at once and then runs
    the SLURM test on it, the longest test, whose status polls leave cores free for the other worker; every other
    test that uses the build comes after all the tests that do not, so no worker waits on the build's lock while
    there is other work. Without xdist the order stays pytest's."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    users = [item for item in items if "tiny_dag" in getattr(item, "fixturenames", ())]
    # the starter is not the SLURM test: without a cluster it skips before its tiny_dag fixture is set up
    starters = [item for item in users if item.get_closest_marker("slurm") is None]
    if not starters:
        return
    slurm = [item for item in users if item.get_closest_marker("slurm") is not None]
    if slurm:  # the group named by the SLURM module's own mark
        starters[0].add_marker(pytest.mark.xdist_group(*slurm[0].get_closest_marker("xdist_group").args))
    late = sorted((item for item in users if item is not starters[0]), key=lambda i: not i.get_closest_marker("slurm"))
    user_ids = {id(item) for item in users}
    items[:] = [starters[0], *(item for item in items if id(item) not in user_ids), *late]


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


def _build_tiny_dag(workdir: Path) -> None:
    """Run the tiny DAG (``helpers.TINY_DAG_TARGETS`` of ``helpers.tiny_dag_config``) in ``workdir``; fails the caller
    (``pytest.fail``) when Snakemake does."""
    from helpers import TINY_DAG_TARGETS, snakemake, tiny_dag_config, write_config

    write_config(workdir, tiny_dag_config())
    proc = snakemake(workdir, *TINY_DAG_TARGETS, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"the tiny DAG failed in {workdir} (exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch working directory with the whole tiny DAG built once per session (``helpers.TINY_DAG_TARGETS``:
    CAMs → IRN → DeepLab → CRF → summary, and the report figures). Tests read it or dry-run in it; a test that
    changes its config or runs anything else in it works on a copy (``helpers.copy_of_dag``).

    Under pytest-xdist the workers share one build (pytest-xdist's documented pattern: a folder of the whole
    session, ``getbasetemp().parent``, and a file lock): the first worker that needs it builds it while holding the
    lock and writes ``tiny_dag.done`` (the build's path) only after the build succeeded, or ``tiny_dag.failed`` (the
    error) when it failed; a worker that gets the lock later uses the done build or fails with the recorded error,
    so a failed build fails the tests of every worker and is never retried or taken for a finished one. A build
    that left no marker (its worker was killed) is not used: the next worker builds again in a folder of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:  # one process (no xdist, `-n 0`, `-p no:xdist`): the session fixture is built once anyway
        workdir = tmp_path_factory.mktemp("tiny_dag")
        _build_tiny_dag(workdir)
        return workdir

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, above every worker's own basetemp
    done, failed = shared / "tiny_dag.done", shared / "tiny_dag.failed"
    with FileLock(shared / "tiny_dag.lock"):
        if failed.exists():
            pytest.fail(f"the tiny DAG build failed in another worker: {failed.read_text()}", pytrace=False)
        if not done.exists():
            workdir = shared / f"tiny_dag-{worker}"  # next to the markers, not in a worker's own basetemp
            workdir.mkdir()
            try:
                _build_tiny_dag(workdir)
            except BaseException as err:  # pytest.fail, a timeout, Ctrl-C: the other workers must not wait or pass
                failed.write_text(f"{worker}: {type(err).__name__}: {err}")
                raise
            done.write_text(str(workdir))
        return Path(done.read_text())
