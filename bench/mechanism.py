#!/usr/bin/env python
"""The mechanism test: do VWL and ReCAM recover the non-discriminative parts of objects that a plain CAM misses?

Data: the synthetic generator with ``shared_body: true`` (wsss/data/synth.py): every object is the same plain body
with a small class-specific part on its outline, so the class is told only by the part, and the mask covers body
and part. A CAM that fires only on what tells the classes apart covers the part and misses the body: low recall on
object pixels. Each method (``--methods``) and seed (``--seeds``) is a run of the comparison machinery
(config ``compare``, runs ``parts-{method}_s{seed}``) built up to its CAMs and their evaluation on val; per run:

- recall = |CAM foreground ∧ object| / |object| and precision = |CAM foreground ∧ object| / |CAM foreground| over
  the val images' non-ignore pixels, where CAM foreground = the argmax over the image's classes and a background
  channel at the run's calibrated (mask-free) ``bg_score`` is not background; object = mask id 1..C;
- the CAM mIoU at that score (``cam_val_metrics.json``).

The table gives mean ± sample std over the seeds. ``--control`` adds the same runs on the default data
(``shared_body: false``), to tell a part effect from a method's general coverage.

    python bench/mechanism.py                                   # 4 methods x 3 seeds on the default sizes
    python bench/mechanism.py --methods cam,recam --seeds 0 --num-train-aug 256 --workdir /tmp/mech --keep
    python bench/mechanism.py --analyze /tmp/mech --methods cam,recam --seeds 0
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.artifacts.cam import index_cam_dirs, load_cam  # noqa: E402
from wsss.data.dataset import VOCLayoutDataset  # noqa: E402
from wsss.outputs.compare import compare_run_name  # noqa: E402
from wsss.runtime.io import IGNORE  # noqa: E402


def bench_config(
    base: dict[str, Any], methods: list[str], seeds: list[int], control: bool, sizes: dict[str, int]
) -> dict[str, Any]:
    """The config's ``synth`` run on a ``shared_body`` copy of its dataset (``parts``) and, with ``control``, on the
    dataset itself (``plain``), compared over ``methods`` and ``seeds``."""
    config = copy.deepcopy(base)
    data = {**config["datasets"]["synth"], **sizes}
    config["datasets"] = {
        **config["datasets"],
        "synth_parts": {**data, "kind": "synth", "shared_body": True},
        "synth_plain": {**data, "kind": "synth"},
    }
    synth = config["runs"]["synth"]
    config["runs"] = {"parts": {**copy.deepcopy(synth), "dataset": "synth_parts"}}
    if control:
        config["runs"]["plain"] = {**copy.deepcopy(synth), "dataset": "synth_plain"}
    config["compare"] = {"mechanism": {"runs": list(config["runs"]), "methods": methods, "seeds": seeds}}
    return config


def cam_coverage(root: Path, run: str, dataset: Path) -> dict[str, float]:
    """Recall and precision of a run's val CAMs on object pixels at its calibrated bg_score, and its CAM mIoU."""
    metrics = json.loads((root / "results" / run / "cam_val_metrics.json").read_text())
    bg = float(metrics["bg_score"])
    data = VOCLayoutDataset(dataset)
    ids = data.mask_ids("val")
    shards = sorted((root / "results" / run / "cam" / "val").glob("shard_*"))
    paths = index_cam_dirs(shards, ids)
    hit = pred = obj = 0
    for image_id in ids:
        rec = load_cam(paths[image_id])
        gt = data.mask(image_id)
        cam = rec.full_res()
        fg = (cam.max(axis=0) > bg) if cam.shape[0] else np.zeros(gt.shape, bool)
        valid = gt != IGNORE
        is_obj = valid & (gt > 0)
        hit += int((fg & is_obj).sum())
        pred += int((fg & valid).sum())
        obj += int(is_obj.sum())
    return {
        "recall": 100 * hit / max(obj, 1),
        "precision": 100 * hit / max(pred, 1),
        "miou": 100 * float(metrics["miou_present"]),
        "bg_score": bg,
    }


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def table(root: Path, config: dict[str, Any], methods: list[str], seeds: list[int]) -> tuple[str, dict[str, Any]]:
    lines = [
        "| data | method | seeds | CAM recall on object pixels | CAM precision | CAM mIoU | bg_score (calibrated) |",
        "|---|---|---|---|---|---|---|",
    ]
    numbers: dict[str, Any] = {}
    gated: list[str] = []
    for base in config["runs"]:
        if "-" in base:
            continue
        dataset = root / "resources" / config["runs"][base]["dataset"]
        for method in methods:
            rows = []
            for seed in seeds:
                run = compare_run_name(base, method, seed)
                try:
                    rows.append(cam_coverage(root, run, dataset))
                except (OSError, ValueError, KeyError) as err:
                    stopped = [
                        line
                        for gate in ("cls_gate", "cam_gate")
                        for line in _log_lines(root / "logs" / run / f"{gate}.log")
                        if line.startswith("error:")
                    ]
                    print(f"{run}: no CAM results ({stopped[0] if stopped else err})", file=sys.stderr)
                    gated.append(f"{run} stopped at a gate: {stopped[0]}" if stopped else f"{run}: no CAM results")
            numbers[f"{base}/{method}"] = rows
            lines.append(
                f"| {base} | {method} | {len(rows)}/{len(seeds)} | {_cell([r['recall'] for r in rows])} | "
                f"{_cell([r['precision'] for r in rows])} | {_cell([r['miou'] for r in rows])} | "
                f"{', '.join(format(r['bg_score'], '.2f') for r in rows) or '–'} |"
            )
    lines += [f"- {line}" for line in gated]
    return "\n".join(lines) + "\n", numbers


