#!/usr/bin/env python
"""The gate after train_cls: stop the DAG with one line when the classifier does not beat its label prior on the
held-out images (cls/heldout.json: predicting every class, constant scores, per class; gates.min_prior_gain) or its
micro-F1 is below gates.min_cls_f1; gates.enabled false lets it pass with a warning."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import json
import logging
import sys

from wsss.pipeline.gates import cls_gate
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_json
from wsss.runtime.stage_config import parse_view

log = logging.getLogger("wsss")


def main(args, params):
    params = parse_view("cls_gate", params)
    try:
        with open(args.heldout) as fh:
            report = json.load(fh)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise InputError(args.heldout, "held-out report is missing") from None
    except ValueError as err:
        raise InputError(args.heldout, f"not a held-out report ({err})") from None
    passed, message = cls_gate(
        report,
        bool(params["enabled"]),
        float(params["min_cls_f1"]),
        params["min_prior_gain"],
        int(params["min_class_images"]),
    )
    if args.verdict:
        (log.info if passed else log.warning)(message)
        write_json(
            args.verdict,
            {
                "passed": passed,
                "enabled": bool(params["enabled"]),
                "min_cls_f1": params["min_cls_f1"],
                "f1": report.get("f1"),
                "message": message,
            },
        )
        return
    if not passed:
        raise InputError(args.heldout, message)
    (log.info if message.startswith("cls gate passed") else log.warning)(message)
    write_json(
        args.out,
        {
            "passed": True,
            "enabled": bool(params["enabled"]),
            "min_cls_f1": params["min_cls_f1"],
            "min_prior_gain": params["min_prior_gain"],
            "f1": report.get("f1"),
            "map": report.get("map"),
            "baseline_f1": report.get("baseline_f1"),
            "prior_map": (report.get("prior") or {}).get("prior_map"),
            "message": message,
        },
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--heldout", required=True, help="results/{run}/cls/heldout.json (train_cls)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="results/{run}/cls/gate.json, written only when the gate passes")
    out.add_argument(
        "--verdict",
        help="write the verdict, passed or not, here and exit 0 (rule cls_verdict, the comparison target's checkpoint)",
    )
    sys.exit(run_stage(main, parser))
