#!/usr/bin/env python
"""Pseudo labels of one CAM shard: IRNet boundaries (with flip) → random walk of the stride-4 CAMs → argmax."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys
from pathlib import Path

from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.train import load_state_dict_file, resolve_device
from wsss.pipeline.pseudo_labels import build_irn, iter_walk_scores, labels_from_walk
from wsss.runtime.cli import run_stage, shard_ids, shard_stage_parser
from wsss.runtime.io import atomic_dir, write_label_png
from wsss.runtime.stage_config import parse_view, resolve_auto

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("make_pseudo", params)
    irn = resolve_auto(params["irn"], ["bg_threshold"], args.calibration, "irn")
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split), args)
    device = resolve_device(args.device)
    log.info("device %s, shard %d/%d of %s: %d images", device, args.shard, args.shards, args.split, len(ids))
    model = build_irn(irn, params["cls"]["backbone"], pretrained=False)
    model.load_state_dict(load_state_dict_file(args.model))
    model.to(device).eval()
    with atomic_dir(args.out) as tmp:
        for image_id, image, keys, scores in iter_walk_scores(model, data, ids, [args.cams], irn, device, "pseudo"):
            [label] = labels_from_walk(scores, keys, image.shape[:2], [irn["bg_threshold"]])
            write_label_png(Path(tmp) / f"{image_id}.png", label)


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    parser.add_argument("--cams", required=True, help="the CAM folder of this shard")
    parser.add_argument("--model", required=True, help="trained IRNet state dict (irn/model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--calibration", nargs="*", default=[], help="calibration_pseudo.json (for irn.bg_threshold auto)"
    )
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.png per image")
    sys.exit(run_stage(main, parser))
