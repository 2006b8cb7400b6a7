#!/usr/bin/env python
"""Pseudo labels of one CAM shard: IRNet boundaries (with flip) → random walk of the stride-4 CAMs → argmax."""

import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from wsss.classify import index_cam_dirs, load_cam
from wsss.cli import run_stage, shard_ids, shard_stage_parser
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.errors import InputError
from wsss.io import atomic_dir, write_label_png
from wsss.irn import boundary_map, build_irn, pseudo_label
from wsss.train import load_state_dict_file, resolve_device

log = logging.getLogger("wsss")


def main(args, params):
    irn = params["irn"]
    data = VOCLayoutDataset(args.dataset)
    ids = shard_ids(data.ids(args.split), args)
    device = resolve_device(args.device)
    log.info("device %s, shard %d/%d of %s: %d images", device, args.shard, args.shards, args.split, len(ids))
    model = build_irn(irn, params["cls_backbone"], pretrained=False)
    model.load_state_dict(load_state_dict_file(args.model))
    model.to(device).eval()
    cam_paths = index_cam_dirs([args.cams], ids)
    with atomic_dir(args.out) as tmp, torch.inference_mode():
        for image_id in tqdm(ids, desc="pseudo", mininterval=5.0, file=sys.stderr):
            image = data.image(image_id)
            cam_path = cam_paths[image_id]
            rec = load_cam(cam_path)
            if tuple(rec.size) != image.shape[:2]:
                raise InputError(cam_path, f"CAM of image size {rec.size} but the image is {image.shape[:2]}")
            boundary = boundary_map(model, torch.from_numpy(to_chw(normalize(image))).to(device),
                                    irn.get("boundary_canvas"))
            label = pseudo_label(rec.cam, rec.keys, boundary, rec.size, irn["rw_radius"], irn["beta"],
                                 irn["exp_times"], irn["bg_threshold"])
            write_label_png(Path(tmp) / f"{image_id}.png", label)


if __name__ == "__main__":
    parser = shard_stage_parser(__doc__)
    parser.add_argument("--cams", required=True, help="the CAM folder of this shard")
    parser.add_argument("--model", required=True, help="trained IRNet state dict (irn/model.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="output folder of this shard: <id>.png per image")
    sys.exit(run_stage(main, parser))
