#!/usr/bin/env python
"""The PASCAL VOC test-server archive of a split's CRF labels: results/VOC2012/Segmentation/comp6_test_cls/<id>.png."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.outputs.predict import write_submission
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import index_label_dirs

log = logging.getLogger("wsss")


def main(args, params):
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split, labelled=False)
    write_submission(args.out, ids, index_label_dirs(args.crf, ids), data.num_classes)
    log.info("%d label maps of %s in %s", len(ids), args.split, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="the split to submit (VOC: test)")
    parser.add_argument("--crf", nargs="+", required=True, help="CRF label shard folders of the split (crf)")
    parser.add_argument("--out", required=True, help="the .tar.gz archive")
    sys.exit(run_stage(main, parser))
