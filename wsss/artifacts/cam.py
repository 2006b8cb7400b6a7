"""The CAM artifact: one ``<id>.npz`` per image under ``results/{run}/cam/{split}/shard_*/`` (docs/design.md).

Numpy only: reading or writing a CAM file imports neither torch nor the models (upsampling a stride-4 CAM in
:meth:`CamRecord.full_res` imports torch when called). Keys of the uncompressed, pickle-free ``.npz``: ``keys``
(int64 [Cv], 0-based foreground class indices), ``cam`` (float16 [Cv, ceil(H/4), ceil(W/4)], max-normalised),
``size`` (int64 [2], H and W), ``scores`` (float32 [C-1], the classifier's image-level probabilities) and, with
``cam.high_res: per_scale``, ``high_res`` (float16 [Cv, H, W]).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_path, index_shard_files


@dataclass(frozen=True)
class CamRecord:
    """Stored CAM of one image: ground-truth class indices, stride-4 CAM (float16 on disk), image size, the
    classifier's image-level probabilities (all classes) and, with ``cam.high_res: per_scale``, the reference's
    full-resolution CAM (the per-scale upsampled sum, docs/method.md#cam-inference)."""

    keys: np.ndarray  # int64 [Cv], 0-based foreground class indices
    cam: np.ndarray  # float16 [Cv, ceil(H/4), ceil(W/4)], max-normalised
    size: tuple[int, int]  # (H, W) of the image
    scores: np.ndarray  # float32 [C-1]
    high_res: np.ndarray | None = None  # float16 [Cv, H, W], max-normalised; None when not stored

    def full_res(self) -> np.ndarray:
        """The Cv×H×W float32 CAM that evaluation, IR labels and the report read: the stored ``high_res`` when
        present, else the stride-4 CAM upsampled once (:func:`wsss.ops.cam.upsample_cam`)."""
        if self.high_res is not None:
            return np.asarray(self.high_res, dtype=np.float32)
        from wsss.ops.cam import upsample_cam  # torch: only when the stride-4 CAM is upsampled

        return upsample_cam(self.cam, self.size)


def save_cam(path: str | os.PathLike[str], record: CamRecord) -> None:
    """Write one CAM record as an uncompressed ``.npz`` (no pickles), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            extra = {} if record.high_res is None else {"high_res": record.high_res.astype(np.float16)}
            np.savez(
                fh,
                keys=record.keys.astype(np.int64),
                cam=record.cam.astype(np.float16),
                size=np.asarray(record.size, dtype=np.int64),
                scores=record.scores.astype(np.float32),
                **extra,
            )


def load_cam(path: str | os.PathLike[str]) -> CamRecord:
    """Read a CAM record written by :func:`save_cam` (``allow_pickle=False``); bad files name themselves."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rec = CamRecord(
                data["keys"],
                data["cam"],
                tuple(int(v) for v in data["size"]),
                data["scores"],
                data["high_res"] if "high_res" in data.files else None,
            )
    except FileNotFoundError:
        raise InputError(path, "CAM file is missing") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot read CAM file ({err})") from None
    if rec.cam.ndim != 3 or rec.cam.shape[0] != rec.keys.size:
        raise InputError(path, f"CAM shape {rec.cam.shape} does not match {rec.keys.size} keys")
    if rec.high_res is not None and rec.high_res.shape != (rec.keys.size, *rec.size):
        raise InputError(
            path, f"high_res shape {rec.high_res.shape} does not match {rec.keys.size} keys of an image of {rec.size}"
        )
    return rec


def index_cam_dirs(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, Path]:
    """Map every id to its CAM file ``<id>.npz`` among the shard folders ``dirs``; a missing id is an InputError."""
    return index_shard_files(dirs, ids, ".npz", "CAM")
