#!/usr/bin/env python
"""Convert the torch.export program (model.pt2) to ONNX (model.onnx: the same graph, dynamic batch, height and
width, opset wsss.outputs.export.ONNX_OPSET), loadable with onnxruntime."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

import torch

from wsss.outputs.export import write_onnx
from wsss.runtime.cli import run_stage, stage_parser

log = logging.getLogger("wsss")


def main(args, params):
    write_onnx(torch.export.load(args.program), args.out)
    log.info("converted %s to %s", args.program, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--program", required=True, help="the torch.export program (model.pt2)")
    parser.add_argument("--out", required=True, help="ONNX output (model.onnx)")
    sys.exit(run_stage(main, parser))
