#!/usr/bin/env python
"""Benchmark the CPU share of an IRN training step at VOC size: the pair-label counts that normalise the loss.

:func:`wsss.engine.train.fit` asks the objective for the loss denominators (bg_pos, fg_pos, neg pair counts of the whole
global batch) before the forward passes. They used to be counted from the N×K×h'×w' pair labels of the CPU batch
(``pair_label_counts(path_index.pair_labels(label))``: int64 stacks of ~0.5 GB for 32 labels of 128×128 at
radius 10), in series with every GPU step. Now :meth:`PathIndex.pair_label_counts` counts one offset at a time over
views of the map, on the batch's device. Both are timed here in the same run on the same labels, per image, at the
real per-image size (crop 512 → 128×128 stride-4 labels, radius 10: 152 offsets, 119×110 sources) with a small
batch (``--batch``), in one thread (the main process's share of a step; ``--threads`` to change). Optionally
(``--step``) the forward/backward/SGD step of the real IRNet (ResNet-50, random weights) on the same batch, to put
the counts in proportion; on a GPU machine the step is the GPU's and the counts become GPU work too.

    python bench/bench_irn_step.py                   # CPU, batch 4, 1 thread
    python bench/bench_irn_step.py --step --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss.ops.path_index import PathIndex
from wsss.pipeline.pseudo_labels import pair_label_counts


def voc_like_labels(batch: int, size: int, seed: int) -> torch.Tensor:
    """IR-label-like uint8 maps: background, a few rectangles of classes 1..20, 255 bands around them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, size, size, dtype=torch.uint8)
    for n in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            y0, x0 = (int(v) for v in torch.randint(0, size * 3 // 4, (2,), generator=g))
            h, w = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=g))
            cls = int(torch.randint(1, 21, (1,), generator=g))
            labels[n, max(0, y0 - 3) : y0 + h + 3, max(0, x0 - 3) : x0 + w + 3] = 255
            labels[n, y0 : y0 + h, x0 : x0 + w] = cls
    return labels


def seconds(fn, device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (synchronised on CUDA)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=512, help="training crop (labels are crop/4 square)")
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="where the new counts run (the old ones: always the CPU)")
    parser.add_argument("--step", action="store_true", help="also time a real IRNet training step on the batch")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.crop // 4
    index = PathIndex(args.radius, size, size)
    labels = voc_like_labels(args.batch, size, seed=0)

    old = pair_label_counts(index.pair_labels(labels))
    new = index.pair_label_counts(labels.to(device))
    assert torch.equal(old, new.cpu()), (old, new)
    old_s = seconds(lambda: pair_label_counts(index.pair_labels(labels)), torch.device("cpu"), args.repeats)
    new_s = seconds(lambda: index.pair_label_counts(labels.to(device)), device, args.repeats)
    result = {
        "batch": args.batch,
        "label_size": size,
        "radius": args.radius,
        "offsets": index.num_offsets,
        "threads": args.threads,
        "device": str(device),
        "old_counts_ms_per_image": 1e3 * old_s / args.batch,
        "new_counts_ms_per_image": 1e3 * new_s / args.batch,
        "ratio_old_new": old_s / new_s,
    }
    if args.step:
        from wsss.engine.train import MicroBatch
        from wsss.pipeline.pseudo_labels import IRNObjective, build_irn

        model = build_irn({"backbone": 50, "pretrained": "none"}, 50, pretrained=False).to(device).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        objective = IRNObjective(index, device)
        g = torch.Generator().manual_seed(1)
        batch = {"image": torch.randn(args.batch, 3, args.crop, args.crop, generator=g), "label": labels}

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            micro = MicroBatch(0, tuple(range(args.batch)), args.batch, objective.counts(model, batch))
            loss, _ = objective.loss(model, batch, micro)
            loss.backward()
            optimizer.step()

        step_s = seconds(step, device, max(1, args.repeats - 1))
        result.update(
            step_ms_per_image=1e3 * step_s / args.batch,
            old_share_of_step=old_s / (step_s - new_s + old_s),
            new_share_of_step=new_s / step_s,
        )
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
