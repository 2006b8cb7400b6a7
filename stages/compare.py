#!/usr/bin/env python
"""One table and one figure of a comparison (config compare.<name>: methods x datasets x seeds, wsss/outputs/compare.py):
mIoU per stage at the calibrated thresholds, oracle peaks, held-out F1, gate verdicts, wall time per stage."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import json
import logging
import sys
from pathlib import Path

from wsss.outputs.compare import compare_table, read_run, results_json, save_compare_figure
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_json, write_text

log = logging.getLogger("wsss")


def main(args, params):
    if args.gather is not None:  # checkpoints compare_cls_gates / compare_seg_gates: every run's verdict in one file
        verdicts = {}
        for path in args.gather:
            try:
                with open(path) as fh:
                    verdicts[path] = bool(json.load(fh)["passed"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise InputError(path, f"not a gate verdict ({type(err).__name__}: {err})") from None
        write_json(args.out, verdicts)
        log.info("%d of %d runs passed", sum(verdicts.values()), len(verdicts))
        return
    root = Path(args.root)
    results = [read_run(root, item, params) for item in params["runs"]]
    for r in results:
        for line in r.gate_lines:
            log.warning("%s", line)
    write_json(args.records, results_json(results))
    save_compare_figure(Path(args.figure), params["name"], results)
    write_text(args.table, compare_table(params["name"], results, params))
    log.info("%d runs compared, %d stopped at a gate", len(results), sum(r.stopped for r in results))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--root", default=".", help="the working directory (results/, benchmarks/)")
    parser.add_argument("--table", help="results/compare/<name>.md")
    parser.add_argument("--figure", help="results/compare/<name>.png")
    parser.add_argument("--records", help="results/compare/<name>.json: every run's numbers")
    parser.add_argument("--gather", nargs="*", default=None, help="gate verdict files to gather into --out")
    parser.add_argument("--out", help="with --gather: results/compare/<name>/{cls,seg}_gates.json")
    sys.exit(run_stage(main, parser))
