#!/usr/bin/env python
"""Gather the prediction shards of one image folder into results/{run}/predict/{name}/ (one flat folder)."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.outputs.predict import merge_shards
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import atomic_dir

log = logging.getLogger("wsss")


def main(args, params):
    with atomic_dir(args.out) as tmp:
        count = merge_shards(args.shards, tmp)
    log.info("%d files from %d shards", count, len(args.shards))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--shards", nargs="+", required=True, help="shard folders (predict_shard)")
    parser.add_argument("--out", required=True, help="the merged folder")
    sys.exit(run_stage(main, parser))
