#!/usr/bin/env python
"""Train the VWL classifier (vwl_l, vwl_m or the plain CAM baseline) on image-level labels; resumable; one process
per GPU under torchrun."""

import hashlib
import json
import logging
import sys
from pathlib import Path

from wsss import distributed
from wsss.classify import build_classifier, optimizer_groups
from wsss.cli import run_stage, stage_parser
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.loaders import ClassificationTrainSet
from wsss.errors import InputError
from wsss.io import write_json
from wsss.methods import get_method, method_argument
from wsss.stage_config import parse_view
from wsss.train import build_optimizer, check_batch_split, fit, resolve_device, seed_everything
from wsss.validation import HeldoutEvaluator, HeldoutTracker, holdout_split, training_report

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("train_cls", params)
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)
    train_ids, held_ids = holdout_split(ids, params["holdout_fraction"])
    auto = params["epochs"] == "auto"
    if auto and not held_ids:
        raise InputError("config: cls.epochs", "auto needs held-out images: set cls.holdout_fraction above 0")
    accumulate = params["accumulate"]
    with distributed.session(resolve_device(args.device)) as env:
        check_batch_split("cls", params["batch_size"], accumulate, env.world_size)
        log.info("device %s, %d training images of %s, %d held out (cls.holdout_fraction %s)", env.device,
                 len(train_ids), args.split, len(held_ids), params["holdout_fraction"])
        seed_everything(params["seed"])
        model = build_classifier(params, data.num_classes - 1, args.method, cache_dir=args.weights_cache)
        optimizer = build_optimizer(optimizer_groups(model, params["lr_mult_new"]), params["optimizer"], params["lr"],
                                    params["weight_decay"], params["momentum"])
        per_epoch = len(train_ids) // params["batch_size"]
        steps = max(1, int((params["max_epochs"] if auto else params["epochs"]) * per_epoch))
        eval_every = params["eval_every"] or max(1, per_epoch)
        log.info("%s%d steps of batch %d; held-out evaluation every %d steps", "at most " if auto else "", steps,
                 params["batch_size"], eval_every)
        evaluator = (HeldoutEvaluator(data, held_ids, env.device, params["batch_size"],
                                     get_method(args.method).image_scores) if held_ids else None)
        tracker = HeldoutTracker("heldout_map", params["min_delta"], params["patience"] if auto else None,
                                 keep_best=auto)
        out = Path(args.out_dir)
        fingerprint = hashlib.sha256(json.dumps([params.to_params(), args.method, ids], sort_keys=True).encode()).hexdigest()
        result = fit(model, ClassificationTrainSet(data, train_ids, tuple(params["resize_long"]), params["crop"]),
            get_method(args.method).objective(env.device, params["seed"]), optimizer, batch_size=params["batch_size"],
            max_steps=steps, seed=params["seed"], checkpoint=out / "checkpoint.pt",
            checkpoint_every=params["checkpoint_every"], final_weights=out / "model.pt",
            log_csv=out / "train_log.csv", device=env.device, fingerprint=fingerprint,
            poly_power=params["poly_power"], num_workers=params["workers"], amp=params["amp"],
            accumulate=accumulate, find_unused_parameters=True, evaluator=evaluator, eval_every=eval_every,
            tracker=tracker)
        if env.rank == 0:
            prior = None
            if evaluator:  # the kept weights (model.pt) against the label prior, per class (rule cls_gate)
                if tracker.best_state:
                    model.load_state_dict(tracker.best_state)
                prior = evaluator.class_report(model, data.classes[1:])
            report, line, warn = training_report(tracker, result, auto=auto, held_images=len(held_ids),
                                                 train_images=len(train_ids), min_delta=params["min_delta"],
                                                 patience=params["patience"],
                                                 baseline_f1=evaluator.baseline_f1() if evaluator else None,
                                                 prior=prior)
            (log.warning if warn else log.info)(line)
            write_json(out / "heldout.json", report)

if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset root (resources/<name>)")
    parser.add_argument("--split", default="train_aug", help="training split")
    method_argument(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--weights-cache", default=None, help="folder for downloaded ImageNet weights")
    parser.add_argument("--out-dir", required=True, help="writes model.pt, train_log.csv, heldout.json (checkpoint.pt meanwhile)")
    sys.exit(run_stage(main, parser))
