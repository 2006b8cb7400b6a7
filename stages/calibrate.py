#!/usr/bin/env python
"""Choose the CAM background score and the IR-label thresholds without pixel labels (wsss.pipeline.calibrate): the trained
classifier scores the CAM regions of training images (held-out ones first) at each candidate score; writes
calibration.json."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

import torch

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.engine.train import resolve_device
from wsss.methods import method_argument
from wsss.ops.cam import upsample_cam
from wsss.pipeline.calibrate import (
    CRITERION,
    IR_CRITERION,
    RegionEvidence,
    add_image,
    calibration_set,
    classifier_scores,
    ir_label_bracket,
    log_rows,
)
from wsss.pipeline.classify import load_classifier
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import write_json
from wsss.runtime.progress import progress
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("calibrate", params)
    data = VOCLayoutDataset(args.dataset)
    ids, held = calibration_set(
        data.ids(args.split), params["cls"]["holdout_fraction"], params["cam"]["calibration_images"]
    )
    device = resolve_device(args.device)
    log.info("device %s: %d images of %s (%d held out from the classifier)", device, len(ids), args.split, held)
    model = load_classifier(params["cls"], data.num_classes - 1, args.method, args.model, device)
    evidence, score_fn = RegionEvidence.zeros(params["cam"]["sweep"]), classifier_scores(model, args.method)
    paths = index_cam_dirs(args.cams, ids)
    for image_id in progress(ids, desc="calibrate", mininterval=5.0, file=sys.stderr):
        rec = load_cam(paths[image_id])
        image = torch.from_numpy(to_chw(normalize(data.image(image_id)))).to(device)
        add_image(evidence, score_fn, image, upsample_cam(rec.cam, rec.size), rec.keys)
    # the sweep's ends only bracket it (IR-label thresholds)
    chosen = evidence.choice(interior=True, tolerance_se=params["cam"]["calibration_se"])
    rows = log_rows(evidence, "bg_score")
    log.info("calibrated cam.bg_score %.2f from %d image-class pairs", chosen, evidence.pairs)
    if chosen in (evidence.thresholds[1], evidence.thresholds[-2]):
        log.warning(
            "cam.bg_score %.2f is next to the end of cam.sweep: the best may lie beyond it; widen cam.sweep", chosen
        )
    conf_fg, conf_bg = ir_label_bracket(evidence, chosen, params["cam"]["bracket_area_ratio"])
    log.info("calibrated irn.conf_fg %.2f, irn.conf_bg %.2f", conf_fg, conf_bg)
    write_json(
        args.out,
        {
            "bg_score": chosen,
            "conf_fg": conf_fg,
            "conf_bg": conf_bg,
            "criterion": CRITERION,
            "ir_label_criterion": IR_CRITERION,
            "split": args.split,
            "images": len(ids),
            "pairs": evidence.pairs,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="the classifier's training split")
    parser.add_argument("--cams", nargs="+", required=True, help="CAM shard folders of that split")
    method_argument(parser)
    parser.add_argument("--model", required=True, help="trained classifier state dict (model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="calibration.json")
    sys.exit(run_stage(main, parser))
