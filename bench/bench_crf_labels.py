#!/usr/bin/env python
"""Benchmark the final dense CRF over all classes vs over the labels that can win (``seg.crf.label_eps``).

COCO-like synthetic inputs (default 480×640 images, 81 classes, 1–4 objects per image): coloured ellipses on
textured noise and stride-8 DeepLab-like logits (each present class high inside its blurred ellipse, every absent
class low with noise, a few absent classes confusable near the objects), upsampled and soft-maxed as ``crf`` does
(``wsss.artifacts.logits.probs_from_logits``). Each image is refined once with every label and once per ``eps`` with
:func:`wsss.ops.crf.crf_labels_from_probs`; the table gives seconds per image, the speed-up (ratio of the sums
in this one run, CPU seconds of the single-threaded process), the labels kept and the fraction of pixels whose label differs from the all-class CRF.

    python bench/bench_crf_labels.py                      # 3 images, 81 classes, eps 1e-4 1e-3 1e-2
    python bench/bench_crf_labels.py --classes 21 --images 5 --eps 1e-3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from wsss.artifacts.logits import probs_from_logits
from wsss.ops.crf import candidate_labels, crf_from_probs, crf_labels_from_probs
from wsss.runtime.config import default_config

SETTINGS = {k: v for k, v in default_config()["seg"]["crf"].items() if k not in ("label_eps", "max_labels")}


def synthetic_case(rng: np.random.Generator, classes: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H×W×3 uint8 image, C×H×W float32 softmax of upsampled stride-8 logits)."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = (rng.integers(0, 60, (height, width, 3)) + 40 * (((ys // 24) + (xs // 24)) % 2)[..., None]).astype(np.uint8)
    h8, w8 = (height - 1) // 8 + 1, (width - 1) // 8 + 1
    logits = rng.normal(-8.0, 0.6, (classes, h8, w8)).astype(np.float32)  # absent classes: low, noisy
    logits[0] = 2.0 + rng.normal(0, 0.5, (h8, w8))  # background
    present = rng.choice(np.arange(1, classes), size=int(rng.integers(1, 5)), replace=False)
    confusable = rng.choice(np.setdiff1d(np.arange(1, classes), present), size=3, replace=False)
    for c in present:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        dist = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
        image[dist < 1] = rng.integers(80, 256, 3)
        bump = np.exp(-dist[::8, ::8][:h8, :w8] / 1.2)
        logits[c] += 9.0 * bump + rng.normal(0, 0.8, (h8, w8))
        logits[rng.choice(confusable)] += 4.5 * bump  # a look-alike class, second best inside the object
    probs = probs_from_logits(torch.from_numpy(logits), (height, width))
    return image, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--classes", type=int, default=81, help="labels including background (COCO: 81)")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--top-k", type=int, default=None, help="also cap the kept classes (max_labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    cases = [synthetic_case(rng, args.classes, *args.size) for _ in range(args.images)]
    settings: list[float | None] = [None, *args.eps]  # None: every label
    cpu = dict.fromkeys(settings, 0.0)
    kept: dict[float | None, list[int]] = {e: [] for e in settings}
    differ: dict[float | None, list[float]] = {e: [] for e in settings}
    for image, probs in cases:  # settings interleaved per image: a busy machine slows them alike
        full = None
        for eps in settings:
            start = time.process_time()  # CPU seconds of this (single-threaded) process: robust to other load
            if eps is None:
                labels = np.argmax(crf_from_probs(image, probs, **SETTINGS), axis=0)
            else:
                labels = crf_labels_from_probs(image, probs, eps=eps, top_k=args.top_k, **SETTINGS)
            cpu[eps] += time.process_time() - start
            full = labels if eps is None else full
            kept[eps].append(args.classes if eps is None else candidate_labels(probs, eps, args.top_k).size)
            differ[eps].append(100.0 * float((labels != full).mean()))
    print(f"{args.images} images of {args.size[0]}×{args.size[1]}, {args.classes} labels, one thread, CPU seconds")
    print(f"{'labels':>14} {'s/image':>8} {'speed-up':>8} {'kept':>6} {'differ %':>9} {'max differ %':>12}")
    for eps in settings:
        name = "all" if eps is None else f"eps {eps:g}" + (f" top {args.top_k}" if args.top_k is not None else "")
        print(
            f"{name:>14} {cpu[eps] / args.images:>8.2f} {cpu[None] / cpu[eps]:>8.1f} {np.mean(kept[eps]):>6.1f} "
            f"{np.mean(differ[eps]):>9.4f} {max(differ[eps]):>12.4f}"
        )


if __name__ == "__main__":
    main()
