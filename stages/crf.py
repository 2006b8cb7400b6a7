#!/usr/bin/env python
"""Dense-CRF refinement of one shard's DeepLab logits on the raw RGB images, in parallel worker processes."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.crf import crf_shard
from wsss.runtime.cli import run_stage, shard_ids, shard_stage_parser
from wsss.runtime.io import atomic_dir
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("crf", params)
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split, labelled=False), args)
    log.info("shard %d/%d of %s: %d images, %d workers", args.shard, args.shards, args.split, len(ids), args.workers)
    with atomic_dir(args.out) as tmp:
        crf_shard(args.dataset, ids, [args.logits], tmp, params["crf"], workers=args.workers)


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    parser.add_argument("--logits", required=True, help="this shard's logit folder (from infer_seg)")
    parser.add_argument("--workers", type=int, default=1, help="CRF worker processes")
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.png (class ids) per image")
    sys.exit(run_stage(main, parser))
