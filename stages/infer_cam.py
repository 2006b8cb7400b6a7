#!/usr/bin/env python
"""Multi-scale + flip CAMs of one shard of a split, stored compactly (stride 4, float16, GT classes only)."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys
from pathlib import Path

import torch

from wsss.artifacts.cam import CamRecord, save_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.engine.train import resolve_device
from wsss.methods import get_method, method_argument
from wsss.ops.cam import label_keys, multiscale_cams, pack_cam
from wsss.pipeline.classify import load_classifier
from wsss.runtime.cli import run_stage, shard_ids, shard_stage_parser
from wsss.runtime.io import atomic_dir
from wsss.runtime.progress import progress
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("infer_cam", params)
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split), args)
    device = resolve_device(args.device)
    log.info("device %s, shard %d/%d of %s: %d images", device, args.shard, args.shards, args.split, len(ids))
    model = load_classifier(params["cls"], data.num_classes - 1, args.method, args.model, device)
    method = get_method(args.method)
    cam = params["cam"]
    with atomic_dir(args.out) as tmp, torch.inference_mode():
        for start in progress(range(0, len(ids), args.batch), desc="cam", mininterval=5.0, file=sys.stderr):
            chunk = ids[start : start + args.batch]
            images = [torch.from_numpy(to_chw(normalize(data.image(i)))).to(device) for i in chunk]
            keys = [label_keys(data.label_vector(i)) for i in chunk]
            cams = multiscale_cams(
                lambda x: method.cams_and_scores(model, x),
                images,
                keys,
                cam["scales"],
                cam["fusion"],
                batch_scales=cam["batch_scales"],
                max_batch=args.batch,
                max_pixels=cam["batch_pixels"],
                with_high_res=cam["high_res"] == "per_scale",
                with_scores=True,
            )
            for image_id, image, result in zip(chunk, images, cams):
                # the scale-1.0 forward gave the image-level scores; a forward of their own only without one
                scores = result.scores if result.scores is not None else method.image_scores(model, image[None])[0]
                scores = scores.cpu().numpy()
                high_res = None if result.high_res is None else pack_cam(result.high_res)
                save_cam(
                    Path(tmp) / f"{image_id}.npz",
                    CamRecord(
                        result.keys.cpu().numpy(), pack_cam(result.cam), tuple(image.shape[-2:]), scores, high_res
                    ),
                )


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    method_argument(parser)
    parser.add_argument("--model", required=True, help="trained classifier state dict (model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8, help="images per forward group")
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.npz per image")
    sys.exit(run_stage(main, parser))
