#!/usr/bin/env python
"""The oracle sweep of the random walk's background threshold on an evaluation split (uses the masks: reported
only, never picks the threshold), with the threshold the run uses drawn on it."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.metrics import ConfusionMatrix
from wsss.engine.train import load_state_dict_file, resolve_device
from wsss.outputs.report import save_sweep
from wsss.pipeline.pseudo_labels import build_irn, iter_walk_scores, labels_from_walk
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import write_json
from wsss.runtime.stage_config import parse_view, resolve_auto

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("sweep_pseudo", params)
    source = "calibrated (auto)" if params["irn"]["bg_threshold"] == "auto" else "configured"
    irn = resolve_auto(params["irn"], ["bg_threshold"], args.calibration, "irn")
    data = VOCLayoutDataset(args.dataset)
    ids = data.mask_ids(args.split)
    device = resolve_device(args.device)
    model = build_irn(irn, params["cls"]["backbone"], pretrained=False)
    model.load_state_dict(load_state_dict_file(args.model))
    model.to(device).eval()
    thresholds = sorted(set(irn["sweep"]) | {irn["bg_threshold"]})
    cms = {t: ConfusionMatrix(data.num_classes, pred_ignore_as_background=True) for t in thresholds}
    for image_id, image, keys, scores in iter_walk_scores(model, data, ids, args.cams, irn, device, "sweep"):
        gt = data.mask(image_id)
        for cm, label in zip(cms.values(), labels_from_walk(scores, keys, image.shape[:2], list(cms))):
            cm.update(label, gt)
    rows = [{"bg_threshold": t, "miou": cm.scores()["miou_present"]} for t, cm in cms.items() if t in irn["sweep"]]
    chosen = cms[irn["bg_threshold"]].scores()["miou_present"]
    peak = max(rows, key=lambda r: r["miou"])
    log.info(
        "pseudo-label mIoU %.2f %% at bg_threshold %.2f (%s); sweep peak %.2f %% at %.2f",
        100 * chosen,
        irn["bg_threshold"],
        source,
        100 * peak["miou"],
        peak["bg_threshold"],
    )
    save_sweep(
        args.plot,
        [r["bg_threshold"] for r in rows],
        [100 * r["miou"] for r in rows],
        irn["bg_threshold"],
        source,
        "random-walk background threshold",
        f"{args.split}: pseudo-label threshold sweep",
    )
    write_json(
        args.out,
        {
            "split": args.split,
            "note": "reported only (uses the masks); never picks bg_threshold",
            "bg_threshold": irn["bg_threshold"],
            "bg_threshold_source": source,
            "miou": chosen,
            "images": len(ids),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="evaluation split (its ids must have CAMs and masks)")
    parser.add_argument("--cams", nargs="+", required=True, help="CAM shard folders covering the split")
    parser.add_argument("--model", required=True, help="trained IRNet state dict (irn/model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--calibration", nargs="*", default=[], help="calibration_pseudo.json (for irn.bg_threshold auto)"
    )
    parser.add_argument("--out", required=True, help="JSON: mIoU per background threshold")
    parser.add_argument("--plot", required=True, help="PNG of the sweep")
    sys.exit(run_stage(main, parser))
