#!/usr/bin/env python
"""Train a method's classifier (wsss.methods) on image-level labels, phase after phase (Method.training_phases);
resumable; one process per GPU under torchrun."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import hashlib
import json
import logging
import sys
from pathlib import Path

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.loaders import ClassificationTrainSet
from wsss.engine.train import (
    build_optimizer,
    check_batch_split,
    fit,
    load_state_dict_file,
    resolve_device,
    seed_everything,
)
from wsss.methods import get_method, method_argument
from wsss.pipeline.classify import build_classifier
from wsss.pipeline.heldout import HeldoutEvaluator, HeldoutTracker, holdout_split, training_report
from wsss.runtime import distributed
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_json, write_text
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("train_cls", params)
    data = VOCLayoutDataset(args.dataset)
    ids = data.ids(args.split)
    train_ids, held_ids = holdout_split(ids, params["holdout_fraction"])
    accumulate = params["accumulate"]
    with distributed.session(resolve_device(args.device)) as env:
        check_batch_split("cls", params["batch_size"], accumulate, env.world_size)
        log.info(
            "device %s, %d training images of %s, %d held out (cls.holdout_fraction %s)",
            env.device,
            len(train_ids),
            args.split,
            len(held_ids),
            params["holdout_fraction"],
        )
        seed_everything(params["seed"])
        method = get_method(args.method)
        model = build_classifier(params, data.num_classes - 1, args.method, cache_dir=args.weights_cache)
        per_epoch = len(train_ids) // params["batch_size"]
        evaluator = (
            HeldoutEvaluator(data, held_ids, env.device, params["batch_size"], method.image_scores)
            if held_ids
            else None
        )
        out = Path(args.out_dir)
        trainset = ClassificationTrainSet(data, train_ids, tuple(params["resize_long"]), params["crop"])
        phases = method.training_phases(params)
        for index, phase in enumerate(phases):
            last = index == len(phases) - 1
            prefix = "" if last else f"{phase.name}_"
            weights = out / f"{prefix}model.pt"
            key = [params.to_params(), args.method, ids] + ([] if index == 0 else [phase.name, index])
            fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            stamp = out / f"{prefix}model.fingerprint"
            if not last and weights.exists() and stamp.exists() and stamp.read_text() == fingerprint:
                log.info("phase %s: reusing %s", phase.name, weights)
                model.load_state_dict(load_state_dict_file(weights))
                continue
            auto = phase.epochs == "auto"
            if auto and not held_ids:
                raise InputError("config: cls.epochs", "auto needs held-out images: set cls.holdout_fraction above 0")
            optimizer = build_optimizer(
                phase.groups(model), params["optimizer"], phase.lr, params["weight_decay"], params["momentum"]
            )
            steps = max(1, int((params["max_epochs"] if auto else phase.epochs) * per_epoch))
            eval_every = params["eval_every"] or max(1, per_epoch)
            log.info(
                "phase %s (%d of %d): %s%d steps of batch %d at lr %g; held-out evaluation every %d steps",
                phase.name,
                index + 1,
                len(phases),
                "at most " if auto else "",
                steps,
                params["batch_size"],
                phase.lr,
                eval_every,
            )
            tracker = HeldoutTracker(
                "heldout_map", params["min_delta"], params["patience"] if auto else None, keep_best=auto
            )
            result = fit(
                model,
                trainset,
                phase.objective(env.device, params["seed"]),
                optimizer,
                batch_size=params["batch_size"],
                max_steps=steps,
                seed=params["seed"],
                checkpoint=out / f"{prefix}checkpoint.pt",
                checkpoint_every=params["checkpoint_every"],
                final_weights=weights,
                log_csv=out / f"{prefix}train_log.csv",
                device=env.device,
                fingerprint=fingerprint,
                poly_power=params["poly_power"],
                num_workers=params["workers"],
                amp=params["amp"],
                accumulate=accumulate,
                find_unused_parameters=True,
                evaluator=evaluator,
                eval_every=eval_every,
                tracker=tracker,
            )
            if not last:  # the next phase starts from this phase's final (or best) weights
                model.load_state_dict(load_state_dict_file(weights))
                if env.rank == 0:
                    write_text(stamp, fingerprint)
        if env.rank == 0:
            prior = None
            if evaluator:  # the kept weights (model.pt) against the label prior, per class (rule cls_gate)
                if tracker.best_state:
                    model.load_state_dict(tracker.best_state)
                prior = evaluator.class_report(model, data.classes[1:])
            report, line, warn = training_report(
                tracker,
                result,
                auto=auto,
                held_images=len(held_ids),
                train_images=len(train_ids),
                min_delta=params["min_delta"],
                patience=params["patience"],
                baseline_f1=evaluator.baseline_f1() if evaluator else None,
                prior=prior,
            )
            (log.warning if warn else log.info)(line)
            write_json(out / "heldout.json", report)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="prepared dataset root (resources/<name>)")
    parser.add_argument("--split", default="train_aug", help="training split")
    method_argument(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--weights-cache", default=None, help="folder for downloaded ImageNet weights")
    parser.add_argument(
        "--out-dir", required=True, help="writes model.pt, train_log.csv, heldout.json (checkpoint.pt meanwhile)"
    )
    sys.exit(run_stage(main, parser))
