"""Figures of one run for the Snakemake HTML report: image panels (CAMs, pseudo labels, DeepLab with and without
CRF against the ground truth), per-class IoU bars, loss curves and the stage-by-stage mIoU.

Every figure is written atomically as a PNG with matplotlib's Agg backend (no display needed). Stages a run does
not have (CAMs and pseudo labels of a run trained on ground-truth masks) become a figure that says so.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.artifacts.logits import index_logit_dirs, labels_from_logits, load_logits
from wsss.data.dataset import VOCLayoutDataset
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE, atomic_path, index_label_dirs, palette_rgb, read_json, read_label_png

_PALETTE = palette_rgb()
STAGES = ("CAM", "pseudo", "DeepLab", "DeepLab+CRF")


def colorize(labels: np.ndarray) -> np.ndarray:
    """H×W uint8 class ids → H×W×3 uint8 RGB in the VOC palette (255 = ignore keeps the palette's cream)."""
    return _PALETTE[np.asarray(labels, dtype=np.uint8)]


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an H×W map in [0, 1] (jet colours) over an H×W×3 uint8 image; returns uint8 RGB."""
    colours = plt.get_cmap("jet")(np.clip(heat, 0.0, 1.0))[..., :3]
    blend = np.clip((1 - alpha) * image / 255.0 + alpha * colours, 0.0, 1.0)
    return (255 * blend).astype(np.uint8)


def disagreement(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """H×W×3 uint8: white where ``pred`` ≠ ``gt``, black where they agree, grey where the ground truth is ignore."""
    out = np.where((pred != gt)[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    out[gt == IGNORE] = 128
    return out


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_panel_grid(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str],
    row_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> None:
    """One PNG of image panels: a row per image, a column per titled view."""
    if not rows:
        raise ValueError("no images to show")
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows + 0.4), dpi=100, squeeze=False)
    for r, (panels, name) in enumerate(zip(rows, row_names)):
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def save_message(path: str | os.PathLike[str], title: str, message: str) -> None:
    """A small PNG that only says ``message`` (for a figure whose stage the run does not have)."""
    fig, ax = plt.subplots(figsize=(5, 1.6), dpi=100)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def _check_size(path: str | os.PathLike[str], what: str, size: Sequence[int], mask_shape: Sequence[int]) -> None:
    """An artifact whose size differs from its image's mask is bad input naming the artifact's file."""
    if tuple(size) != tuple(mask_shape):
        raise InputError(path, f"{what} {tuple(size)} but the mask is {tuple(mask_shape)}")


def cam_overlay_rows(
    data: VOCLayoutDataset, ids: Sequence[str], cam_dirs: Sequence[str | os.PathLike[str]], bg_score: float
) -> list[list[np.ndarray]]:
    """Per image: the image, its CAMs (max over the ground-truth classes) over it, CAM labels at ``bg_score``,
    and the ground truth."""
    from wsss.ops.cam import cam_to_labels  # torch, as rec.full_res(): only when CAM panels are drawn

    paths = index_cam_dirs(cam_dirs, ids)
    rows = []
    for image_id in ids:
        image, gt = data.image(image_id), data.mask(image_id)
        rec = load_cam(paths[image_id])
        _check_size(paths[image_id], "CAM of image size", rec.size, gt.shape)
        cams = rec.full_res()
        heat = cams.max(axis=0) if cams.shape[0] else np.zeros(gt.shape, np.float32)
        rows.append([image, heat_overlay(image, heat), colorize(cam_to_labels(cams, rec.keys, bg_score)), colorize(gt)])
    return rows


def pseudo_rows(
    data: VOCLayoutDataset, ids: Sequence[str], label_dirs: Sequence[str | os.PathLike[str]]
) -> list[list[np.ndarray]]:
    """Per image: the image, its pseudo label, the ground truth and where the two disagree."""
    paths = index_label_dirs(label_dirs, ids)
    rows = []
    for image_id in ids:
        image, gt = data.image(image_id), data.mask(image_id)
        pseudo = read_label_png(paths[image_id], data.num_classes)
        _check_size(paths[image_id], "pseudo label of size", pseudo.shape, gt.shape)
        rows.append([image, colorize(pseudo), colorize(gt), disagreement(pseudo, gt)])
    return rows


def segmentation_rows(
    data: VOCLayoutDataset,
    ids: Sequence[str],
    logit_dirs: Sequence[str | os.PathLike[str]],
    crf_dirs: Sequence[str | os.PathLike[str]],
) -> list[list[np.ndarray]]:
    """Per image: the image, DeepLab's argmax without CRF, with CRF, and the ground truth."""
    logit_paths, crf_paths = index_logit_dirs(logit_dirs, ids), index_label_dirs(crf_dirs, ids)
    rows = []
    for image_id in ids:
        image, gt = data.image(image_id), data.mask(image_id)
        rec = load_logits(logit_paths[image_id])
        _check_size(logit_paths[image_id], "logits of image size", rec.size, gt.shape)
        refined = read_label_png(crf_paths[image_id], data.num_classes)
        _check_size(crf_paths[image_id], "CRF labels of size", refined.shape, gt.shape)
        rows.append([image, colorize(labels_from_logits(rec.logits, rec.size)), colorize(refined), colorize(gt)])
    return rows


def _field(data: Mapping[str, Any], path: str | os.PathLike[str], *keys: str) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise InputError(path, f"has no {'.'.join(keys)}")
        value = value[key]
    return value


def stage_scores(
    cam: str | None, pseudo: str | None, deeplab: str
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """From the metrics JSONs: mIoU (%) per stage (CAM, pseudo, DeepLab, DeepLab+CRF; None if the run lacks it)
    and per-class IoU (%) per stage, keyed by class name."""
    miou: dict[str, float | None] = {"CAM": None, "pseudo": None}
    per_class: dict[str, dict[str, float | None]] = {}
    for stage, path in (("CAM", cam), ("pseudo", pseudo)):
        if path:
            metrics = read_json(path, f"{stage} metrics")
            miou[stage] = 100 * float(_field(metrics, path, "miou_present"))
            per_class[stage] = _percent(_field(metrics, path, "iou"))
    metrics = read_json(deeplab, "DeepLab metrics")
    for stage, key in (("DeepLab", "no_crf"), ("DeepLab+CRF", "crf")):
        miou[stage] = float(_field(metrics, deeplab, f"miou_{key}"))
        per_class[stage] = _percent(_field(metrics, deeplab, key, "iou"))
    return miou, per_class


def _percent(iou: Mapping[str, float | None]) -> dict[str, float | None]:
    return {name: None if v is None else 100 * float(v) for name, v in iou.items()}


def save_class_iou(
    per_class: Mapping[str, Mapping[str, float | None]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> None:
    """Grouped bars: IoU (%) of every class, one bar per stage; classes without a value (no pixels) get none."""
    stages = [s for s in STAGES if s in per_class]
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(stages))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(classes) * max(1, len(stages)) / 2 + 2), 3.6), dpi=100)
    for k, stage in enumerate(stages):
        values = [per_class[stage].get(name) for name in classes]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(stages) - 1) / 2) * width, heights, width, label=stage)
    ax.set_xticks(
        x, classes, rotation=45 if len(classes) > 8 else 0, ha="right" if len(classes) > 8 else "center", fontsize=8
    )
    ax.set(ylabel="IoU (%)", ylim=(0, 100), title=title)
    ax.legend(fontsize=8, ncols=len(stages))
    fig.tight_layout()
    _save(fig, path)


