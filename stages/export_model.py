#!/usr/bin/env python
"""Export the trained DeepLab as TorchScript (model.ts: normalisation, test scales/flip, MSC fusion, upsampling to
the input size) with model.json (classes, input normalisation and colour order, output stride)."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

from wsss.data.dataset import VOCLayoutDataset
from wsss.outputs.export import export_model
from wsss.pipeline.segment import load_segmenter
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("export_model", params)
    data = VOCLayoutDataset(args.dataset)
    model = load_segmenter(params, data.num_classes, args.model)
    export_model(model, params, data.classes, args.ts, args.json, run=args.run)
    log.info("exported %s (%d classes) to %s and %s", args.model, data.num_classes, args.ts, args.json)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="the run's prepared dataset (class names)")
    parser.add_argument("--model", required=True, help="trained DeepLab state dict (model.pt)")
    parser.add_argument("--run", default=None, help="run name, recorded in model.json")
    parser.add_argument("--ts", required=True, help="TorchScript output (model.ts)")
    parser.add_argument("--json", required=True, help="description output (model.json)")
    sys.exit(run_stage(main, parser))
