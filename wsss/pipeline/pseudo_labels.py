"""IRN refinement (docs/method.md#irnet) as library functions: IR labels from CAMs, IRNet, its loss, random-walk labels.

The stages ``cam_to_ir_label``, ``train_irn``, ``make_pseudo`` and ``eval_pseudo`` are recipes over these functions.

Deviations from the reference, all deliberate:

* The CAM behind the IR labels is, by default, the stored stride-4 CAM upsampled to the image (``upsample_cam``),
  the stand-in for VWL's ``high_res`` used by ``eval_cam`` too; ``cam.high_res: per_scale`` stores and reads the
  reference's per-scale upsampled sum instead (:meth:`wsss.pipeline.classify.CamRecord.full_res`).
* The boundary map of an image is computed on the whole image padded (right/bottom, with the mean) to a multiple
  of 16, not on a 512×512 canvas, so images larger than 512 px are not truncated. The padded size changes the
  GroupNorm statistics of the branches, so ``irn.boundary_canvas: 512`` restores the reference's canvas.
* The random walk is the sparse operator of :mod:`wsss.ops.random_walk` (same numbers as IRN's dense (hw)² matrix
  raised to 2^exp_times, without building it).
* IRN's post-training mean-shift pass (the mean displacement, for instance segmentation) is skipped: semantic pseudo
  labels use the boundary branch only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.engine.train import MicroBatch, Objective
from wsss.models.backbone import FROM_CLS, build_resnet, build_weights, init_from_classifier
from wsss.models.irn import IRNet
from wsss.ops.path_index import PathIndex
from wsss.ops.random_walk import random_walk
from wsss.pipeline.evaluate import labels_at_thresholds
from wsss.runtime.errors import InputError
from wsss.runtime.progress import progress

EPS = 1e-5
PAD_MULTIPLE = 16

# -------------------------------------------------------------------------- IRNet model (docs/method.md#irnet-training)


def backbone_depth(params: Mapping[str, Any], cls_depth: int) -> int:
    """The IRN backbone depth: the classifier's for ``pretrained: from_cls``, else ``params["backbone"]``."""
    return int(cls_depth) if params["pretrained"] == FROM_CLS else int(params["backbone"])


def build_irn(
    params: Mapping[str, Any],
    cls_depth: int,
    cls_model: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
) -> IRNet:
    """IRNet from the ``irn`` config section. ``pretrained``: ``imagenet``, ``none``, a state-dict file, or
    ``from_cls`` (the backbone of the trained classifier ``cls_model``). ``pretrained=False`` builds random weights
    (a trained IRNet state dict is loaded next)."""
    depth = backbone_depth(params, cls_depth)
    source = params["pretrained"] if pretrained else "none"
    backbone = build_resnet(
        depth,
        strides=(2, 2, 2, 1),
        weights=build_weights(source),
        sha256=params["pretrained_sha256"] if pretrained else None,
        cache_dir=cache_dir,
        norm="fixed",
        freeze_stem=True,
    )
    init_from_classifier(backbone, source, cls_model, "irn")
    return IRNet(backbone)


def check_train_params(params: Mapping[str, Any]) -> None:
    """Reject a crop the radius-``radius`` pair geometry cannot use: crop/4 must exceed 2·(radius − 1)."""
    crop, radius = int(params["crop"]), int(params["radius"])
    if crop % 4 or crop // 4 <= 2 * (radius - 1):
        raise InputError(
            "config: irn.crop",
            f"{crop} must be a multiple of 4 above {8 * (radius - 1)} (the "
            f"stride-4 label must be wider than 2·(radius − 1) for radius {radius})",
        )


def optimizer_groups(model: IRNet, lr_mult_disp: float) -> list[dict[str, Any]]:
    """Boundary branch at 1× the lr, displacement branch at ``lr_mult_disp``× (IRN: 0.1 and 1.0)."""
    edge, disp = model.param_groups()
    return [{"params": edge, "lr_mult": 1.0}, {"params": disp, "lr_mult": lr_mult_disp}]