def save_miou_progression(miou: Mapping[str, float | None], path: str | os.PathLike[str], title: str) -> None:
    """mIoU (%) along the pipeline, CAM → pseudo → DeepLab → DeepLab+CRF (stages the run lacks are left out)."""
    stages = [s for s in STAGES if miou.get(s) is not None and math.isfinite(miou[s])]
    values = [miou[s] for s in stages]
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
    ax.plot(range(len(stages)), values, marker="o")
    for k, v in enumerate(values):
        ax.annotate(f"{v:.2f}", (k, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=9)
    ax.set_xticks(range(len(stages)), stages)
    ax.set(ylabel="mIoU (%)", ylim=(0, max([100.0, *values])), title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def save_sweep(
    path: str | os.PathLike[str],
    thresholds: Sequence[float],
    miou: Sequence[float],
    chosen: float,
    source: str,
    xlabel: str,
    title: str,
) -> None:
    """The oracle sweep (mIoU in %% per threshold, from the masks: reported only) with the threshold the run uses
    drawn on it (``source``: configured or calibrated)."""
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(list(thresholds), list(miou), marker="o")
    ax.axvline(chosen, color="gray", linestyle="--", label=f"{source} {chosen:.2f}")
    ax.set(xlabel=xlabel, ylabel="mIoU (%)", title=title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def read_train_log(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A training stage's ``train_log.csv`` (step, lr, loss parts, and for the classifier the held-out columns
    ``heldout_*``, empty except on evaluation steps) as float columns, empty cells NaN; bad files name themselves."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise InputError(path, "training log is missing") from None
    if not rows or rows[0][:3] != ["step", "lr", "loss"]:
        raise InputError(path, "not a training log (expected a header starting step,lr,loss)")
    header, body = rows[0], [r for r in rows[1:] if r]
    try:
        table = np.asarray([[c if c.strip() else "nan" for c in r] for r in body], dtype=np.float64).reshape(
            len(body), len(header)
        )
    except ValueError:
        raise InputError(path, "training log rows are not numbers with one value per column") from None
    return {name: table[:, k] for k, name in enumerate(header)}


def save_loss_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike[str], title: str) -> None:
    """One panel per training stage (``{name: read_train_log(...)}``): every loss column against the step; the
    held-out columns (``heldout_*``: mAP, micro-F1 of the classifier) as markers on a right axis from 0 to 1, at
    the evaluated steps."""
    if not curves:
        raise ValueError("no training logs")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), dpi=100, squeeze=False)
    for ax, (name, columns) in zip(axes[0], curves.items()):
        for key, values in columns.items():
            if key not in ("step", "lr") and not key.startswith("heldout_"):
                ax.plot(columns["step"], values, label=key, linewidth=1.8 if key == "loss" else 1.0)
        ax.set(xlabel="step", ylabel="loss", title=name)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        held = {k: v for k, v in columns.items() if k.startswith("heldout_")}
        if held:
            right = ax.twinx()
            for (key, values), marker in zip(held.items(), "os^v"):
                at = np.isfinite(values)
                right.plot(
                    columns["step"][at],
                    values[at],
                    marker=marker,
                    markersize=3,
                    linewidth=1.0,
                    linestyle="--",
                    label=key.replace("heldout_", "held-out "),
                )
            right.set(ylim=(0, 1), ylabel="held-out")
            right.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


__all__ = [
    "STAGES",
    "cam_overlay_rows",
    "colorize",
    "disagreement",
    "heat_overlay",
    "pseudo_rows",
    "read_json",
    "read_train_log",
    "save_class_iou",
    "save_loss_curves",
    "save_message",
    "save_miou_progression",
    "save_panel_grid",
    "save_sweep",
    "segmentation_rows",
    "stage_scores",
]
