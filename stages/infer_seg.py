#!/usr/bin/env python
"""DeepLabV2 logits of one shard of a split: full images, MSC (+ optional test scales and flip), float16 at stride 8."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys
from pathlib import Path

import torch

from wsss.artifacts.logits import save_logits
from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.train import resolve_device
from wsss.pipeline.segment import image_logits, load_segmenter
from wsss.runtime.cli import run_stage, shard_ids, shard_stage_parser
from wsss.runtime.io import atomic_dir
from wsss.runtime.progress import progress
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("infer_seg", params)
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split, labelled=False), args)
    device = resolve_device(args.device)
    log.info("device %s, shard %d/%d of %s: %d images", device, args.shard, args.shards, args.split, len(ids))
    model = load_segmenter(params, data.num_classes, args.model, device)
    with atomic_dir(args.out) as tmp, torch.inference_mode():
        for image_id in progress(ids, desc="seg", mininterval=5.0, file=sys.stderr):
            rgb = data.image(image_id)
            logits = image_logits(model, rgb, params, device)
            save_logits(Path(tmp) / f"{image_id}.npz", logits, tuple(rgb.shape[:2]))


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="trained DeepLab state dict (model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.npz per image")
    sys.exit(run_stage(main, parser))
