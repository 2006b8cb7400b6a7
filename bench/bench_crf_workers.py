#!/usr/bin/env python
"""Benchmark IR-label generation (two dense-CRF passes per image) with 1 worker vs N worker processes.

Synthetic VOC-sized inputs (default 375×500 images with random coloured ellipses and a matching stride-4 CAM per
image, stored like infer_cam stores them) go through ``wsss.pipeline.crf.write_ir_labels`` once per worker count; the table
gives wall time and images/s (pool start-up included) and checks that every worker count writes identical PNGs.

    python bench/bench_crf_workers.py                  # 24 images, workers 1 and os.cpu_count()
    python bench/bench_crf_workers.py --images 48 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from wsss.artifacts.cam import CamRecord, save_cam
from wsss.ops.cam import stride4_size
from wsss.pipeline.crf import write_ir_labels
from wsss.runtime.io import write_jpeg

OPTIONS = {"conf_fg": 0.30, "conf_bg": 0.05, "gt_prob": 0.7, "iters": 10, "pos": (3, 3), "bi": (50, 5, 10)}


def synthetic_inputs(folder: Path, count: int, height: int, width: int, seed: int) -> list[tuple[str, Path, Path]]:
    """``count`` JPEGs with 1–3 coloured ellipses on noise and CAM records whose channels are blurred ellipses."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    h4, w4 = stride4_size(height, width)
    tasks = []
    for n in range(count):
        image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        k = int(rng.integers(1, 4))
        cams = []
        for _ in range(k):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
            dist = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
            image[dist < 1] = rng.integers(100, 256, 3)
            cam = np.exp(-dist[::4, ::4][:h4, :w4] / 1.5)
            cams.append(cam / cam.max())
        image_id = f"img_{n:04d}"
        image_path, cam_path = folder / f"{image_id}.jpg", folder / f"{image_id}.npz"
        write_jpeg(image_path, image)
        keys = np.sort(rng.choice(20, size=k, replace=False)).astype(np.int64)
        record = CamRecord(keys, np.stack(cams).astype(np.float16), (height, width), np.zeros(20, np.float32))
        save_cam(cam_path, record)
        tasks.append((image_id, image_path, cam_path))
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        tasks = synthetic_inputs(tmp / "in", args.images, *args.size, args.seed)
        print(f"{args.images} images of {args.size[0]}×{args.size[1]}, {os.cpu_count()} CPUs")
        print(f"{'workers':>7} {'seconds':>8} {'images/s':>9}  identical")
        reference = None
        for workers in args.workers:
            out = tmp / f"out_{workers}"
            start = time.perf_counter()
            write_ir_labels(tasks, out, OPTIONS, workers=workers)
            seconds = time.perf_counter() - start
            pngs = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
            reference = reference or pngs
            print(f"{workers:>7} {seconds:>8.2f} {args.images / seconds:>9.2f}  {pngs == reference}")


if __name__ == "__main__":
    main()
