#!/usr/bin/env python
"""DeepLab predictions for one shard of a folder of new images: <stem>.png (class ids, VOC palette, the image's
size) and <stem>_overlay.jpg per image; seg.predict_crf adds the dense CRF. No image labels are used."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

import torch

from wsss.data.dataset import VOCLayoutDataset
from wsss.engine.train import resolve_device
from wsss.outputs.predict import list_images, predict_images
from wsss.pipeline.segment import load_segmenter
from wsss.runtime.cli import run_stage, shard_ids, stage_parser
from wsss.runtime.io import atomic_dir, check_apart
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("predict", params)
    check_apart(args.images, args.out, "image folder")
    paths = shard_ids(list_images(args.images), args)
    data = VOCLayoutDataset(args.dataset)
    device = resolve_device(args.device)
    log.info(
        "device %s, shard %d/%d of %s: %d images, CRF %s (%d workers)",
        device,
        args.shard,
        args.shards,
        args.images,
        len(paths),
        params["predict_crf"],
        args.workers,
    )
    model = load_segmenter(params, data.num_classes, args.model, device)
    with atomic_dir(args.out) as tmp, torch.inference_mode():
        predict_images(
            model,
            paths,
            tmp,
            params,
            device,
            workers=args.workers,
            max_pixels=data.max_pixels,
            limit_key=f"datasets.{data.root.name}.max_pixels",
        )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--images", required=True, help="folder of images (*.jpg, *.jpeg, *.png, any case)")
    parser.add_argument("--dataset", required=True, help="the run's prepared dataset (class count)")
    parser.add_argument("--model", required=True, help="trained DeepLab state dict (model.pt)")
    parser.add_argument("--shard", type=int, required=True, help="this shard's index, 0-based")
    parser.add_argument("--shards", type=int, required=True, help="number of shards of the folder's sorted images")
    parser.add_argument("--workers", type=int, default=1, help="CRF worker processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output folder of this shard")
    sys.exit(run_stage(main, parser))
