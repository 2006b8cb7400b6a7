"""The VWL classifier as a trainable, inferable unit: built from config params, one training step, CAM records.

The stages ``train_cls``, ``infer_cam`` and ``eval_cam`` are recipes over these functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from wsss.errors import InputError
from wsss.io import atomic_path, index_shard_files
from wsss.models.backbone import build_resnet
from wsss.models.vwl import VWLNet, hybrid_pool


def build_classifier(params: dict[str, Any], num_classes: int, method: str,
                     cache_dir: str | os.PathLike[str] | None = None, pretrained: bool = True) -> VWLNet:
    """A :class:`VWLNet` (OS16 ResNet) from the ``cls`` config section; ``pretrained=False`` skips loading
    backbone weights (when a trained state dict is loaded next anyway)."""
    weights = params["pretrained"] if pretrained else "none"
    backbone = build_resnet(params["backbone"], strides=(2, 2, 2, 1), weights=weights,
                            sha256=params.get("pretrained_sha256"), cache_dir=cache_dir, norm=params["norm"],
                            freeze_stem=params.get("freeze_stem", True))
    return VWLNet(backbone, num_classes, method=method, k_words=params["k_words"], gamma=params["gamma"],
                  tau=params["tau"], rho=params["rho"], detach_stage2=params.get("detach_stage2"))


def optimizer_groups(model: VWLNet, lr_mult_new: float) -> list[dict[str, Any]]:
    """Backbone at 1× and the new layers (classifier, fc_a, fc_b, learned codebook) at ``lr_mult_new``×."""
    backbone, new = model.param_groups()
    return [{"params": backbone, "lr_mult": 1.0}, {"params": new, "lr_mult": lr_mult_new}]


def training_step(model: VWLNet, batch: dict[str, Any], step: int, device: torch.device,
                  seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, VWL-M memory-bank update (between forward and backward, SPEC §3.6), loss with its parts.

    The memory bank's first-step re-initialisation draws from a generator seeded by (seed, step), so a resumed
    run makes the same draws."""
    images = batch["image"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    out = model(images)
    if model.method == "vwl_m":
        gen = torch.Generator(device=out["features"].device).manual_seed(seed * 100_003 + step)
        model.update_memory_bank(out["features"].detach().float(), out["hard_words"], generator=gen)
    loss, parts = model.loss(out, labels)
    return loss, {k: float(v) for k, v in parts.items() if k != "total"}


@torch.no_grad()
def image_scores(model: VWLNet, images: torch.Tensor) -> torch.Tensor:
    """Image-level class probabilities (sigmoid of the training logits: hybrid pooling, or GAP for ``cam``)."""
    feat = model.features(images)
    pooled = feat.mean(dim=(2, 3)) if model.method == "cam" else hybrid_pool(feat, model.gamma, model.levels)
    return torch.sigmoid(model.classifier(pooled[:, :, None, None]).flatten(1).float())


@dataclass(frozen=True)
class CamRecord:
    """Stored CAM of one image: ground-truth class indices, stride-4 CAM (float16 on disk), image size, and the
    classifier's image-level probabilities (all classes)."""

    keys: np.ndarray  # int64 [Cv], 0-based foreground class indices
    cam: np.ndarray  # float16 [Cv, ceil(H/4), ceil(W/4)], max-normalised
    size: tuple[int, int]  # (H, W) of the image
    scores: np.ndarray  # float32 [C-1]


def save_cam(path: str | os.PathLike[str], record: CamRecord) -> None:
    """Write one CAM record as an uncompressed ``.npz`` (no pickles), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=record.keys.astype(np.int64), cam=record.cam.astype(np.float16),
                     size=np.asarray(record.size, dtype=np.int64), scores=record.scores.astype(np.float32))


def load_cam(path: str | os.PathLike[str]) -> CamRecord:
    """Read a CAM record written by :func:`save_cam` (``allow_pickle=False``); bad files name themselves."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rec = CamRecord(data["keys"], data["cam"], tuple(int(v) for v in data["size"]), data["scores"])
    except FileNotFoundError:
        raise InputError(path, "CAM file is missing") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot read CAM file ({err})") from None
    if rec.cam.ndim != 3 or rec.cam.shape[0] != rec.keys.size:
        raise InputError(path, f"CAM shape {rec.cam.shape} does not match {rec.keys.size} keys")
    return rec


def index_cam_dirs(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, Path]:
    """Map every id to its CAM file ``<id>.npz`` among the shard folders ``dirs``; a missing id is an InputError."""
    return index_shard_files(dirs, ids, ".npz", "CAM")
