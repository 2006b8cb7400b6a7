#!/usr/bin/env python
"""What pausing the garbage collector during a stage's imports saves (``wsss.runtime.startup``): every job of a small
synthetic DAG (``device: cpu``) run as Snakemake runs it (the collector paused during the imports, the imported
objects frozen, then resumed) and with ``WSSS_GC_PAUSE=0`` (the collector as Python leaves it), the same commands.

The DAG is built once first (untimed); then each of its jobs' commands (from ``snakemake -n -p -F``) runs in both
ways, one whole pass at a time, in the order as-is, paused, paused, as-is, … (``--repeat`` pairs). Reported per
stage: the CPU seconds (user + system) of the job's processes each way, summed over the passes, and their ratio;
and whether both ways wrote the same files (.pt files compared tensor for tensor, since ``torch.save`` names its
archive's folder after a random temporary file).

    python bench/startup.py                          # a temporary working directory, removed after
    python bench/startup.py --workdir /tmp/su --keep --repeat 1
"""

from __future__ import annotations

import argparse
import hashlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/small/deeplab_val_miou.txt"
# a small run: 64-px synthetic images, ResNet-10 from scratch, a few steps per stage
CONFIG = {
    "device": "cpu",
    "gates": {"enabled": False},  # measured, reported, never stopping the run
    "datasets": {"synth": {"image_size": 64, "num_classes": 2, "num_train_aug": 64, "num_train": 8, "num_val": 8}},
    "runs": {
        "small": {
            "dataset": "synth",
            "method": "vwl_l",
            "cls": {"backbone": 10, "pretrained": "none", "batch_size": 8, "epochs": 4, "crop": 64, "workers": 0},
            "cam": {"scales": [1.0, 0.5], "shards": 1, "bg_score": 0.35},
            "irn": {
                "pretrained": "from_cls",
                "crop": 64,
                "radius": 5,
                "batch_size": 8,
                "epochs": 2,
                "workers": 0,
                "conf_fg": 0.6,
                "conf_bg": 0.3,
            },
            "seg": {
                "backbone": 10,
                "pretrained": "from_cls",
                "crop": 64,
                "batch_size": 8,
                "iterations": 20,
                "workers": 0,
                "shards": 1,
            },
        }
    },
}
_SCRIPT = re.compile(r"/stages/(\w+)\.py")


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)


def _commands(workdir: Path) -> list[tuple[str, str]]:
    """(stage, shell command) of every job of TARGET, in Snakemake's order."""
    plan = _snakemake(workdir, "-n", "-p", "-F", TARGET)
    if plan.returncode != 0:
        raise SystemExit(f"error: snakemake -n failed:\n{plan.stderr[-2000:]}")
    out = []
    for line in (plan.stdout + plan.stderr).splitlines():
        if line.startswith("Shell command: "):
            cmd = line[len("Shell command: ") :]
            match = _SCRIPT.search(cmd)
            if not match:
                raise SystemExit(f"error: no stage script in a job's command: {cmd[:200]}")
            out.append((match.group(1), cmd))
    return out


def _run(cmd: str, workdir: Path) -> float:
    """CPU seconds (user + system) of the command's processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(["bash", "-c", cmd], cwd=workdir)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: a job failed ({proc.returncode}): {cmd[:300]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _digests(root: Path) -> dict[str, str]:
    import torch

    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=True)
            h = hashlib.sha256()
            for key, value in sorted(_flat(state)):
                h.update(key.encode() + (value.numpy().tobytes() if torch.is_tensor(value) else repr(value).encode()))
            out[str(path.relative_to(root))] = h.hexdigest()
        else:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _flat(value, prefix: str = ""):
    if isinstance(value, dict):
        for key in value:
            yield from _flat(value[key], f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flat(item, f"{prefix}/{i}")
    else:
        yield prefix, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="scratch working directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--repeat", type=int, default=2, help="pairs of passes (as is then paused, or the reverse)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsss-startup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        build = _snakemake(workdir, TARGET)
        if build.returncode != 0:
            raise SystemExit(f"error: the DAG build failed:\n{build.stderr[-3000:]}")
        jobs = _commands(workdir)
        cpu: dict[str, dict[str, float]] = {"as is": {}, "paused": {}}
        digests = {}
        for i in range(args.repeat):
            for way in ("as is", "paused")[:: 1 if i % 2 == 0 else -1]:
                for stage, cmd in jobs:
                    seconds = _run(f"export WSSS_GC_PAUSE=0; {cmd}" if way == "as is" else cmd, workdir)
                    cpu[way][stage] = cpu[way].get(stage, 0.0) + seconds
                digests[way] = _digests(workdir / "results")
        same = digests["as is"] == digests["paused"]
        counts = {stage: sum(s == stage for s, _ in jobs) for stage, _ in jobs}
        print(f"{len(jobs)} jobs of {TARGET}, {args.repeat} pass(es) each way; CPU s = user + system, summed")
        print("| stage | jobs | CPU s, collector as is | CPU s, paused | ratio |")
        print("|---|---|---|---|---|")
        for stage in counts:
            a, b = cpu["as is"][stage], cpu["paused"][stage]
            print(f"| {stage} | {counts[stage]} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
        a, b = sum(cpu["as is"].values()), sum(cpu["paused"].values())
        print(f"| total | {len(jobs)} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
        print(f"same files both ways: {same} ({len(digests['paused'])} files); {time.monotonic() - t0:.0f} s in all")
        return 0 if same else 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
