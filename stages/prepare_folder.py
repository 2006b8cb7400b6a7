#!/usr/bin/env python
"""Prepare a user's folder of images (labels CSV, optional masks) as a VOC-layout dataset, read in place."""

import sys

from wsss.cli import run_stage, stage_parser
from wsss.data.folder import prepare_folder


def main(args, params):
    prepare_folder(params, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="output dataset root, e.g. resources/shapes; replaced whole")
    sys.exit(run_stage(main, parser))
