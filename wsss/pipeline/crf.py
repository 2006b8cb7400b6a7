"""Dense-CRF label maps written per shard by a pool of worker processes (:mod:`wsss.ops.crf` does the CRF):

* IR labels (docs/method.md#ir-labels) from the stored CAMs, the ``cam_to_ir_label`` stage;
* DeepLab+CRF labels (docs/method.md#dense-crf) from the stored logits, the ``crf`` stage (and ``predict``).

No model is built here: torch is imported only to upsample a stored CAM or logits and, in a worker process, to give
it one torch thread; torchvision never.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsss.artifacts.cam import load_cam
from wsss.artifacts.logits import index_logit_dirs, load_logits, probs_from_logits
from wsss.data.dataset import VOCLayoutDataset
from wsss.ops.crf import crf_labels_from_probs, ir_label
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_rgb, write_label_png
from wsss.runtime.progress import progress

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------------- IR labels (docs/method.md#ir-labels)


def ir_label_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`wsss.ops.crf.ir_label` from the ``irn`` config section."""
    return {
        "conf_fg": params["conf_fg"],
        "conf_bg": params["conf_bg"],
        "gt_prob": params["crf_gt_prob"],
        "iters": params["crf_iters"],
        "pos": tuple(params["crf_pos"]),
        "bi": tuple(params["crf_bi"]),
    }


def ir_label_file(
    image_path: str | os.PathLike[str],
    cam_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    options: Mapping[str, Any],
) -> tuple[int, int, int]:
    """Read one image and its CAM record, write its IR label PNG; returns (foreground, background, ignore) pixels."""
    image = read_rgb(image_path)
    rec = load_cam(cam_path)
    if tuple(rec.size) != image.shape[:2]:
        raise InputError(cam_path, f"CAM of image size {rec.size} but the image is {image.shape[:2]}")
    label = ir_label(image, rec.full_res(), rec.keys, **options)
    write_label_png(out_path, label)
    ignore = int((label == 255).sum())
    background = int((label == 0).sum())
    return label.size - ignore - background, background, ignore


def _ir_label_task(task: tuple[str, str, str, dict[str, Any]]) -> tuple[int, int, int] | tuple[str, str]:
    """One worker job; an InputError comes back as (path, problem), since it does not survive pickling."""
    try:
        return ir_label_file(*task)
    except InputError as err:
        return err.path, err.problem


def _counts(result: tuple[int, int, int] | tuple[str, str]) -> tuple[int, int, int]:
    if isinstance(result[0], str):
        raise InputError(*result)
    return result


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def write_ir_labels(
    tasks: Sequence[tuple[str, str | os.PathLike[str], str | os.PathLike[str]]],
    out_dir: str | os.PathLike[str],
    options: Mapping[str, Any],
    workers: int = 1,
) -> dict[str, int]:
    """IR labels of ``(image_id, image_path, cam_path)`` tasks as ``out_dir/<id>.png``, over ``workers`` processes.

    Workers (spawned, one torch thread each) read their own inputs and write their own PNG (atomically); results
    come back in task order. Returns pixel totals ``{"foreground", "background", "ignore"}``.
    """
    jobs = [
        (str(image_path), str(cam_path), str(Path(out_dir) / f"{image_id}.png"), dict(options))
        for image_id, image_path, cam_path in tasks
    ]
    totals = np.zeros(3, dtype=np.int64)
    bar = dict(total=len(jobs), desc="ir_label", mininterval=5.0)
    if workers <= 1 or len(jobs) <= 1:
        for job in progress(jobs, **bar):
            totals += _counts(_ir_label_task(job))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
            for counts in progress(pool.imap(_ir_label_task, jobs, chunksize=2), **bar):
                totals += _counts(counts)
    return dict(zip(("foreground", "background", "ignore"), (int(v) for v in totals)))


# ------------------------------------------------------------------------------- DeepLab+CRF (docs/method.md#dense-crf)
def crf_refine(image: np.ndarray, logits: np.ndarray | torch.Tensor, crf: Mapping[str, Any]) -> np.ndarray:
    """uint8 H×W ids after a dense CRF (docs/method.md#dense-crf; the seg.crf keys, by default 10 iterations,
    Gaussian 1/3, bilateral 67/3/4) on the raw RGB uint8 ``image``, with the softmax of the logits upsampled to the
    image size as unary. Only the
    labels that can win take part (background and the classes reaching ``label_eps`` somewhere, at most
    ``max_labels`` of them; :func:`wsss.ops.crf.crf_labels_from_probs`); ``label_eps: 0`` is the all-class CRF."""
    settings = dict(crf)
    probs = probs_from_logits(logits, tuple(image.shape[:2]))
    labels = crf_labels_from_probs(
        image,
        probs,
        eps=float(settings["label_eps"]),
        top_k=settings["max_labels"],
        iters=int(settings["iters"]),
        pos_xy_std=settings["pos_xy_std"],
        pos_w=settings["pos_w"],
        bi_xy_std=settings["bi_xy_std"],
        bi_rgb_std=settings["bi_rgb_std"],
        bi_w=settings["bi_w"],
    )
    return labels.astype(np.uint8)


_CRF_WORKER: dict[str, Any] = {}


def _crf_worker_init(root: str, crf: dict[str, Any], single_thread: bool) -> None:
    if single_thread:
        import torch

        torch.set_num_threads(1)
    _CRF_WORKER.update(data=VOCLayoutDataset(root), crf=crf)


def _crf_worker(task: tuple[str, str, str]) -> tuple[str, tuple[str, str] | None]:
    """Refine one image; an InputError comes back as (path, problem) (it does not survive pickling as is)."""
    image_id, logit_path, out_path = task
    try:
        rec = load_logits(logit_path)
        image = _CRF_WORKER["data"].image(image_id)
        if tuple(image.shape[:2]) != rec.size:
            raise InputError(logit_path, f"logits are for an image of size {rec.size}, the image is {image.shape[:2]}")
        write_label_png(out_path, crf_refine(image, rec.logits, _CRF_WORKER["crf"]))
    except InputError as err:
        return image_id, (err.path, err.problem)
    return image_id, None


def crf_shard(
    root: str | os.PathLike[str],
    ids: Sequence[str],
    logit_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    crf: Mapping[str, Any],
    workers: int = 1,
) -> None:
    """Write ``<out_dir>/<id>.png`` (CRF-refined ids) for ``ids``, using ``workers`` processes (spawned, one
    torch thread each); ``workers=1`` runs in this process."""
    paths = index_logit_dirs(logit_dirs, ids)
    tasks = [(i, str(paths[i]), str(Path(out_dir) / f"{i}.png")) for i in ids]
    settings = dict(crf)
    bar = dict(total=len(tasks), desc="crf", mininterval=5.0, file=sys.stderr)
    if workers <= 1:
        _crf_worker_init(str(root), settings, single_thread=False)
        results = (_crf_worker(t) for t in tasks)
        _raise_first(progress(results, **bar))
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_crf_worker_init, initargs=(str(root), settings, True)) as pool:
        _raise_first(progress(pool.imap_unordered(_crf_worker, tasks, chunksize=2), **bar))


def _raise_first(results: Any) -> None:
    for _, error in results:
        if error is not None:
            raise InputError(*error)


__all__ = ["crf_refine", "crf_shard", "ir_label_file", "ir_label_options", "write_ir_labels"]
