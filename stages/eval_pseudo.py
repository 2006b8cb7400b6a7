#!/usr/bin/env python
"""Evaluate the pseudo labels of a split against its masks: mIoU, per-class IoU, FP/FN."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.evaluate import evaluate_labels
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import index_label_dirs, write_json, write_text

log = logging.getLogger("wsss")


def main(args, params):
    data = VOCLayoutDataset(args.dataset)
    ids = data.mask_ids(args.split)
    cm = evaluate_labels(data, ids, index_label_dirs(args.labels, ids))
    metrics = cm.to_json_dict(data.classes) | {"split": args.split, "images": len(ids)}
    log.info(
        "pseudo-label mIoU %.2f %% (all classes %.2f %%), background FP %.3f FN %.3f, foreground FP %.3f FN %.3f",
        100 * metrics["miou_present"],
        100 * (metrics["miou_all"] or 0.0),
        metrics["bg_fp"] or 0.0,
        metrics["bg_fn"] or 0.0,
        metrics["fg_fp_mean"] or 0.0,
        metrics["fg_fn_mean"] or 0.0,
    )
    write_json(args.metrics, metrics)
    write_text(args.miou, f"{100 * metrics['miou_present']:.2f}\n")


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="evaluation split (its ids need pseudo labels and masks)")
    parser.add_argument("--labels", nargs="+", required=True, help="pseudo-label shard folders covering the split")
    parser.add_argument("--miou", required=True, help="one number: mIoU in %% over classes present in GT")
    parser.add_argument("--metrics", required=True, help="JSON: per-class IoU, FP/FN, accuracy")
    sys.exit(run_stage(main, parser))
