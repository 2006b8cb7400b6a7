#!/usr/bin/env python
"""CPU training-step knobs, measured in one run on the synthetic recipe's classifier step (``config.yaml`` run
``synth``: VWL ResNet-10, crop 96, batch 16, AdamW): which of them pay for themselves on a laptop CPU.

- memory format: channels_last vs contiguous (NCHW) model and batch;
- threads: ``torch.set_num_threads`` 1 vs all cores (the rules pass ``OMP_NUM_THREADS`` = the rule's threads),
  and one inter-op thread vs torch's default;
- decoded-image caching: the time to read and decode one batch of the dataset's JPEGs against one step.

Variants run round-robin (each step of each variant in turn, ``--rounds`` times) so that load from other
processes spreads over all of them; the table gives the median seconds per step, wall and CPU (the process's CPU
time: with one thread it is the work itself, robust to a busy machine), and the ratio to the baseline.

    python bench/bench_cpu_train.py
    python bench/bench_cpu_train.py --rounds 8
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.engine.train import MicroBatch  # noqa: E402
from wsss.pipeline.classify import ClassifierObjective, build_classifier  # noqa: E402
from wsss.runtime.config import load_schema, run_config, validate_config  # noqa: E402


def synth_cls() -> tuple[dict, str]:
    config = validate_config(
        yaml.safe_load((REPO / "config.yaml").read_text()), load_schema(REPO / "schemas/config.schema.yaml")
    )
    cfg = run_config(config, "synth")
    return cfg["cls"], cfg["method"]


class Variant:
    """A model + optimizer + batch in one memory format, stepped under given thread settings."""

    def __init__(self, params: dict, method: str, channels_last: bool, threads: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.threads = threads
        self.model = build_classifier(dict(params, pretrained="none"), 4, method, pretrained=False).train()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        g = torch.Generator().manual_seed(seed)
        crop, batch = int(params["crop"]), int(params["batch_size"])
        self.batch = {
            "image": torch.randn(batch, 3, crop, crop, generator=g).contiguous(memory_format=fmt),
            "labels": (torch.rand(batch, 4, generator=g) < 0.4).float(),
        }
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.objective = ClassifierObjective(torch.device("cpu"), 0)
        self.micro = MicroBatch(0, tuple(range(batch)), batch, None)

    def step(self) -> tuple[float, float]:
        torch.set_num_threads(self.threads)
        wall, cpu = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.objective.loss(self.model, self.batch, self.micro)
        loss.backward()
        self.objective.end_step(self.model, 0)
        self.optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu


def decode_seconds(size: int, count: int, seed: int = 0) -> float:
    """Seconds to decode ``count`` JPEGs of size×size (quality 90) from memory, as the data loader reads them."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    start = time.process_time()
    for blob in blobs:
        np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interop", action="store_true", help="also compare 1 inter-op thread (set at start-up)")
    args = parser.parse_args()
    if args.interop:
        torch.set_num_interop_threads(1)
    params, method = synth_cls()
    cores = os.cpu_count() or 1
    variants = {
        "contiguous, 1 thread": Variant(params, method, False, 1),
        "channels_last, 1 thread": Variant(params, method, True, 1),
        f"contiguous, {cores} threads": Variant(params, method, False, cores),
        f"channels_last, {cores} threads": Variant(params, method, True, cores),
    }
    for variant in variants.values():  # warm-up: oneDNN primitive creation, allocator
        variant.step()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            times[name].append(variant.step())
    base_wall = statistics.median(t[0] for t in times["contiguous, 1 thread"])
    base_cpu = statistics.median(t[1] for t in times["contiguous, 1 thread"])
    print(
        f"synth train_cls step: ResNet-{params['backbone']} {method}, crop {params['crop']}, batch "
        f"{params['batch_size']}; {cores} cores, interop threads {torch.get_num_interop_threads()}, "
        f"{args.rounds} rounds, median"
    )
    print(f"{'variant':<28} {'wall s':>7} {'cpu s':>7} {'wall ratio':>10} {'cpu ratio':>9}")
    for name, samples in times.items():
        wall = statistics.median(t[0] for t in samples)
        cpu = statistics.median(t[1] for t in samples)
        print(f"{name:<28} {wall:>7.3f} {cpu:>7.3f} {base_wall / wall:>10.2f} {base_cpu / cpu:>9.2f}")
    decode = decode_seconds(int(params["resize_long"][-1]), int(params["batch_size"]))
    print(
        f"decoding one batch of {params['batch_size']} JPEGs ({params['resize_long'][-1]} px): {decode:.4f} CPU s "
        f"= {100 * decode / base_cpu:.1f} % of a 1-thread step"
    )


if __name__ == "__main__":
    main()
