#!/usr/bin/env python
"""Train IRNet (boundary + displacement branches on a frozen ResNet) on the IR labels; resumable; one process per
GPU under torchrun."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import hashlib
import json
import logging
import sys
from pathlib import Path

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.irn_data import AffinityTrainSet
from wsss.engine.train import build_optimizer, check_batch_split, fit, resolve_device, seed_everything
from wsss.ops.path_index import PathIndex
from wsss.pipeline.pseudo_labels import IRNObjective, build_irn, check_train_params, optimizer_groups
from wsss.runtime import distributed
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.io import index_label_dirs
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("train_irn", params)
    irn = params["irn"]
    check_train_params(irn)
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)
    labels = index_label_dirs(args.labels, ids)
    accumulate = irn["accumulate"]
    with distributed.session(resolve_device(args.device)) as env:
        check_batch_split("irn", irn["batch_size"], accumulate, env.world_size)
        log.info("device %s, %d training images of %s", env.device, len(ids), args.split)
        seed_everything(irn["seed"])
        model = build_irn(irn, params["cls"]["backbone"], args.cls_model, cache_dir=args.weights_cache)
        optimizer = build_optimizer(
            optimizer_groups(model, irn["lr_mult_disp"]),
            irn["optimizer"],
            irn["lr"],
            irn["weight_decay"],
            irn["momentum"],
        )
        steps = max(1, int(irn["epochs"] * (len(ids) // irn["batch_size"])))
        log.info("%d steps of batch %d, crop %d", steps, irn["batch_size"], irn["crop"])
        path_index = PathIndex(irn["radius"], irn["crop"] // 4, irn["crop"] // 4)
        out = Path(args.out_dir)
        fingerprint = hashlib.sha256(json.dumps([params.to_params(), ids], sort_keys=True).encode()).hexdigest()
        fit(
            model,
            AffinityTrainSet(data, ids, labels, irn["crop"], tuple(irn["scale_range"])),
            IRNObjective(path_index, env.device),
            optimizer,
            batch_size=irn["batch_size"],
            max_steps=steps,
            seed=irn["seed"],
            checkpoint=out / "checkpoint.pt",
            checkpoint_every=irn["checkpoint_every"],
            final_weights=out / "model.pt",
            log_csv=out / "train_log.csv",
            device=env.device,
            fingerprint=fingerprint,
            poly_power=irn["poly_power"],
            num_workers=irn["workers"],
            amp=irn["amp"],
            accumulate=accumulate,
        )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset root")
    parser.add_argument("--split", default="train_aug", help="training split (every id needs an IR label)")
    parser.add_argument("--labels", nargs="+", required=True, help="IR label shard folders")
    parser.add_argument("--cls-model", default=None, help="trained classifier state dict (for pretrained: from_cls)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--weights-cache", default=None, help="folder for downloaded ImageNet weights")
    parser.add_argument("--out-dir", required=True, help="writes model.pt, train_log.csv (checkpoint.pt meanwhile)")
    sys.exit(run_stage(main, parser))
