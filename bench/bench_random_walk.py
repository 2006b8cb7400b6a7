#!/usr/bin/env python
"""Benchmark IRN's random walk: the sparse neighbourhood walk vs the dense (hw)² reference with repeated squaring.

Each method runs in its own subprocess so that its peak memory can be measured in isolation: peak RSS growth on CPU
(``getrusage(RUSAGE_SELF).ru_maxrss`` after the run minus the RSS just before it; an upper bound, as ru_maxrss also
covers anything before the run), ``torch.cuda.max_memory_allocated`` growth on CUDA. Both methods get the same
deterministic synthetic inputs (a boundary map from random ellipses, one Gaussian seed blob per class) and run
end to end (boundary + seeds → walked maps). The dense reference at VOC size (125×94 = 11750 nodes) needs ~2 GB and
8 multiplications of 11750² matrices (minutes on a few CPU cores); use ``--size`` to run smaller.

    python bench/bench_random_walk.py                      # 125×94, radius 5, β 10, 256 steps, 2 classes, CPU
    python bench/bench_random_walk.py --size 60 45 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsss.ops.random_walk import random_walk, random_walk_dense

METHODS = ("sparse", "dense")
BG_THRESHOLD = 0.25  # IRN's sem_seg_bg_thres, for the label-agreement column


def synthetic_inputs(height: int, width: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A boundary map (soft edges of random ellipses plus noise) and C seed maps (one blob per class), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    regions = torch.zeros(height, width, dtype=torch.int64)
    seeds = torch.zeros(classes, height, width)
    for c in range(max(classes, 3)):
        cy, cx = float(torch.rand(1, generator=g)) * height, float(torch.rand(1, generator=g)) * width
        ry = (0.15 + 0.25 * float(torch.rand(1, generator=g))) * height
        rx = (0.15 + 0.25 * float(torch.rand(1, generator=g))) * width
        inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
        regions[inside] = c + 1
        if c < classes:
            seeds[c] = torch.exp(-(((ys - cy) / (0.6 * ry)) ** 2 + ((xs - cx) / (0.6 * rx)) ** 2))
    edges = torch.zeros(height, width)
    edges[1:] = torch.maximum(edges[1:], (regions[1:] != regions[:-1]).float())
    edges[:, 1:] = torch.maximum(edges[:, 1:], (regions[:, 1:] != regions[:, :-1]).float())
    soft = torch.nn.functional.avg_pool2d(edges[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    boundary = (0.9 * torch.clamp(2 * soft, 0, 1) + 0.1 * torch.rand(height, width, generator=g)).clamp(0, 1)
    seeds = seeds + 0.05 * torch.rand(classes, height, width, generator=g)
    seeds = seeds / seeds.amax(dim=(1, 2), keepdim=True)
    return seeds, boundary


def _current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def run_child(args: argparse.Namespace) -> None:
    """Run one method once (after a tiny warm-up), save its output, print one JSON line of measurements."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dense_dtype = getattr(torch, args.dense_dtype)

    def method(seeds: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
        if args.child == "sparse":
            return random_walk(seeds, boundary, radius=args.radius, beta=args.beta, steps=2**args.exp_times)
        return random_walk_dense(
            seeds.to(dense_dtype),
            boundary.to(dense_dtype),
            radius=args.radius,
            beta=args.beta,
            exp_times=args.exp_times,
        )

    warm_seeds, warm_boundary = synthetic_inputs(8, 8, args.classes, args.seed)
    method(warm_seeds.to(device), warm_boundary.to(device))
    seeds, boundary = synthetic_inputs(args.size[0], args.size[1], args.classes, args.seed)
    seeds, boundary = seeds.to(device), boundary.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _current_rss_kb() * 1024
    start = time.perf_counter()
    out = method(seeds, boundary)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    np.save(args.out, out.float().cpu().numpy(), allow_pickle=False)
    print(json.dumps({"method": args.child, "seconds": seconds, "peak_bytes": max(peak, 0)}))


def run_parent(args: argparse.Namespace) -> None:
    height, width = args.size
    print(
        f"random walk: {height}x{width} = {height * width} nodes, radius {args.radius}, beta {args.beta}, "
        f"{2**args.exp_times} steps (exp_times {args.exp_times}), {args.classes} classes, device {args.device}, "
        f"torch threads {args.threads or torch.get_num_threads()}, dense dtype {args.dense_dtype}"
    )
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            out = Path(tmp) / f"{name}.npy"
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--out",
                str(out),
                "--size",
                str(height),
                str(width),
                "--classes",
                str(args.classes),
                "--radius",
                str(args.radius),
                "--beta",
                str(args.beta),
                "--exp-times",
                str(args.exp_times),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
                "--dense-dtype",
                args.dense_dtype,
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            outputs[name] = np.load(out, allow_pickle=False)
    memory = "peak GPU memory growth" if args.device.startswith("cuda") else "peak RSS growth (upper bound)"
    print(f"\n{'method':<8} {'wall time (s)':>14} {memory + ' (MB)':>38}")
    for name in args.methods:
        r = results[name]
        print(f"{name:<8} {r['seconds']:>14.3f} {r['peak_bytes'] / 2**20:>38.1f}")
    if set(METHODS) <= set(results):
        sparse, dense = results["sparse"], results["dense"]
        a, b = outputs["sparse"].astype(np.float64), outputs["dense"].astype(np.float64)
        normalised = np.abs(a / a.max() - b / b.max()).max()
        labels = [np.argmax(np.concatenate([np.full_like(x[:1], BG_THRESHOLD), x / x.max()]), axis=0) for x in (a, b)]
        print(f"\nspeed-up (dense/sparse time):   {dense['seconds'] / sparse['seconds']:.1f}x")
        print(f"memory ratio (dense/sparse):    {dense['peak_bytes'] / max(sparse['peak_bytes'], 1):.1f}x")
        print(
            f"max |sparse - dense|:           {np.abs(a - b).max():.3g} (after global-max normalisation "
            f"{normalised:.3g}; max value {b.max():.3g})"
        )
        print(f"label disagreement (bg {BG_THRESHOLD}):   {np.mean(labels[0] != labels[1]):.3%} of pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(125, 94),
        metavar=("H", "W"),
        help="stride-4 grid (default 125 94: a 500×375 VOC image)",
    )
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--exp-times", type=int, default=8, help="steps = 2**exp_times (dense: squarings)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dense-dtype",
        choices=("float32", "float64"),
        default="float32",
        help="dtype of the dense reference (IRN: float32)",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
