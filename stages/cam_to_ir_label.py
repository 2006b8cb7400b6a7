#!/usr/bin/env python
"""IR labels (0 background / class id / 255 unsure) of one CAM shard: two label-CRF passes of the CAMs per image."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.artifacts.cam import index_cam_dirs
from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.crf import ir_label_options, write_ir_labels
from wsss.runtime.cli import run_stage, shard_ids, shard_stage_parser
from wsss.runtime.io import atomic_dir
from wsss.runtime.stage_config import parse_view, resolve_auto

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("cam_to_ir_label", params)
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split), args)
    log.info("shard %d/%d of %s: %d images, %d workers", args.shard, args.shards, args.split, len(ids), args.threads)
    cam_paths = index_cam_dirs([args.cams], ids)
    tasks = [(i, data.image_path(i), cam_paths[i]) for i in ids]
    irn = resolve_auto(params["irn"], ["conf_fg", "conf_bg"], args.calibration, "irn")
    with atomic_dir(args.out) as tmp:
        totals = write_ir_labels(tasks, tmp, ir_label_options(irn), workers=args.threads)
    pixels = max(1, sum(totals.values()))
    log.info("pixels: %s", ", ".join(f"{k} {100 * v / pixels:.1f} %" for k, v in totals.items()))


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    parser.add_argument("--cams", required=True, help="the CAM folder of this shard")
    parser.add_argument("--threads", type=int, default=1, help="worker processes")
    parser.add_argument("--calibration", nargs="*", default=[], help="calibration.json (for irn.conf_fg/conf_bg auto)")
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.png per image")
    sys.exit(run_stage(main, parser))
