#!/usr/bin/env python
"""Generate the synthetic VOC-layout dataset (textured shapes on clutter) deterministically from a seed."""

import sys

from wsss.cli import run_stage, stage_parser
from wsss.data.synth import generate_dataset


def main(args, params):
    generate_dataset(args.out, params)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="dataset root to write (e.g. resources/synth); replaced whole")
    sys.exit(run_stage(main, parser))
