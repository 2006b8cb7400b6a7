#!/usr/bin/env python
"""The gate after train_seg: DeepLab's predictions against its own training labels on training images (no mask
read); a fit mIoU below gates.min_seg_fit stops the DAG with one line naming the least reproduced class
(gates.enabled false: a warning); gate.json holds the fit and every class's IoU."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import math
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.seg_data import training_label_paths
from wsss.engine.train import resolve_device
from wsss.pipeline.gates import seg_gate
from wsss.pipeline.segment import label_fit, load_segmenter
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_json
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("seg_gate", params)
    gates, seg = params["gates"], params["seg"]
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)[: gates["seg_fit_images"]]
    labels = training_label_paths(data, ids, seg["label_source"], args.labels)
    device = resolve_device(args.device)
    log.info(
        "device %s: DeepLab on %d training images of %s against its %s labels",
        device,
        len(ids),
        args.split,
        seg["label_source"],
    )
    model = load_segmenter(seg, data.num_classes, args.model, device)
    scores = label_fit(model, data, ids, labels, seg, device).scores()
    fit, iou = scores["miou_present"], scores["iou"]
    passed, message = seg_gate(fit, iou, data.classes, len(ids), bool(gates["enabled"]), float(gates["min_seg_fit"]))
    if not passed and not args.verdict:
        raise InputError(args.model, message)
    (log.info if message.startswith("seg gate passed") else log.warning)(message)
    write_json(
        args.verdict or args.out,
        {
            "passed": passed,
            "enabled": bool(gates["enabled"]),
            "min_seg_fit": gates["min_seg_fit"],
            "fit_miou": fit,
            "images": len(ids),
            "split": args.split,
            "message": message,
            "iou": {name: None if math.isnan(v) else v for name, v in zip(data.classes, iou)},
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="DeepLab's training split")
    parser.add_argument("--labels", nargs="*", default=[], help="pseudo-label shard folders (label_source pseudo)")
    parser.add_argument("--model", required=True, help="results/{run}/deeplab/model.pt")
    parser.add_argument("--device", default="auto")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="results/{run}/deeplab/gate.json, written only when it passes")
    out.add_argument(
        "--verdict",
        help="write the verdict, passed or not, here and exit 0 (rule seg_verdict, the comparison target's checkpoint)",
    )
    sys.exit(run_stage(main, parser))
