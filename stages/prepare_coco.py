#!/usr/bin/env python
"""Prepare COCO-format instances (the COCO 2014 layout, or any instances JSON + image folder per split) as a
VOC-layout dataset with semantic masks."""

import sys

from wsss.cli import run_stage, stage_parser
from wsss.data.coco import prepare_coco
from wsss.errors import InputError

PARAMS = ("root", "splits", "subsets", "min_area", "workers", "max_pixels")


def main(args, params):
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise InputError("--params", f"unknown keys {unknown}; known: {list(PARAMS)}")
    prepare_coco(params.get("root"), args.out, splits=params.get("splits"), min_area=params.get("min_area", 0),
                 workers=params.get("workers", 1), subsets=params.get("subsets"), max_pixels=params.get("max_pixels"))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="output dataset root, e.g. resources/coco")
    sys.exit(run_stage(main, parser))
