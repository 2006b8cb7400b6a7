#!/usr/bin/env python
"""Evaluate DeepLab predictions of a split with and without CRF; the headline number is the CRF mIoU."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.evaluate import evaluate_segmentation, segmentation_report
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import write_json, write_text

log = logging.getLogger("wsss")


def main(args, params):
    data = VOCLayoutDataset(args.dataset)
    ids = data.mask_ids(args.split)
    report = segmentation_report(evaluate_segmentation(data, ids, args.logits, args.crf), data.classes, args.split)
    report["images"] = len(ids)
    log.info(
        "DeepLab %s mIoU %.2f %% without CRF, %.2f %% with CRF", args.split, report["miou_no_crf"], report["miou_crf"]
    )
    write_json(args.metrics, report)
    write_text(args.miou, f"{report['miou_crf']:.2f}\n")


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="evaluation split (its ids need logits, CRF labels and masks)")
    parser.add_argument("--logits", nargs="+", required=True, help="logit shard folders (infer_seg)")
    parser.add_argument("--crf", nargs="+", required=True, help="CRF label shard folders (crf)")
    parser.add_argument("--miou", required=True, help="one number: mIoU with CRF in %%, two decimals")
    parser.add_argument("--metrics", required=True, help="JSON: per-class IoU etc. with and without CRF")
    sys.exit(run_stage(main, parser))
