#!/usr/bin/env python
"""One markdown table of every run's CAM, pseudo-label, DeepLab and DeepLab+CRF mIoU; mean ± std over the runs of
each seed group; warnings: a stage below the previous one, classes the classifier and the pseudo labels disagree on
(check_pseudo)."""

import wsss.runtime.startup  # first: the imports below run with the garbage collector paused

import json
import logging
import sys

from wsss.outputs.summary import SummaryRow, read_deeplab_metrics, read_miou_file, summary_table
from wsss.runtime.cli import run_stage, stage_parser
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_text

log = logging.getLogger("wsss")


def read_coverage_warnings(path):
    """The warnings of a check_pseudo JSON."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        return [str(w) for w in data["warnings"]]
    except FileNotFoundError:
        raise InputError(path, "pseudo-label coverage check is missing") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a coverage check ({type(err).__name__}: {err})") from None


def main(args, params):
    rows, warnings = [], []
    for entry in params["runs"]:
        try:
            run, deeplab = entry["run"], entry["deeplab"]
        except (KeyError, TypeError):
            raise InputError("--params", f"each runs entry needs run and deeplab, got {entry!r}") from None
        no_crf, crf = read_deeplab_metrics(deeplab)
        cam = read_miou_file(entry["cam"]) if entry.get("cam") else None
        pseudo = read_miou_file(entry["pseudo"]) if entry.get("pseudo") else None
        rows.append(
            SummaryRow(
                run,
                entry.get("dataset", ""),
                entry.get("method", ""),
                entry.get("labels", ""),
                cam,
                pseudo,
                no_crf,
                crf,
            )
        )
        if entry.get("coverage"):
            warnings += [f"{run}: {line}" for line in read_coverage_warnings(entry["coverage"])]
    for line in warnings:
        log.warning("%s", line)
    write_text(
        args.out,
        summary_table(
            rows, params["cam_split"], params["pseudo_split"], params["seg_split"], params["seed_groups"], warnings
        ),
    )
    log.info("%d runs summarised", len(rows))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="markdown file (results/summary.md)")
    sys.exit(run_stage(main, parser))
