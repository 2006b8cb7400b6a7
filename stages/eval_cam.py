#!/usr/bin/env python
"""Evaluate CAMs of a split at the configured background score; report a background-score sweep (never used to pick it)."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.outputs.report import save_sweep
from wsss.pipeline.evaluate import evaluate_cams, sweep_table
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import write_json, write_text
from wsss.runtime.stage_config import parse_view, resolve_auto

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("eval_cam", params)
    data = VOCLayoutDataset(args.dataset)
    ids = data.mask_ids(args.split)
    source = "calibrated (auto)" if params["cam"]["bg_score"] == "auto" else "configured"
    cam = resolve_auto(params["cam"], ["bg_score"], args.calibration, "cam")
    result = evaluate_cams(data, ids, args.cams, cam["bg_score"], cam["sweep"])
    metrics = result.main.to_json_dict(data.classes)
    metrics |= {
        "split": args.split,
        "images": len(ids),
        "bg_score": cam["bg_score"],
        "bg_score_source": source,
        "image_f1_micro": result.f1.micro_f1(),
        "baselines_miou": {name: cm.scores()["miou_present"] for name, cm in result.baselines.items()},
    }
    rows = sweep_table(result)
    log.info(
        "CAM mIoU %.2f %% (bg %.2f), image-level F1 %.3f",
        100 * metrics["miou_present"],
        cam["bg_score"],
        metrics["image_f1_micro"],
    )
    save_sweep(
        args.plot,
        [r["bg_score"] for r in rows],
        [100 * r["miou"] for r in rows],
        cam["bg_score"],
        source,
        "background score",
        f"{args.split}: CAM background-score sweep",
    )
    write_json(
        args.sweep,
        {
            "split": args.split,
            "note": "reported only (uses the masks); never picks bg_score",
            "bg_score": cam["bg_score"],
            "bg_score_source": source,
            "rows": rows,
        },
    )
    write_json(args.metrics, metrics)
    write_text(args.miou, f"{100 * metrics['miou_present']:.2f}\n")


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="evaluation split (its ids must have CAMs and masks)")
    parser.add_argument("--cams", nargs="+", required=True, help="CAM shard folders")
    parser.add_argument("--miou", required=True, help="one number: mIoU in %% over classes present in GT")
    parser.add_argument("--metrics", required=True, help="JSON: per-class IoU, accuracy, FP/FN, image-level F1")
    parser.add_argument("--sweep", required=True, help="JSON: mIoU per background score")
    parser.add_argument("--plot", required=True, help="PNG of the sweep")
    parser.add_argument("--calibration", nargs="*", default=[], help="calibration.json (for cam.bg_score auto)")
    sys.exit(run_stage(main, parser))
