#!/usr/bin/env python
"""Prepare PASCAL VOC 2012 (+ SBD aug masks) as a VOC-layout dataset root: read in place or download and extract."""

import sys

from wsss.cli import run_stage, stage_parser
from wsss.data.voc import DEFAULT_LISTS_DIR, prepare_voc


def main(args, params):
    prepare_voc(args.out, params, lists_dir=args.lists)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--lists", default=str(DEFAULT_LISTS_DIR),
                        help="folder with the split lists {split}.txt and the reference cls_labels.tsv")
    parser.add_argument("--out", required=True, help="dataset root to write (e.g. resources/voc)")
    sys.exit(run_stage(main, parser))