# ----------------------------------------------------------------------------- IRN loss (docs/method.md#irnet-training)


def pair_loss_maps(
    edge_logits: torch.Tensor, displacement: torch.Tensor, path_index: PathIndex
) -> dict[str, torch.Tensor]:
    """Per-pair loss maps before masking: ``pos_aff``/``neg_aff`` N×K×h'×w', ``dp_fg``/``dp_bg`` N×2×K×h'×w'.

    a = 1 − max sigmoid(edge) along the pair's path; pos = −log(a + 1e-5), neg = −log(1 + 1e-5 − a);
    pair = D(source) − D(destination); dp_fg = |pair − δ| with δ = (dy, dx) the pair's offset; dp_bg = |pair|.
    """
    aff = path_index.path_affinity(torch.sigmoid(edge_logits))
    pair = path_index.pair_difference(displacement)
    delta = path_index.offsets_tensor.to(device=pair.device, dtype=pair.dtype).t()[None, :, :, None, None]
    return {
        "pos_aff": -torch.log(aff + EPS),
        "neg_aff": -torch.log(1.0 + EPS - aff),
        "dp_fg": (pair - delta).abs(),
        "dp_bg": pair.abs(),
    }


PAIR_KINDS = ("bg_pos", "fg_pos", "neg")


def pair_label_counts(pairs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The number of ``bg_pos``, ``fg_pos`` and ``neg`` pairs (float64 vector of 3): the loss denominators."""
    return torch.stack([pairs[k].sum() for k in PAIR_KINDS]).to(torch.float64)


def aggregate_losses(
    maps: Mapping[str, torch.Tensor], pairs: Mapping[str, torch.Tensor], totals: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """IRN's loss from the pair maps and the bool pair labels ``bg_pos``/``fg_pos``/``neg`` (N×K×h'×w'):

    pos_aff = ½[Σ bg_pos·L_pos/(Σ bg_pos + ε) + Σ fg_pos·L_pos/(Σ fg_pos + ε)],
    neg_aff = Σ neg·L_neg/(Σ neg + ε),
    dp_fg = Σ fg_pos·|pair − δ|/(2Σ fg_pos + ε), dp_bg = Σ bg_pos·|pair|/(2Σ bg_pos + ε) (sums over both channels),
    total = (pos_aff + neg_aff)/2 + (dp_fg + dp_bg)/2; sums run over the whole batch. With ``totals`` (the pair
    counts of a global batch this one is part of, :func:`pair_label_counts`) the denominators use those counts,
    so every term is this batch's share of the global-batch term.
    """
    dtype = maps["pos_aff"].dtype
    bg, fg, neg = (pairs[k].to(dtype) for k in PAIR_KINDS)
    n_bg, n_fg, n_neg = (bg.sum(), fg.sum(), neg.sum()) if totals is None else totals.to(dtype)
    bg_pos_aff = (bg * maps["pos_aff"]).sum() / (n_bg + EPS)
    fg_pos_aff = (fg * maps["pos_aff"]).sum() / (n_fg + EPS)
    terms = {
        "bg_pos_aff": bg_pos_aff,
        "fg_pos_aff": fg_pos_aff,
        "pos_aff": bg_pos_aff / 2 + fg_pos_aff / 2,
        "neg_aff": (neg * maps["neg_aff"]).sum() / (n_neg + EPS),
        "dp_fg": (fg.unsqueeze(1) * maps["dp_fg"]).sum() / (2 * n_fg + EPS),
        "dp_bg": (bg.unsqueeze(1) * maps["dp_bg"]).sum() / (2 * n_bg + EPS),
    }
    terms["total"] = (terms["pos_aff"] + terms["neg_aff"]) / 2 + (terms["dp_fg"] + terms["dp_bg"]) / 2
    return terms


def irn_loss(
    edge_logits: torch.Tensor,
    displacement: torch.Tensor,
    labels: torch.Tensor,
    path_index: PathIndex,
    totals: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All IRN loss terms (see :func:`aggregate_losses`) for a batch: labels N×h×w (0, class ids, 255) at the
    resolution of the N×1×h×w edge logits and N×2×h×w displacement (computed in float32)."""
    maps = pair_loss_maps(edge_logits.float(), displacement.float(), path_index)
    return aggregate_losses(maps, path_index.pair_labels(labels), totals)


class IRNObjective(Objective):
    """IRN's loss for :func:`wsss.engine.train.fit`: the pair-normalised terms divide by the pair counts of the whole
    global batch (from the labels, before any forward pass), so micro-batch and process shares sum exactly to
    the single-process loss of the whole batch."""

    def __init__(self, path_index: PathIndex, device: torch.device) -> None:
        self.path_index, self.device = path_index, device

    def counts(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        # where the batch goes (the GPU when there is one), without the N×K×h'×w' pair labels
        return self.path_index.pair_label_counts(batch["label"].to(self.device, non_blocking=True))

    def loss(
        self, model: torch.nn.Module, batch: Mapping[str, Any], micro: MicroBatch | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        edge, disp = model(images)
        terms = irn_loss(edge, disp, labels, self.path_index, None if micro is None else micro.totals)
        return terms["total"], {k: float(v.detach()) for k, v in terms.items() if k != "total"}


def training_step(
    model: IRNet, batch: Mapping[str, Any], path_index: PathIndex, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward and loss of one whole batch (means over its pairs); the parts are logged by :func:`wsss.engine.train.fit`."""
    return IRNObjective(path_index, device).loss(model, batch, None)


# --------------------------------------------------------------------------- pseudo labels (docs/method.md#random-walk)


@torch.no_grad()
def boundary_map(model: IRNet, image: torch.Tensor, canvas: int | None = None) -> torch.Tensor:
    """Boundary probability B of a normalised 3×H×W image at stride 4: (⌈H/4⌉, ⌈W/4⌉), float32.

    The image and its flip are each zero-padded right/bottom to a multiple of 16, or with ``canvas`` (a multiple of
    16; the reference's 512) to canvas × canvas, each side at least its multiple of 16 (the reference would crop a
    larger image); B = sigmoid(e/2 + flip(e_flip)/2) with both logits cropped to the stride-4 size of the unpadded
    image first.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be 3×H×W, got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    h4, w4 = (height - 1) // 4 + 1, (width - 1) // 4 + 1
    if canvas is not None and (canvas <= 0 or canvas % PAD_MULTIPLE):
        raise ValueError(f"canvas must be a positive multiple of {PAD_MULTIPLE}, got {canvas}")
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if canvas is not None:
        pad_h, pad_w = max(pad_h, canvas - height), max(pad_w, canvas - width)
    pack = F.pad(torch.stack([image, image.flip(-1)]), (0, pad_w, 0, pad_h))
    edge = model.edge_logits(pack).float()[:, 0, :h4, :w4]
    return torch.sigmoid(edge[0] / 2 + edge[1].flip(-1) / 2)


@torch.no_grad()
def walk_scores(
    cam4: torch.Tensor | np.ndarray,
    keys: np.ndarray | Sequence[int],
    boundary: torch.Tensor,
    size: tuple[int, int],
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> torch.Tensor | None:
    """The random walk's class scores of one image: Cv×H×W in [0, 1] (``None`` when there are no keys or the seeds
    vanish everywhere).

    Seeds = the stride-4 CAM Cv×h4×w4 (no background channel) ⊙ (1 − B); 2^exp_times walk steps on the
    affinities (1 − max B on the path)^β within ``radius``; ×4 bilinear upsampling cropped to ``size``; division
    by the global maximum.
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    height, width = size
    cam = torch.as_tensor(np.asarray(cam4, dtype=np.float32) if not isinstance(cam4, torch.Tensor) else cam4)
    cam = cam.to(device=boundary.device, dtype=torch.float32)
    if cam.ndim != 3 or cam.shape[0] != keys.size or tuple(cam.shape[1:]) != tuple(boundary.shape):
        raise ValueError(
            f"CAM {tuple(cam.shape)} must be Cv×h×w with Cv = {keys.size} keys and h×w = boundary "
            f"{tuple(boundary.shape)}"
        )
    if 4 * boundary.shape[0] < height or 4 * boundary.shape[1] < width:
        raise ValueError(f"boundary {tuple(boundary.shape)} is too small for an image of {size} at stride 4")
    if keys.size == 0:
        return None
    walked = random_walk(cam, boundary.float(), radius, beta, 2**exp_times)
    up = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :height, :width]
    peak = up.max()
    if not peak > 0:
        return None
    return up / peak


def pseudo_label(
    cam4: torch.Tensor | np.ndarray,
    keys: np.ndarray | Sequence[int],
    boundary: torch.Tensor,
    size: tuple[int, int],
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    bg_threshold: float = 0.25,
) -> np.ndarray:
    """Pseudo label (uint8 H×W, 0 = background, class ids keys + 1, never 255) by IRN's random walk: the
    :func:`walk_scores` with a constant background channel ``bg_threshold`` prepended; argmax (ties → background)
    mapped through [0] + (keys + 1). No keys, or seeds that vanish everywhere, give all background.
    """
    return labels_from_walk(
        walk_scores(cam4, keys, boundary, size, radius, beta, exp_times), keys, size, [bg_threshold]
    )[0]


def iter_walk_scores(
    model: IRNet,
    data: VOCLayoutDataset,
    ids: Sequence[str],
    cam_dirs: Sequence[str | os.PathLike[str]],
    params: Mapping[str, Any],
    device: torch.device,
    desc: str = "walk",
) -> Iterable[tuple[str, np.ndarray, np.ndarray, torch.Tensor | None]]:
    """Per image of ``ids``: ``(id, RGB image, keys, walk scores)``: the IRNet boundary map (``params`` = the
    ``irn`` section: boundary_canvas, rw_radius, beta, exp_times) and the :func:`walk_scores` of its stored CAM.
    A CAM of another size than its image is an InputError naming the CAM file."""
    cam_paths = index_cam_dirs(cam_dirs, ids)
    with torch.inference_mode():
        for image_id in progress(ids, desc=desc, mininterval=5.0, file=sys.stderr):
            image = data.image(image_id)
            rec = load_cam(cam_paths[image_id])
            if tuple(rec.size) != image.shape[:2]:
                raise InputError(
                    cam_paths[image_id], f"CAM of image size {rec.size} but the image is {image.shape[:2]}"
                )
            boundary = boundary_map(
                model, torch.from_numpy(to_chw(normalize(image))).to(device), params["boundary_canvas"]
            )
            yield (
                image_id,
                image,
                rec.keys,
                walk_scores(
                    rec.cam, rec.keys, boundary, rec.size, params["rw_radius"], params["beta"], params["exp_times"]
                ),
            )


def labels_from_walk(
    scores: torch.Tensor | None, keys: np.ndarray | Sequence[int], size: tuple[int, int], bg_thresholds: Sequence[float]
) -> list[np.ndarray]:
    """The pseudo labels of :func:`walk_scores` at each of ``bg_thresholds`` (see :func:`pseudo_label`; the argmax
    is computed once, :func:`wsss.pipeline.evaluate.labels_at_thresholds`)."""
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if scores is None:
        return [np.zeros(tuple(size), np.uint8) for _ in bg_thresholds]
    return labels_at_thresholds(scores.float().cpu().numpy(), keys, bg_thresholds)


__all__ = [
    "PAIR_KINDS",
    "IRNObjective",
    "aggregate_losses",
    "backbone_depth",
    "boundary_map",
    "build_irn",
    "check_train_params",
    "irn_loss",
    "optimizer_groups",
    "pair_label_counts",
    "pair_loss_maps",
    "pseudo_label",
    "training_step",
]
