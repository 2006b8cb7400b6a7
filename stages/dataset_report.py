#!/usr/bin/env python
"""The dataset report before anything trains (wsss.pipeline.dataset_report): images per split and class, prevalence, the
class co-occurrence figure, image sizes, labels per image, masks; warnings (a class in nearly every image, a class
with few images, a pair that almost always co-occurs) go to the log and the report."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.pipeline.dataset_report import dataset_summary, write_report
from wsss.runtime.cli import run_stage, stage_parser

log = logging.getLogger("wsss")


def main(args, params):
    data = VOCLayoutDataset(args.dataset)
    summary = dataset_summary(data, args.split)
    for line in summary["warnings"]:
        log.warning("%s", line)
    log.info(
        "%s: %d images in %s, %d classes, %d warning(s)",
        params["run"],
        summary["labels"]["images"],
        args.split,
        data.num_classes - 1,
        len(summary["warnings"]),
    )
    write_report(summary, args.json, args.md, args.png, args.html, f"{params['run']}: dataset {data.root.name}")


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="the classifier's training split (label statistics)")
    for name in ("json", "md", "png", "html"):
        parser.add_argument(f"--{name}", required=True)
    sys.exit(run_stage(main, parser))
