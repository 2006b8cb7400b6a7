#!/usr/bin/env python
"""A ready GPU check, one command (≤ 8 min on one GPU): does everything CUDA-specific work, and how fast is it.

1. the CUDA-only tests (``pytest -k cuda`` over the test files that have any);
2. training throughput, float32 vs bfloat16 autocast, on random VOC-like batches with the VOC recipe's models and
   losses (``config.yaml`` run ``voc``, random weights): train_cls (ResNet-101 OS16 VWL, crop 512, batch 16),
   train_irn (ResNet-50 IRNet, crop 512, batch 32), train_seg (DeepLabV2-R101 MSC, crop 321, batch 10) —
   images/s of full optimizer steps (forward, loss, backward, SGD step), plus peak GPU memory;
3. CAM inference images/s at VOC size (375×500, scales 1.0/0.5/1.5/2.0 with flips, the ResNet-101 classifier);
4. the sparse random walk on CUDA vs the dense (hw)² reference (max difference, time);
5. the synthetic DAG with ``device: cuda`` (``bench/bench_dag.py``: wall time, critical path).

One table comes out, with the device's name. ``--cpu`` runs the same code paths on the CPU at tiny sizes in
seconds (the test suite calls it, so this script cannot rot); the numbers then mean nothing.

    python bench/gpu_check.py              # on a GPU machine
    python bench/gpu_check.py --cpu        # smoke run anywhere
    python bench/gpu_check.py --skip dag   # leave out parts: tests, train, cam, walk, dag
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.config import load_schema, run_config, validate_config  # noqa: E402

PARTS = ("tests", "train", "cam", "walk", "dag")
# the tests' tiny synthetic dataset (tests/helpers.py TINY_SYNTH): seconds to generate
TINY_SYNTH = {"image_size": 64, "num_classes": 3, "num_train_aug": 24, "num_train": 8, "num_val": 8, "max_objects": 2}
Row = tuple[str, str, str, str]  # check, setting, result, note


def recipe(run: str = "voc") -> dict[str, Any]:
    """The effective settings of a run of the repository's config.yaml (the paper's recipes for ``voc``), with
    random initial weights (nothing to download)."""
    import yaml

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()),
                             load_schema(REPO / "schemas/config.schema.yaml"))
    cfg = copy.deepcopy(run_config(config, run))
    for section in ("cls", "irn", "seg"):
        cfg[section]["pretrained"] = "none"
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / max(1, steps)


def training_cases(cfg: dict[str, Any], device: torch.device, tiny: bool) -> dict[str, Callable[[], tuple]]:
    """{stage: factory() → (model, objective, batch maker)} for the three trainings at the recipe's sizes."""
    from wsss.classify import ClassifierObjective, build_classifier
    from wsss.irn import IRNObjective, build_irn
    from wsss.ops.path_index import PathIndex
    from wsss.segment import SegObjective, build_segmenter

    g = torch.Generator().manual_seed(0)

    def cls_case():
        params = dict(cfg["cls"], backbone=10 if tiny else 101)
        crop, batch = (64, 2) if tiny else (512, 16)
        model = build_classifier(params, 20, cfg["method"], pretrained=False)
        images = torch.randn(batch, 3, crop, crop, generator=g)
        labels = (torch.rand(batch, 20, generator=g) < 0.15).float()
        labels[:, 0] = 1.0
        return model, ClassifierObjective(device, 0), {"image": images, "labels": labels}, batch

    def irn_case():
        params = dict(cfg["irn"], backbone=10 if tiny else 50)
        crop, batch = (64, 2) if tiny else (512, 32)
        radius = 5 if tiny else int(cfg["irn"]["radius"])
        model = build_irn(params, 10 if tiny else 50, pretrained=False)
        images = torch.randn(batch, 3, crop, crop, generator=g)
        labels = torch.randint(0, 21, (batch, crop // 4, crop // 4), generator=g)
        labels[:, :, : crop // 16] = 255
        return model, IRNObjective(PathIndex(radius, crop // 4, crop // 4), device), {"image": images,
                                                                                    "label": labels}, batch

    def seg_case():
        params = dict(cfg["seg"], backbone=10 if tiny else 101)
        crop, batch = (41, 2) if tiny else (321, 10)
        model = build_segmenter(params, 21, pretrained=False)
        images = torch.randn(batch, 3, crop, crop, generator=g)
        labels = torch.randint(0, 21, (batch, crop, crop), generator=g)
        return model, SegObjective(device, cfg["seg"]["loss_reduction"]), {"image": images, "label": labels}, batch

    return {"train_cls": cls_case, "train_irn": irn_case, "train_seg": seg_case}


def check_training(cfg: dict[str, Any], device: torch.device, tiny: bool, warmup: int, steps: int) -> list[Row]:
    from wsss.train import MicroBatch, training_autocast

    rows = []
    for name, factory in training_cases(cfg, device, tiny).items():
        model, objective, batch, size = factory()
        model.to(device).train()
        batch = {k: v.to(device) for k, v in batch.items()}
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
        counts = objective.counts(model, batch)
        micro = MicroBatch(0, tuple(range(size)), size, counts)
        result = {}
        for dtype in ("float32", "bfloat16"):
            if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                result[dtype] = None
                continue

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with training_autocast(device, dtype == "bfloat16"):  # (CPU autocast in the --cpu smoke run)
                    loss, _ = objective.loss(model, batch, micro)
                loss.backward()
                objective.end_step(model, 0)
                optimizer.step()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds = timed_steps(step, device, warmup, steps)
            except torch.cuda.OutOfMemoryError:
                result[dtype] = None
                torch.cuda.empty_cache()
                continue
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            result[dtype] = (size / seconds, memory)
        for dtype, value in result.items():
            setting = f"{dtype}, batch {size}"
            if value is None:
                rows.append((name, setting, "–", "no bf16 / out of memory"))
            else:
                speed = ""
                if dtype == "bfloat16" and result["float32"]:
                    speed = f"{value[0] / result['float32'][0]:.2f}× fp32"
                memory = f"peak {value[1]:.1f} GiB" if value[1] is not None else ""
                rows.append((name, setting, f"{value[0]:.1f} img/s", f"{memory} {speed}".strip()))
        del model, optimizer, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def check_cam(cfg: dict[str, Any], device: torch.device, tiny: bool, steps: int) -> list[Row]:
    from wsss.classify import build_classifier, cam_and_scores
    from wsss.ops.cam import multiscale_cams

    params = dict(cfg["cls"], backbone=10 if tiny else 101)
    model = build_classifier(params, 20, cfg["method"], pretrained=False).to(device).eval()
    size = (48, 64) if tiny else (375, 500)
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, *size, generator=g).to(device) for _ in range(2 if tiny else 8)]
    keys = [[i % 20, (i + 7) % 20] for i in range(len(images))]
    scales = cfg["cam"]["scales"]

    def run() -> None:
        with torch.inference_mode():
            multiscale_cams(lambda x: cam_and_scores(model, x), images, keys, scales, cfg["cam"]["fusion"],
                            max_batch=8, with_high_res=False, with_scores=True)

    seconds = timed_steps(run, device, 1, steps)
    return [("infer_cam", f"{size[0]}×{size[1]}, scales {scales} + flip", f"{len(images) / seconds:.1f} img/s",
             f"ResNet-{params['backbone']}")]


def check_walk(device: torch.device, tiny: bool) -> list[Row]:
    from wsss.ops.random_walk import random_walk, random_walk_dense

    g = torch.Generator().manual_seed(2)
    height, width = (12, 16) if tiny else (48, 64)
    boundary = torch.rand(height, width, generator=g) ** 4
    seeds = torch.rand(3, height, width, generator=g)
    exp_times = 3 if tiny else 8
    start = time.perf_counter()
    dense = random_walk_dense(seeds.to(device), boundary.to(device), exp_times=exp_times)
    _sync(device)
    dense_s = time.perf_counter() - start
    start = time.perf_counter()
    sparse = random_walk(seeds.to(device), boundary.to(device), steps=2**exp_times)
    _sync(device)
    sparse_s = time.perf_counter() - start
    diff = float((sparse.double().cpu() - dense.double().cpu()).abs().max() / dense.abs().max().cpu())
    rows = [("random walk", f"{height}×{width}, {2 ** exp_times} steps, sparse vs dense",
             f"max rel diff {diff:.1e}", f"sparse {sparse_s * 1e3:.0f} ms, dense {dense_s * 1e3:.0f} ms")]
    if diff > 1e-4:
        rows.append(("random walk", "FAILED", f"{diff:.1e} > 1e-4", "sparse walk disagrees with the reference"))
    if not tiny:  # the VOC stride-4 size, sparse only (the dense matrix would be 11750² float64)
        boundary = torch.rand(94, 125, generator=g) ** 4
        seeds = torch.rand(21, 94, 125, generator=g)
        start = time.perf_counter()
        random_walk(seeds.to(device), boundary.to(device), steps=256)
        _sync(device)
        rows.append(("random walk", "94×125 (VOC stride 4), 21 classes, 256 steps",
                     f"{(time.perf_counter() - start) * 1e3:.0f} ms", "sparse"))
    return rows


def check_tests(tiny: bool) -> list[Row]:
    files = sorted(str(p) for p in (REPO / "tests").glob("test_*.py") if "cuda" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "-m", "not slurm", *files]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = proc.returncode in (0, 5)  # 5: nothing selected
    return [("CUDA tests", f"pytest -k cuda ({len(files)} files)", "passed" if ok else "FAILED", last.strip("= "))]


def check_dag(tiny: bool, device: str) -> list[Row]:
    """The default synthetic DAG on ``device``; tiny: only the preparation of a tiny synthetic dataset."""
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = device
    with tempfile.TemporaryDirectory() as tmp:
        configfile = Path(tmp) / "config.yaml"
        cmd = [sys.executable, str(REPO / "bench/bench_dag.py"), "--configfile", str(configfile)]
        if tiny:
            config["datasets"]["synth"].update(TINY_SYNTH)
            cmd += ["resources/synth/labels.tsv"]
        configfile.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return [("synthetic DAG", f"device: {device}", "FAILED", (proc.stderr.strip().splitlines() or [""])[-1])]
    lines = proc.stdout.splitlines()
    summary = next((line for line in lines if line.startswith("jobs:")), "")
    path = next((line.split(":", 2)[1].strip() for line in lines if line.startswith("critical path:")), "")
    return [("synthetic DAG", f"device: {device}" + (" (dataset only)" if tiny else ""),
             summary.split("DAG wall: ")[-1], f"critical path {path}")]


def format_table(rows: list[Row], title: str) -> str:
    widths = [max(len(r[i]) for r in rows + [("check", "setting", "result", "note")]) for i in range(4)]
    head = ("check", "setting", "result", "note")
    lines = [title, "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (a smoke run in seconds)")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 5; --cpu 1)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: gpu_check: no CUDA device visible (use --cpu for the smoke run)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    steps = args.steps or (1 if args.cpu else 5)
    name = "CPU (--cpu smoke run, tiny sizes)" if args.cpu else torch.cuda.get_device_name(device)
    cfg = recipe()
    rows: list[Row] = []
    start = time.perf_counter()
    if "tests" not in args.skip:
        rows += check_tests(args.cpu)
    if "train" not in args.skip:
        rows += check_training(cfg, device, args.cpu, warmup=1 if args.cpu else 2, steps=steps)
    if "cam" not in args.skip:
        rows += check_cam(cfg, device, args.cpu, steps)
    if "walk" not in args.skip:
        rows += check_walk(device, args.cpu)
    if "dag" not in args.skip:
        rows += check_dag(args.cpu, "cpu" if args.cpu else "cuda")
    print(format_table(rows, f"{name}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s"))
    return 1 if any("FAILED" in r[1] or r[2] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
