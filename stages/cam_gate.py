#!/usr/bin/env python
"""The gate after the CAMs (before IRNet): do the CAMs localise, measured without masks? On the calibration images
(the classifier's held-out ones first) the classifier scores each class with only its CAM region above the run's
bg_score kept, against a centred region of the same area and against a uniform map (all or nothing); two classes
labelled in one image whose CAM regions cover the same pixels are named too (wsss.pipeline.calibrate.LocalisationEvidence,
verdict wsss.pipeline.gates.cam_gate). Stops the DAG with one line naming the classes and the cause (their prevalence and
co-occurrence in the labels); gate.json holds the evidence."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import logging
import sys

import torch
from tqdm import tqdm

from wsss.artifacts.cam import index_cam_dirs, load_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.statistics import label_statistics
from wsss.data.transforms import normalize, to_chw
from wsss.engine.train import resolve_device
from wsss.methods import method_argument
from wsss.ops.cam import upsample_cam
from wsss.pipeline.calibrate import (
    LocalisationEvidence,
    add_localisation,
    calibration_set,
    classifier_scores,
)
from wsss.pipeline.classify import load_classifier
from wsss.pipeline.gates import cam_gate
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_json
from wsss.runtime.stage_config import parse_view, resolve_auto

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("cam_gate", params)
    gates = params["gates"]
    data = VOCLayoutDataset(args.dataset)
    split_ids = data.ids(args.split)
    ids, held = calibration_set(split_ids, params["cls"]["holdout_fraction"], params["cam"]["calibration_images"])
    bg_score = float(resolve_auto(params["cam"], ["bg_score"], args.calibration, "cam")["bg_score"])
    device = resolve_device(args.device)
    log.info(
        "device %s: CAM regions at bg_score %.2f on %d images of %s (%d held out from the classifier)",
        device,
        bg_score,
        len(ids),
        args.split,
        held,
    )
    model = load_classifier(params["cls"], data.num_classes - 1, args.method, args.model, device)
    evidence, score_fn = LocalisationEvidence.zeros(bg_score), classifier_scores(model, args.method)
    paths = index_cam_dirs(args.cams, ids)
    for image_id in tqdm(ids, desc="cam_gate", mininterval=5.0, file=sys.stderr):
        rec = load_cam(paths[image_id])
        image = torch.from_numpy(to_chw(normalize(data.image(image_id)))).to(device)
        add_localisation(evidence, score_fn, image, upsample_cam(rec.cam, rec.size), rec.keys)
    summary = evidence.summary(data.classes[1:])
    stats = label_statistics([data.label_vector(i) > 0.5 for i in split_ids], data.classes[1:])
    for name, row in summary["classes"].items():
        log.info(
            "class %s: %d pairs, keep %.3f centre %.3f blank %.3f full %.3f area %.3f: CAM objective %.3f, "
            "evidence over the best baseline %.3f",
            name,
            row["pairs"],
            row["keep"],
            row["centre"],
            row["blank"],
            row["full"],
            row["area"],
            row["objective"],
            row["evidence"],
        )
    for pair, row in summary["pairs"].items():
        log.info("classes %s: CAM region IoU %.3f on %d images", pair, row["iou"], row["images"])
    passed, message = cam_gate(
        summary,
        stats,
        bool(gates["enabled"]),
        gates["min_cam_evidence"],
        float(gates["max_cam_overlap"]),
        int(gates["min_gate_pairs"]),
        float(gates["cam_evidence_se"]),
    )
    if not passed and not args.verdict:
        raise InputError(args.model, message)
    (log.info if message.startswith("cam gate passed") else log.warning)(message)
    write_json(
        args.verdict or args.out,
        {
            "passed": passed,
            "enabled": bool(gates["enabled"]),
            **{k: gates[k] for k in ("min_cam_evidence", "cam_evidence_se", "max_cam_overlap", "min_gate_pairs")},
            "images": len(ids),
            "split": args.split,
            "message": message,
            "evidence": summary,
            "labels": {k: stats[k] for k in ("images", "prevalence", "jaccard")},
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", required=True, help="the classifier's training split")
    parser.add_argument("--cams", nargs="+", required=True, help="CAM shard folders of that split")
    method_argument(parser)
    parser.add_argument("--model", required=True, help="trained classifier state dict (model.pt)")
    parser.add_argument("--calibration", nargs="*", default=[], help="calibration.json when cam.bg_score is auto")
    parser.add_argument("--device", default="auto")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="results/{run}/cam/gate.json, written only when it passes")
    out.add_argument(
        "--verdict",
        help="write the verdict, passed or not, here and exit 0 (rule cam_verdict, the comparison target's checkpoint)",
    )
    sys.exit(run_stage(main, parser))
