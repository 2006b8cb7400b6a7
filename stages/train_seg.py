#!/usr/bin/env python
"""Train DeepLabV2-MSC on pseudo labels (or ground-truth masks for the upper bound); resumable; gradient
accumulation; bfloat16 autocast on CUDA; one process per GPU under torchrun."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import hashlib
import json
import logging
import sys
from pathlib import Path

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.seg_data import SegmentationTrainSet, training_label_paths
from wsss.engine.train import build_optimizer, fit, resolve_device, seed_everything
from wsss.pipeline.segment import SegObjective, build_segmenter, check_train_params, optimizer_groups
from wsss.runtime import distributed
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("train_seg", params)
    check_train_params(params)
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)
    labels = training_label_paths(data, ids, params["label_source"], args.labels)
    with distributed.session(resolve_device(args.device)) as env:
        check_train_params(params, env.world_size)
        log.info(
            "device %s, %d training images of %s, %s labels", env.device, len(ids), args.split, params["label_source"]
        )
        seed_everything(params["seed"])
        model = build_segmenter(params, data.num_classes, cache_dir=args.weights_cache, cls_model=args.cls_model)
        optimizer = build_optimizer(
            optimizer_groups(model, params),
            params["optimizer"],
            params["lr"],
            params["weight_decay"],
            params["momentum"],
        )
        dataset = SegmentationTrainSet(
            data,
            ids,
            labels,
            crop=params["crop"],
            scales=params["scales"],
            scale_sampling=params["scale_sampling"],
            flip=params["flip"],
            style=params["style"],
        )
        out = Path(args.out_dir)
        key = json.dumps([params.to_params(), ids, sorted(args.labels)], sort_keys=True)
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        fit(
            model,
            dataset,
            SegObjective(env.device, params["loss_reduction"]),
            optimizer,
            batch_size=params["batch_size"],
            max_steps=params["iterations"],
            seed=params["seed"],
            checkpoint=out / "checkpoint.pt",
            checkpoint_every=params["checkpoint_every"],
            final_weights=out / "model.pt",
            log_csv=out / "train_log.csv",
            device=env.device,
            fingerprint=fingerprint,
            poly_power=params["poly_power"],
            num_workers=params["workers"],
            amp=params["amp"],
            accumulate=params["accumulate"],
        )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset root (resources/<name>)")
    parser.add_argument("--split", default="train_aug", help="training split")
    parser.add_argument("--labels", nargs="*", default=[], help="pseudo-label shard folders (label_source pseudo)")
    parser.add_argument("--cls-model", default=None, help="trained classifier state dict (for pretrained: from_cls)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--weights-cache", default=None, help="folder for downloaded ImageNet weights")
    parser.add_argument("--out-dir", required=True, help="writes model.pt, train_log.csv (checkpoint.pt meanwhile)")
    sys.exit(run_stage(main, parser))
