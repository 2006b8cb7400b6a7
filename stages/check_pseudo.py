#!/usr/bin/env python
"""The check after make_pseudo: per class, the images where the classifier finds it against the images its pseudo
labels cover; a large disagreement is a warning (this log, the JSON, results/summary.md). Never fails the run."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.artifacts.cam import index_cam_dirs
from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.evaluate import coverage_warnings, pseudo_coverage
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import index_label_dirs, write_json
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("check_pseudo", params)
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)
    counts = pseudo_coverage(
        data.num_classes,
        ids,
        index_cam_dirs(args.cams, ids),
        index_label_dirs(args.labels, ids),
        params["coverage_min_pixels"],
    )
    warnings = coverage_warnings(
        counts, data.classes[1:], len(ids), params["coverage_ratio"], params["coverage_min_pixels"]
    )
    for line in warnings:
        log.warning("%s", line)
    log.info("%d images, %d class warning(s)", len(ids), len(warnings))
    write_json(
        args.out,
        {
            "split": args.split,
            "images": len(ids),
            "warnings": warnings,
            "classes": {name: {k: int(v[i]) for k, v in counts.items()} for i, name in enumerate(data.classes[1:])},
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="the pseudo-labelled split (DeepLab's training split)")
    parser.add_argument("--cams", nargs="+", required=True, help="CAM shard folders of the split (classifier scores)")
    parser.add_argument("--labels", nargs="+", required=True, help="pseudo-label shard folders of the split")
    parser.add_argument("--out", required=True, help="JSON: per-class counts and the warnings")
    sys.exit(run_stage(main, parser))
