#!/usr/bin/env python
"""Figures of one run for `snakemake --report`: CAM overlays, pseudo labels vs GT, DeepLab with/without CRF,
per-class IoU, loss curves and the CAM → pseudo → DeepLab → DeepLab+CRF mIoU progression."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys
from pathlib import Path

from wsss.data.dataset import VOCLayoutDataset
from wsss.outputs.report import (
    cam_overlay_rows,
    pseudo_rows,
    read_json,
    read_train_log,
    save_class_iou,
    save_loss_curves,
    save_message,
    save_miou_progression,
    save_panel_grid,
    segmentation_rows,
    stage_scores,
)
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_text

log = logging.getLogger("wsss")

FIGURES = ["cam_overlays", "pseudo_vs_gt", "deeplab_crf", "class_iou", "loss_curves", "miou_progression"]
NO_CAMS = "this run trains DeepLab on ground-truth masks: it has no CAMs or pseudo labels"


def _one(paths, flag):
    """The single file of an optional ``nargs='*'`` option, or None."""
    if len(paths) > 1:
        raise InputError(flag, f"takes at most one file, got {len(paths)}")
    return paths[0] if paths else None


def main(args, params):
    data = VOCLayoutDataset(args.dataset)
    run, n, bg = params["run"], params["images"], params["bg_score"]
    if bg == "auto" and args.cam_metrics:  # the calibrated score eval_cam used
        bg = read_json(args.cam_metrics[0], "CAM metrics")["bg_score"]
    cam_ids, pseudo_ids, seg_ids = (data.mask_ids(s)[:n] for s in (args.cam_split, args.pseudo_split, args.seg_split))
    log.info(
        "%s: %d images per panel figure, splits cam %s, pseudo %s, seg %s",
        run,
        n,
        args.cam_split,
        args.pseudo_split,
        args.seg_split,
    )
    # read and check every input before the first figure is written
    cams = cam_overlay_rows(data, cam_ids, args.cams, bg) if args.cams else None
    pseudo = pseudo_rows(data, pseudo_ids, args.pseudo) if args.pseudo else None
    seg = segmentation_rows(data, seg_ids, args.logits, args.crf)
    miou, per_class = stage_scores(
        _one(args.cam_metrics, "--cam-metrics"), _one(args.pseudo_metrics, "--pseudo-metrics"), args.seg_metrics
    )
    curves = {Path(p).parent.name: read_train_log(p) for p in args.train_logs}
    log.info("mIoU %s", ", ".join(f"{k} {v:.2f} %" for k, v in miou.items() if v is not None))

    figures = {name: Path(args.out_dir) / f"{name}.png" for name in FIGURES}
    if cams is not None:
        save_panel_grid(
            cams,
            ["image", "CAM", f"CAM labels (bg {bg})", "ground truth"],
            cam_ids,
            figures["cam_overlays"],
            f"{run}: CAMs on {args.cam_split}",
        )
    else:
        save_message(figures["cam_overlays"], f"{run}: CAMs", NO_CAMS)
    if pseudo is not None:
        save_panel_grid(
            pseudo,
            ["image", "pseudo label", "ground truth", "disagreement"],
            pseudo_ids,
            figures["pseudo_vs_gt"],
            f"{run}: pseudo labels on {args.pseudo_split}",
        )
    else:
        save_message(figures["pseudo_vs_gt"], f"{run}: pseudo labels", NO_CAMS)
    save_panel_grid(
        seg,
        ["image", "DeepLab", "DeepLab + CRF", "ground truth"],
        seg_ids,
        figures["deeplab_crf"],
        f"{run}: DeepLab on {args.seg_split}",
    )
    save_class_iou(per_class, data.classes, figures["class_iou"], f"{run}: per-class IoU")
    save_miou_progression(miou, figures["miou_progression"], f"{run}: mIoU along the pipeline")
    save_loss_curves(curves, figures["loss_curves"], f"{run}: training losses")
    write_text(args.done, "".join(f"{p}\n" for p in figures.values()))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset root")
    parser.add_argument("--cam-split", required=True, help="split of the CAM panels and the CAM metrics")
    parser.add_argument("--pseudo-split", required=True, help="split of the pseudo-label panels and metrics")
    parser.add_argument("--seg-split", required=True, help="split of the DeepLab panels and metrics")
    parser.add_argument("--cams", nargs="*", default=[], help="CAM shard folders covering --cam-split (none: no CAMs)")
    parser.add_argument("--pseudo", nargs="*", default=[], help="pseudo-label shard folders covering --pseudo-split")
    parser.add_argument("--logits", nargs="+", required=True, help="DeepLab logit shard folders of --seg-split")
    parser.add_argument("--crf", nargs="+", required=True, help="CRF label shard folders of --seg-split")
    parser.add_argument("--cam-metrics", nargs="*", default=[], help="cam_<split>_metrics.json (none: no CAMs)")
    parser.add_argument("--pseudo-metrics", nargs="*", default=[], help="pseudo_<split>_metrics.json")
    parser.add_argument("--seg-metrics", required=True, help="deeplab_<split>_metrics.json")
    parser.add_argument(
        "--train-logs",
        nargs="+",
        required=True,
        help="train_log.csv files; each panel is named after the file's folder (cls, irn, deeplab)",
    )
    parser.add_argument("--out-dir", required=True, help="folder of the PNGs")
    parser.add_argument("--done", required=True, help="written last: the list of the figures")
    sys.exit(run_stage(main, parser))
