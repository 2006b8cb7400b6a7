#!/usr/bin/env python
"""Export the trained DeepLab as a torch.export program (model.pt2: the same graph as model.ts, dynamic batch,
height and width), loadable with torch.export.load where wsss is not installed."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.outputs.export import export_program, write_program
from wsss.pipeline.segment import load_segmenter
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("export_program", params)
    data = VOCLayoutDataset(args.dataset)
    model = load_segmenter(params, data.num_classes, args.model)
    write_program(export_program(model, params), args.out)
    log.info("exported %s (%d classes) to %s", args.model, data.num_classes, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="the run's prepared dataset (class names)")
    parser.add_argument("--model", required=True, help="trained DeepLab state dict (model.pt)")
    parser.add_argument("--out", required=True, help="program output (model.pt2)")
    sys.exit(run_stage(main, parser))
