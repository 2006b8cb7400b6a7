#!/usr/bin/env python
"""One table and one figure of a comparison (config compare.<name>: methods x datasets x seeds, wsss/compare.py):
mIoU per stage at the calibrated thresholds, oracle peaks, held-out F1, gate verdicts, wall time per stage."""

import logging
import sys
from pathlib import Path

from wsss.cli import run_stage, stage_parser
from wsss.compare import compare_table, read_run, results_json, save_compare_figure
from wsss.io import write_json, write_text

log = logging.getLogger("wsss")


def main(args, params):
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
    parser.add_argument("--table", required=True, help="results/compare/<name>.md")
    parser.add_argument("--figure", required=True, help="results/compare/<name>.png")
    parser.add_argument("--records", required=True, help="results/compare/<name>.json: every run's numbers")
    sys.exit(run_stage(main, parser))