def _log_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="vwl_l,vwl_m,cam,recam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--control", action="store_true", help="also the default data (shared_body false)")
    parser.add_argument("--num-train-aug", type=int, default=None, help="reduced size: training images")
    parser.add_argument("--num-val", type=int, default=None, help="reduced size: val images")
    parser.add_argument("--max-epochs", type=float, default=None, help="reduced size: cls.max_epochs of the runs")
    parser.add_argument(
        "--epochs", type=float, default=None, help="cls.epochs of the runs: a fixed number instead of auto (early stop)"
    )
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--analyze", type=Path, default=None, help="only print the table of an earlier --workdir")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    sizes = {k: v for k, v in (("num_train_aug", args.num_train_aug), ("num_val", args.num_val)) if v}
    if "num_train_aug" in sizes:
        sizes["num_train"] = min(
            sizes["num_train_aug"],
            yaml.safe_load(args.configfile.read_text())["datasets"]["synth"].get("num_train", 100),
        )
    config = bench_config(yaml.safe_load(args.configfile.read_text()), methods, seeds, args.control, sizes)
    for key, value in (("max_epochs", args.max_epochs), ("epochs", args.epochs)):
        if value:
            for entry in config["runs"].values():
                entry["cls"] = {**entry.get("cls", {}), key: value}
    if args.analyze:
        print(table(args.analyze, config, methods, seeds)[0], end="")
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsss_mechanism_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [
        f"results/{compare_run_name(base, m, s)}/cam_val_metrics.json"
        for base in config["runs"]
        for m in methods
        for s in seeds
    ]
    start = time.monotonic()
    try:
        with open(workdir / "snakemake.log", "w") as fh:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(REPO / "Snakefile"),
                    "--cores",
                    str(args.cores),
                    "--keep-going",
                    *targets,
                ],
                cwd=workdir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        text, numbers = table(workdir, config, methods, seeds)
        (workdir / "mechanism.json").write_text(json.dumps(numbers, indent=1))
        print(text, end="")
        print(f"({time.monotonic() - start:.0f} s; working directory {workdir})", file=sys.stderr)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
