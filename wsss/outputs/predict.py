"""Applying a trained DeepLab to new, unlabelled images: folder listing, per-image label maps (optionally refined
by the dense CRF) and overlays, and the PASCAL VOC test-server archive.

Only the network is used, never image-level labels. The test-time inference is :func:`wsss.pipeline.segment.image_logits`
(the one ``infer_seg`` runs) and the CRF is :func:`wsss.pipeline.crf.crf_refine` (the one the ``crf`` rule runs), so a
prediction equals what the evaluation pipeline computes for the same image. Only :func:`predict_images` imports
torch and the model (when called): merging shards and the submission archive do not.

Outputs per image ``<stem>``: ``<stem>.png`` (uint8 class ids at the image's own size, VOC palette) and
``<stem>_overlay.jpg`` (the image with the foreground classes' palette colours blended in).
"""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsss.artifacts.logits import labels_from_logits
from wsss.pipeline.crf import crf_refine
from wsss.runtime.errors import InputError
from wsss.runtime.io import (
    DEFAULT_MAX_PIXELS,
    atomic_path,
    palette_rgb,
    read_label_png,
    read_rgb,
    visible_files,
    write_jpeg,
    write_label_png,
)
from wsss.runtime.progress import progress

if TYPE_CHECKING:
    import torch

    from wsss.models.deeplab import MSC

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OVERLAY_ALPHA = 0.5
SUBMISSION_DIR = "results/VOC2012/Segmentation/comp6_test_cls"
_PALETTE = palette_rgb()


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images of ``folder`` (``*.jpg``, ``*.jpeg``, ``*.png`` in any case, not recursive, hidden files skipped
    with a count in the log, as in every reader), sorted by name.

    A missing folder, a folder without images, or two images with the same stem (their outputs would collide) is
    an InputError naming the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "image folder is missing" if not folder.exists() else "not a folder")
    paths = [p for p in visible_files(folder, "predict") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not paths:
        raise InputError(folder, f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}, any case)")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise InputError(
                folder,
                f"images {seen[path.stem].name} and {path.name} share the stem {path.stem!r} "
                f"(outputs are named by stem)",
            )
        seen[path.stem] = path
    return paths


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """H×W×3 uint8: the image with each non-background pixel blended with its class's VOC palette colour."""
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {labels.shape} differ in size")
    out = rgb.astype(np.float32)
    fg = labels != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * _PALETTE[labels[fg]].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _crf_task(task: tuple[np.ndarray, np.ndarray, dict[str, Any]]) -> np.ndarray:
    rgb, logits, crf = task
    return crf_refine(rgb, logits, crf)


def _crf_pool_init() -> None:
    import torch

    torch.set_num_threads(1)


def _logits_of(
    model: MSC,
    paths: Sequence[Path],
    params: dict[str, Any],
    device: torch.device | str,
    max_pixels: int,
    limit_key: str,
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    from wsss.pipeline.segment import image_logits  # torch and torchvision: only where a model runs

    for path in progress(paths, desc="predict", mininterval=5.0, file=sys.stderr):
        rgb = read_rgb(path, max_pixels=max_pixels, limit_key=limit_key)
        yield path, rgb, image_logits(model, rgb, params, device).numpy()


def predict_images(
    model: MSC,
    paths: Sequence[Path],
    out_dir: str | os.PathLike[str],
    params: dict[str, Any],
    device: torch.device | str = "cpu",
    workers: int = 1,
    chunk: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limit_key: str = "max_pixels",
) -> None:
    """Write ``<stem>.png`` and ``<stem>_overlay.jpg`` into ``out_dir`` for every image of ``paths``.

    ``params`` is the ``seg`` section (``style``, ``test_scales``, ``test_flip``, ``predict_crf``, ``crf``). With
    ``predict_crf`` the labels are the dense CRF's (``workers`` processes, fed ``chunk`` images at a time so that
    memory stays bounded), else the argmax of the logits upsampled to the image size. An image above
    ``max_pixels`` (the run's dataset's limit; ``limit_key`` names its config key) is refused before decoding."""
    out_dir = Path(out_dir)
    use_crf = bool(params["predict_crf"])
    crf = dict(params["crf"])

    def write(path: Path, rgb: np.ndarray, labels: np.ndarray) -> None:
        write_label_png(out_dir / f"{path.stem}.png", labels)
        write_jpeg(out_dir / f"{path.stem}_overlay.jpg", overlay(rgb, labels))

    if not use_crf or workers <= 1:
        for path, rgb, logits in _logits_of(model, paths, params, device, max_pixels, limit_key):
            labels = crf_refine(rgb, logits, crf) if use_crf else labels_from_logits(logits, rgb.shape[:2])
            write(path, rgb, labels)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_crf_pool_init) as pool:
        batch: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for item in _logits_of(model, paths, params, device, max_pixels, limit_key):
            batch.append(item)
            if len(batch) == chunk:
                _refine_batch(pool, batch, crf, write)
                batch = []
        _refine_batch(pool, batch, crf, write)


def _refine_batch(pool: Any, batch: list[tuple[Path, np.ndarray, np.ndarray]], crf: dict[str, Any], write: Any) -> None:
    results = pool.map(_crf_task, [(rgb, logits, crf) for _, rgb, logits in batch])
    for (path, rgb, _), labels in zip(batch, results):
        write(path, rgb, labels)


def merge_shards(shard_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> int:
    """Copy the files of the shard folders into ``out_dir`` (one flat folder; hidden files are skipped); a file
    name in two shards is an InputError. Returns the number of files."""
    seen: dict[str, Path] = {}
    for d in shard_dirs:
        d = Path(d)
        if not d.is_dir():
            raise InputError(d, "prediction shard folder is missing")
        for path in sorted(d.iterdir()):
            if path.name.startswith("."):  # Snakemake's .snakemake_timestamp of directory outputs
                continue
            if path.name in seen:
                raise InputError(path, f"also written by shard {seen[path.name].parent}")
            seen[path.name] = path
            shutil.copyfile(path, Path(out_dir) / path.name)
    return len(seen)


def write_submission(
    path: str | os.PathLike[str], ids: Sequence[str], label_paths: dict[str, Path], num_classes: int
) -> None:
    """The PASCAL VOC test-server archive: a gzipped tar holding ``results/VOC2012/Segmentation/comp6_test_cls/
    <id>.png`` (palette PNGs of class ids) for every id, written atomically. Each label map is checked
    (readable, ids below ``num_classes``, no ignore pixels) and stored as it is. The archive is reproducible:
    sorted entries, mtime 0, root ownership, no gzip time stamp."""
    with atomic_path(path, suffix=".tar.gz") as tmp:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for name in _parents(SUBMISSION_DIR):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for image_id in progress(sorted(ids), desc="submission", mininterval=5.0, file=sys.stderr):
                labels = read_label_png(label_paths[image_id], num_classes)
                if (labels == 255).any():
                    raise InputError(
                        label_paths[image_id],
                        "label map has ignore (255) pixels; the server needs a class for every pixel",
                    )
                data = Path(label_paths[image_id]).read_bytes()  # a palette PNG (wsss.runtime.io.write_label_png)
                info = tarfile.TarInfo(f"{SUBMISSION_DIR}/{image_id}.png")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: k + 1]) for k in range(len(parts))]


__all__ = [
    "IMAGE_SUFFIXES",
    "SUBMISSION_DIR",
    "list_images",
    "merge_shards",
    "overlay",
    "predict_images",
    "write_submission",
]
