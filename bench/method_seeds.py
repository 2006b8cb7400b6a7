#!/usr/bin/env python
"""The method's own claim over seeds: CAM mIoU of VWL-L, VWL-M and the plain CAM baseline on the synthetic data.

The config's ``synth``, ``synth_vwlm`` and ``synth_cam`` runs (``--configfile``, default this checkout's
config.yaml) each get ``seeds: [0, 1, 2]`` (``--seeds``; ``runs.X.seeds`` makes runs ``X_s{k}`` with
``cls/irn/seg.seed`` k, wsss/config.py) and ``cam.bg_score: auto``, and run to their val CAM metrics in one scratch
working directory (``--workdir``). Per method, mean ± std (sample std, n − 1) over the seeds of:

- the CAM mIoU at the config's fixed background score (read off the oracle sweep, which holds that value),
- the CAM mIoU at the background score chosen without pixel labels (``calibrate``), and that score,
- the oracle sweep's peak (the masks' best score: reported only).

    python bench/method_seeds.py                       # 9 classifier trainings: about 30 min on 2 cores
    python bench/method_seeds.py --seeds 0,1 --workdir /tmp/seeds --keep
    python bench/method_seeds.py --analyze /tmp/seeds  # the table of an earlier run again
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = {"synth": "VWL-L", "synth_vwlm": "VWL-M", "synth_cam": "CAM"}


def seeds_config(base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    config = copy.deepcopy(base)
    config["runs"] = {run: {**copy.deepcopy(base["runs"][run]), "seeds": seeds} for run in METHODS}
    for entry in config["runs"].values():
        entry["cam"] = {**entry.get("cam", {}), "bg_score": "auto"}
    return config


FIXED_BG = 0.4  # the synthetic runs' hand-set cam.bg_score before it became auto


def fixed_scores(base: dict[str, Any]) -> dict[str, float]:
    """The fixed background score per method: the config's where it sets a number, else :data:`FIXED_BG`."""
    values = {run: base["runs"][run].get("cam", {}).get("bg_score") for run in METHODS}
    return {run: float(v) if isinstance(v, (int, float)) else FIXED_BG for run, v in values.items()}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(workdir: Path, seeds: list[int], fixed: dict[str, float]) -> tuple[str, dict[str, Any]]:
    lines = ["| method | seeds | CAM at fixed bg (bg) | CAM at auto bg | auto bg | oracle peak |",
             "|---|---|---|---|---|---|"]
    numbers: dict[str, Any] = {}
    for run, name in METHODS.items():
        at_fixed, at_auto, chosen, peak = [], [], [], []
        for k in seeds:
            res = workdir / "results" / f"{run}_s{k}"
            try:
                metrics = json.loads((res / "cam_val_metrics.json").read_text())
                sweep = json.loads((res / "cam_val_sweep.json").read_text())
            except (OSError, ValueError):
                continue
            rows = {round(r["bg_score"], 4): 100 * r["miou"] for r in sweep["rows"]}
            at_fixed.append(rows[round(fixed[run], 4)])
            at_auto.append(100 * metrics["miou_present"])
            chosen.append(metrics["bg_score"])
            peak.append(max(rows.values()))
        numbers[run] = {"fixed": at_fixed, "auto": at_auto, "auto_bg": chosen, "peak": peak}
        lines.append(f"| {name} | {len(at_auto)} | {_mean_std(at_fixed)} ({fixed[run]:.2f}) | {_mean_std(at_auto)} "
                     f"| {', '.join(f'{b:.2f}' for b in chosen) or '–'} | {_mean_std(peak)} |")
    return "\n".join(lines) + "\n", numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--analyze", type=Path, default=None, help="only print the table of an earlier --workdir")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    base = yaml.safe_load(args.configfile.read_text())
    if args.analyze:
        print(table(args.analyze, seeds, fixed_scores(base))[0], end="")
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsss_seeds_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(seeds_config(base, seeds), sort_keys=False))
    targets = [f"results/{run}_s{k}/cam_val_metrics.json" for run in METHODS for k in seeds]
    try:
        with open(workdir / "snakemake.log", "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores",
                                   str(args.cores), "--keep-going", *targets], cwd=workdir, stdout=fh,
                                  stderr=subprocess.STDOUT, check=False)
        text, numbers = table(workdir, seeds, fixed_scores(base))
        (workdir / "method_seeds.json").write_text(json.dumps(numbers, indent=1))
        print(text, end="")
        print(f"(working directory {workdir})", file=sys.stderr)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
