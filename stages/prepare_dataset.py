#!/usr/bin/env python
"""Prepare one dataset of a registered kind (wsss/data/kinds.py) as a VOC-layout root: synthetic, PASCAL VOC, COCO
or a user's folder."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import sys

from wsss.data.kinds import get_kind, kind_names
from wsss.runtime.cli import run_stage, stage_parser


def main(args, params):
    get_kind(args.kind).prepare(args.out, params)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--kind", required=True, choices=kind_names(), help="dataset kind (wsss.data.kinds)")
    parser.add_argument("--out", required=True, help="dataset root to write (e.g. resources/synth); replaced whole")
    sys.exit(run_stage(main, parser))
