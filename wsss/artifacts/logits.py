"""The DeepLab logit artifact: one ``<id>.npz`` per image under ``results/{run}/seg/{split}/shard_*/``.

Stored logits: ``np.savez`` (no pickles) with ``logits`` float16 [C, h, w] on the output-stride-8 grid of the full
image and ``size`` (H, W). Readers upsample them bilinearly (align_corners=False) to H×W, as both references do with
their saved stride-8 logits; the CRF takes the softmax of that.

Numpy only, as :mod:`wsss.artifacts.cam`: reading or writing a logit file imports neither torch nor the models
(upsampling the logits imports torch when called, torchvision never).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_path, index_shard_files

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SegLogits:
    """Stored test-time logits of one image: float16 [C, h, w] on the stride-8 grid and the image size (H, W)."""

    logits: np.ndarray
    size: tuple[int, int]


def save_logits(path: str | os.PathLike[str], logits: torch.Tensor | np.ndarray, size: tuple[int, int]) -> None:
    """Write one image's logits as float16 ``.npz`` (keys ``logits``, ``size``), atomically."""
    import torch  # a tensor from infer_seg, which has torch anyway

    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    if logits.ndim != 3:
        raise ValueError(f"logits must be C×h×w, got {logits.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, logits=np.ascontiguousarray(logits, dtype=np.float16), size=np.asarray(size, np.int64))


def load_logits(path: str | os.PathLike[str]) -> SegLogits:
    """Read logits written by :func:`save_logits` (``allow_pickle=False``); bad files name themselves."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rec = SegLogits(data["logits"], tuple(int(v) for v in data["size"]))
    except FileNotFoundError:
        raise InputError(path, "logit file is missing") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot read logit file ({err})") from None
    if rec.logits.ndim != 3 or len(rec.size) != 2:
        raise InputError(path, f"logits of shape {rec.logits.shape} / size {rec.size} are not C×h×w / (H, W)")
    return rec


def index_logit_dirs(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, Path]:
    """Map every id to its ``<id>.npz`` among the shard folders ``dirs``; a missing id is an InputError."""
    return index_shard_files(dirs, ids, ".npz", "logits")


def upsample_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """C×h×w logits → float32 C×H×W (bilinear, align_corners=False)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(logits, dtype=np.float32)) if not isinstance(logits, torch.Tensor) else logits
    t = t.float().cpu()
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def labels_from_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 H×W class ids: argmax of the upsampled logits (the no-CRF prediction)."""
    return upsample_logits(logits, size).argmax(0).numpy().astype(np.uint8)


def probs_from_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """float32 C×H×W softmax of the upsampled logits (the CRF's unary)."""
    import torch

    return torch.softmax(upsample_logits(logits, size), dim=0).numpy()


__all__ = [
    "SegLogits",
    "index_logit_dirs",
    "labels_from_logits",
    "load_logits",
    "probs_from_logits",
    "save_logits",
    "upsample_logits",
]
