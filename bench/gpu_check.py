#!/usr/bin/env python
"""A GPU check for a short lend (one 10-minute call): what CUDA-specific works, and how fast, reported part by part.

Every part runs in its own subprocess with its own time limit (``LIMITS``); its rows are printed (and flushed) the
moment it ends and appended to a JSON file (``--json``, default ``gpu_check.json``), so a run cut short keeps
what it found. A part that raises, dies or runs out of time gets a ``FAILED`` / ``TIMEOUT`` row and the next one
starts. Parts, cheapest and most informative first (the whole default run stays under ``--budget`` 540 s):

1. unit checks of every CUDA branch: ``resume`` (optimizer state on the parameters' device after resuming onto the
   GPU from a CPU checkpoint), ``fit_amp`` (``fit`` under bfloat16 autocast), ``cam`` (multi-scale CAMs on the GPU
   vs the CPU, TF32 off), ``walk`` (the sparse random walk vs the dense reference, float64 on both sides),
   ``syncbn`` (a world-size-1 NCCL group — gloo on CPU — through :class:`wsss.runtime.distributed.SyncBatchNorm2d`'s
   synchronised path under bfloat16 autocast, vs BatchNorm2d), ``lease`` (a GPU lease's environment seen by a
   child: ``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, one visible device), ``tests`` (the test
   suite's CUDA tests, ``pytest -k cuda``);
2. per-stage images/s through :func:`wsss.engine.train.fit` with the stages' settings (``seed_everything``: deterministic
   cuDNN; DataLoader with the recipe's workers decoding JPEGs of VOC size, random crops), float32 and bfloat16:
   ``train_cls`` (ResNet-101 VWL, crop 512, batch 16), ``train_irn`` (ResNet-50 IRNet, batch 32, the pair counts
   on the GPU), ``train_seg`` (DeepLabV2-R101 MSC, crop 321, batch 10); ``infer_cam`` images/s at 375×500 with the
   recipe's scales and flips;
3. ``dag``: the synthetic DAG with ``device: cuda`` at the tests' tiny dataset sizes (``bench/bench_dag.py``).

``--cpu`` runs all of it on the CPU at tiny sizes (the test suite does, so the script cannot rot), one thread per
process (``OMP_NUM_THREADS=1`` for every part and what it starts: on a loaded 2-core machine OpenMP's spin-waiting
made the tiny convolutions about 100× slower, 3 s per ResNet-10 step of 2 crops of 64 px); its numbers mean nothing.

    python bench/gpu_check.py                    # on a GPU machine
    python bench/gpu_check.py --cpu              # smoke run anywhere
    python bench/gpu_check.py --only resume walk # some parts
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.runtime.config import load_schema, run_config, validate_config  # noqa: E402

# part → time limit (s) of its subprocess; the order is the run's order
LIMITS: dict[str, int] = {
    "resume": 25,
    "fit_amp": 30,
    "cam": 25,
    "walk": 25,
    "syncbn": 30,
    "lease": 20,
    "tests": 75,
    "train_cls": 60,
    "train_irn": 60,
    "train_seg": 60,
    "infer_cam": 30,
    "dag": 100,
}
BUDGET_S = 540  # the default run's total: under 9 minutes
CPU_LIMIT_FACTOR = 4
# the tests' tiny synthetic dataset (tests/helpers.py TINY_SYNTH): seconds to generate
TINY_SYNTH = {"image_size": 64, "num_classes": 3, "num_train_aug": 24, "num_train": 8, "num_val": 8, "max_objects": 2}
Row = tuple[str, str, str, str]  # check, setting, result, note
HEAD = ("part", "check", "setting", "result", "note", "s")


def recipe(run: str = "voc") -> dict[str, Any]:
    """The effective settings of a run of the repository's config.yaml (the paper's recipes for ``voc``), with
    random initial weights (nothing to download)."""
    import yaml

    config = validate_config(
        yaml.safe_load((REPO / "config.yaml").read_text()), load_schema(REPO / "schemas/config.schema.yaml")
    )
    cfg = copy.deepcopy(run_config(config, run))
    for section in ("cls", "irn", "seg"):
        cfg[section]["pretrained"] = "none"
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAILED"


# ------------------------------------------------------------------------------------------ 1. CUDA unit checks


def _state_off_its_parameter(optimizer: torch.optim.Optimizer) -> list[str]:
    """Optimizer state tensors not on their parameter's device/dtype (``step`` counters are CPU scalars by design)."""
    bad = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and key != "step" and (value.device, value.dtype) != (p.device, p.dtype):
                    bad.append(f"{key} on {value.device}")
    return bad


def _small_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 1),
    )


class _Images(torch.utils.data.Dataset):
    """8 random 3×16×16 images with a regression target, indexed by (index, aug seed) as fit's sampler gives."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key):
        g = torch.Generator().manual_seed(int(key[0]))
        return {"x": torch.randn(3, 16, 16, generator=g), "y": torch.randn(1, generator=g)}


def part_resume(device: torch.device, tiny: bool) -> list[Row]:
    """A checkpoint written on the CPU (with momentum / Adam moments), resumed by ``fit`` onto ``device``: before
    the first step every state tensor is on its parameter's device, and the resumed steps run."""
    from wsss.engine.train import Checkpoint, build_optimizer, fit

    rows = []
    for name in ("sgd", "adamw"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            torch.manual_seed(0)
            source = _small_net()
            opt = build_optimizer([{"params": source.parameters()}], name, 0.01, 1e-4, 0.9)
            batch = _Images()[(0, 0)]
            ((source(batch["x"][None]) - batch["y"]) ** 2).mean().backward()
            opt.step()
            Checkpoint(source.state_dict(), opt.state_dict(), 1, {"fingerprint": "f"}).save(out / "ckpt.pt")
            model = _small_net()
            resumed = build_optimizer([{"params": model.parameters()}], name, 0.01, 1e-4, 0.9)
            seen: list[list[str]] = []
            original = resumed.step

            def checked(*args, _orig=original, _opt=resumed, **kwargs):
                seen.append(_state_off_its_parameter(_opt))
                return _orig(*args, **kwargs)

            resumed.step = checked

            def step_fn(m, b, step):
                loss = ((m(b["x"].to(device)) - b["y"].to(device)) ** 2).mean()
                return loss, {}

            fit(
                model,
                _Images(),
                step_fn,
                resumed,
                batch_size=4,
                max_steps=3,
                seed=0,
                checkpoint=out / "ckpt.pt",
                checkpoint_every=10,
                final_weights=out / "model.pt",
                log_csv=out / "log.csv",
                device=device,
                fingerprint="f",
            )
            ok = len(seen) == 2 and seen[0] == [] and not _state_off_its_parameter(resumed)
            rows.append(
                (
                    "resume",
                    f"{name}, CPU checkpoint → {device.type}",
                    _verdict(ok),
                    "optimizer state on the parameters' device" if ok else f"steps {len(seen)}: {seen[:1]}",
                )
            )
    return rows


def part_fit_amp(device: torch.device, tiny: bool) -> list[Row]:
    """``fit`` with ``amp=True``: bfloat16 autocast on CUDA (float32 on CPU by design), finite losses, float32
    weights that moved."""
    from wsss.engine.train import autocast_enabled, build_optimizer, fit

    torch.manual_seed(0)
    model = _small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dtypes = set()

    def step_fn(m, b, step):
        out = m(b["x"].to(device))
        dtypes.add(str(out.dtype).replace("torch.", ""))
        return ((out.float() - b["y"].to(device)) ** 2).mean(), {}

    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.01, 1e-4, 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fit(
            model,
            _Images(),
            step_fn,
            opt,
            batch_size=4,
            max_steps=3,
            seed=0,
            checkpoint=out / "ckpt.pt",
            checkpoint_every=10,
            final_weights=out / "model.pt",
            log_csv=out / "log.csv",
            device=device,
            fingerprint="f",
            amp=True,
        )
        losses = [float(line.split(",")[2]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    expected = "bfloat16" if autocast_enabled(device, True) else "float32"
    moved = any(not torch.equal(v.cpu(), before[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    weights32 = all(p.dtype == torch.float32 for p in model.parameters())
    ok = dtypes == {expected} and len(losses) == 3 and all(np.isfinite(losses)) and moved and weights32
    return [
        (
            "fit amp",
            f"autocast {'on' if expected == 'bfloat16' else 'off (CPU)'}",
            _verdict(ok),
            f"outputs {sorted(dtypes)}, losses {', '.join(f'{v:.3g}' for v in losses)}",
        )
    ]


def part_cam(device: torch.device, tiny: bool) -> list[Row]:
    """Multi-scale + flip CAMs of the recipe's classifier on ``device`` vs the CPU (TF32 off: float32 both)."""
    from wsss.ops.cam import multiscale_cams
    from wsss.pipeline.classify import build_classifier, cam_and_scores

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = recipe()
    torch.manual_seed(0)
    model = build_classifier(dict(cfg["cls"], backbone=10), 20, cfg["method"], pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, 48, 64, generator=g), torch.randn(3, 40, 56, generator=g)]
    keys = [[0, 5], [3]]
    scales = cfg["cam"]["scales"]

    def cams(net: torch.nn.Module, on: torch.device) -> list:
        with torch.inference_mode():
            return multiscale_cams(
                lambda x: cam_and_scores(net, x),
                [i.to(on) for i in images],
                keys,
                scales,
                cfg["cam"]["fusion"],
                with_high_res=True,
                with_scores=True,
            )

    ref = cams(model, torch.device("cpu"))
    got = cams(model.to(device), device)
    diff = 0.0
    for a, b in zip(ref, got):
        for field in ("cam", "high_res", "scores"):
            x, y = getattr(a, field), getattr(b, field)
            x = torch.as_tensor(x).double().cpu()
            y = torch.as_tensor(y).double().cpu()
            diff = max(diff, float((x - y).abs().max() / x.abs().max().clamp(min=1e-12)))
    return [
        (
            "CAM",
            f"{device.type} vs CPU, scales {scales} + flip",
            _verdict(diff <= 1e-3),
            f"max rel diff {diff:.1e} (limit 1e-3)",
        )
    ]


def part_walk(device: torch.device, tiny: bool) -> list[Row]:
    """The sparse walk on ``device`` vs the dense (hw)² reference, both float64; then the VOC stride-4 size."""
    from wsss.ops.random_walk import random_walk, random_walk_dense

    g = torch.Generator().manual_seed(2)
    height, width = (12, 16) if tiny else (48, 64)
    boundary = (torch.rand(height, width, generator=g) ** 4).double()
    seeds = torch.rand(3, height, width, generator=g).double()
    exp_times = 3 if tiny else 8
    start = time.perf_counter()
    dense = random_walk_dense(seeds.to(device), boundary.to(device), exp_times=exp_times)
    _sync(device)
    dense_s = time.perf_counter() - start
    start = time.perf_counter()
    sparse = random_walk(seeds.to(device), boundary.to(device), steps=2**exp_times)
    _sync(device)
    sparse_s = time.perf_counter() - start
    float64 = sparse.dtype == dense.dtype == torch.float64
    diff = float((sparse.cpu() - dense.cpu()).abs().max() / dense.abs().max().cpu())
    rows = [
        (
            "random walk",
            f"{height}×{width}, {2**exp_times} steps, float64 sparse vs dense",
            _verdict(float64 and diff <= 1e-9),
            f"max rel diff {diff:.1e} (limit 1e-9); sparse {sparse_s * 1e3:.0f} ms, dense {dense_s * 1e3:.0f} ms",
        )
    ]
    h, w, c = (24, 32, 3) if tiny else (94, 125, 21)
    boundary, seeds = torch.rand(h, w, generator=g) ** 4, torch.rand(c, h, w, generator=g)
    start = time.perf_counter()
    random_walk(seeds.to(device), boundary.to(device), steps=256)
    _sync(device)
    rows.append(
        (
            "random walk",
            f"{h}×{w}, {c} classes, 256 steps",
            "ok",
            f"{(time.perf_counter() - start) * 1e3:.0f} ms (sparse)",
        )
    )
    return rows


def part_syncbn(device: torch.device, tiny: bool) -> list[Row]:
    """A world-size-1 process group (NCCL on CUDA, gloo on CPU) through SyncBatchNorm2d's synchronised path
    (forced: one process normally takes plain BatchNorm) under bfloat16 autocast, against BatchNorm2d."""
    import torch.distributed as dist

    from wsss.runtime import distributed
    from wsss.runtime.distributed import SyncBatchNorm2d

    if device.type == "cuda":
        torch.cuda.set_device(0)  # NCCL binds the group to the current device
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(
            distributed.backend_for(device), init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1
        )
        try:
            torch.manual_seed(0)
            conv = torch.nn.Conv2d(3, 8, 3).to(device)
            sync, plain = SyncBatchNorm2d(8).to(device), torch.nn.BatchNorm2d(8).to(device)
            x = torch.randn(4, 3, 20, 20, device=device)
            outs, grads, forced_calls = [], [], 0
            for bn, forced in ((sync, True), (plain, False)):
                conv.zero_grad()
                patch = (
                    mock.patch.object(distributed, "rank_world", return_value=(0, 2))
                    if forced
                    else mock.patch.object(distributed, "rank_world", wraps=distributed.rank_world)
                )
                with patch as world, torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    y = bn(conv(x))
                    loss = (y.float() * torch.linspace(0, 1, y.numel(), device=device).view_as(y)).sum()
                    loss.backward()
                    forced_calls += world.call_count if forced else 0
                outs.append(y.detach().float())
                grads.append(conv.weight.grad.detach().clone())
            out_diff = float((outs[0] - outs[1]).abs().max())
            grad_diff = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max())
            running = float((sync.running_var - plain.running_var).abs().max() / plain.running_var.abs().max())
        finally:
            dist.destroy_process_group()
    ok = forced_calls >= 1 and out_diff <= 0.05 and grad_diff <= 0.05 and running <= 1e-2
    return [
        (
            "SyncBatchNorm",
            f"{distributed.backend_for(device)} world 1, bf16 autocast vs BatchNorm2d",
            _verdict(ok),
            f"synchronised path {forced_calls}×; output diff {out_diff:.1e}, grad rel diff {grad_diff:.1e}, "
            f"running var rel diff {running:.1e}",
        )
    ]


def part_lease(device: torch.device, tiny: bool) -> list[Row]:
    """A one-GPU lease in a private lock folder: the leased command sees its GPU (one device) in PCI order."""
    from wsss.runtime.gpu_lease import acquire, machine_gpus

    gpus = machine_gpus()[0] if device.type == "cuda" else ["0", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        lock_dir = Path(tmp) / "locks"
        lock_dir.mkdir(mode=0o700)
        lease = acquire(1, gpus=gpus, directory=lock_dir, timeout=10)
        try:
            env = lease.env()
            code = (
                "import os, torch; print(os.environ.get('CUDA_VISIBLE_DEVICES'), "
                "os.environ.get('CUDA_DEVICE_ORDER'), torch.cuda.device_count())"
            )
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        finally:
            lease.release()
    seen = proc.stdout.split()
    want_count = "1" if device.type == "cuda" else "0"
    ok = proc.returncode == 0 and seen == [lease.ids[0], "PCI_BUS_ID", want_count]
    return [
        (
            "GPU lease",
            f"1 of {len(gpus)} ({', '.join(gpus)})",
            _verdict(ok),
            f"child sees CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER, count = {' '.join(seen) or proc.stderr[-200:]}",
        )
    ]


def part_tests(device: torch.device, tiny: bool) -> list[Row]:
    """The suite's CUDA tests (``-k cuda``: they skip without CUDA)."""
    files = sorted(str(p) for p in (REPO / "tests").glob("test_*.py") if "cuda" in p.read_text())
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "cuda",
        "-m",
        "not slurm and not slow",
        *files,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # within the part's limit
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = proc.returncode in (0, 5)  # 5: nothing selected
    return [("CUDA tests", f"pytest -k cuda ({len(files)} files)", _verdict(ok), last.strip("= "))]


# ------------------------------------------------------------------------------------- 2. per-stage images/s


class JpegCrops(torch.utils.data.Dataset):
    """``count`` JPEG-encoded images of ``size`` (smooth random content) decoded with PIL per item in the DataLoader
    workers, randomly cropped (zero-padded when smaller) to ``crop`` and normalised, as the training sets do; the
    label per ``kind``: ``cls`` multi-hot (20), ``irn`` a uint8 crop/4 map, ``seg`` an int64 crop map (0..20, 255)."""

    def __init__(self, count: int, size: tuple[int, int], crop: int, kind: str) -> None:
        from PIL import Image

        self.crop, self.kind, self.jpegs = crop, kind, []
        rng = np.random.default_rng(0)
        for _ in range(count):
            small = rng.integers(0, 256, (size[0] // 8 + 1, size[1] // 8 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            self.jpegs.append(buf.getvalue())

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, key):
        from PIL import Image

        index, seed = key
        rng = np.random.default_rng(seed)
        image = np.asarray(Image.open(io.BytesIO(self.jpegs[index])).convert("RGB"), dtype=np.float32) / 255.0
        h, w = image.shape[:2]
        y, x = int(rng.integers(0, max(1, h - self.crop + 1))), int(rng.integers(0, max(1, w - self.crop + 1)))
        out = np.zeros((self.crop, self.crop, 3), np.float32)
        patch = image[y : y + self.crop, x : x + self.crop]
        out[: patch.shape[0], : patch.shape[1]] = (patch - 0.45) / 0.225
        item = {"image": torch.from_numpy(out.transpose(2, 0, 1).copy())}
        if self.kind == "cls":
            labels = torch.from_numpy((rng.random(20) < 0.15).astype(np.float32))
            labels[int(rng.integers(0, 20))] = 1.0
            item["labels"] = labels
        else:
            side = self.crop // 4 if self.kind == "irn" else self.crop
            cells = rng.integers(0, 21, (side // 8 + 1, side // 8 + 1))
            label = np.kron(cells, np.ones((8, 8), np.int64))[:side, :side]
            label[rng.random((side, side)) < 0.05] = 255
            item["label"] = torch.from_numpy(label.astype(np.uint8 if self.kind == "irn" else np.int64))
        return item


class _Clocked:
    """Records the time each step's loss starts (one micro-batch per step here) around an Objective."""

    def __init__(self, objective) -> None:
        from wsss.engine.train import Objective

        outer = self
        self.times: list[float] = []

        class Clocked(Objective):
            def counts(self, model, batch):
                return objective.counts(model, batch)

            def loss(self, model, batch, micro):
                outer.times.append(time.perf_counter())
                return objective.loss(model, batch, micro)

            def end_step(self, model, step):
                objective.end_step(model, step)

        self.objective = Clocked()


def _train_speed(stage: str, device: torch.device, tiny: bool) -> list[Row]:
    """Images/s of ``fit`` steps 2.. (after a warm-up step) in float32 and under bfloat16 autocast."""
    from wsss.engine.train import build_optimizer, fit, seed_everything
    from wsss.ops.path_index import PathIndex
    from wsss.pipeline.classify import ClassifierObjective, build_classifier
    from wsss.pipeline.pseudo_labels import IRNObjective, build_irn
    from wsss.pipeline.pseudo_labels import optimizer_groups as irn_groups
    from wsss.pipeline.segment import SegObjective, build_segmenter

    cfg = recipe()
    section = {"train_cls": "cls", "train_irn": "irn", "train_seg": "seg"}[stage]
    params = dict(cfg[section])
    steps = 3 if tiny else 4
    rows = []
    for amp in (False, True):
        seed_everything(0)  # deterministic cuDNN, as the stages
        if stage == "train_cls":
            depth, crop, batch = (10, 64, 2) if tiny else (101, params["crop"], params["batch_size"])
            model = build_classifier(dict(params, backbone=depth), 20, cfg["method"], pretrained=False)
            objective, groups = ClassifierObjective(device, 0), None
        elif stage == "train_irn":
            depth, crop, batch = (10, 64, 2) if tiny else (50, params["crop"], params["batch_size"])
            radius = 5 if tiny else params["radius"]
            model = build_irn(dict(params, backbone=depth), depth, pretrained=False)
            objective = IRNObjective(PathIndex(radius, crop // 4, crop // 4), device)
            groups = irn_groups(model, params["lr_mult_disp"])
        else:
            depth, crop, batch = (10, 41, 2) if tiny else (101, params["crop"], params["batch_size"])
            model = build_segmenter(dict(params, backbone=depth), 21, pretrained=False)
            objective, groups = SegObjective(device, params["loss_reduction"]), None
        groups = groups or [{"params": model.parameters()}]
        optimizer = build_optimizer(groups, "sgd", 1e-4, 1e-4, 0.9)
        data = JpegCrops(batch * steps, (48, 64) if tiny else (375, 500), crop, section)
        clock = _Clocked(objective)
        workers = max(1, int(params.get("workers", 1))) if tiny else max(2, int(params.get("workers", 1)))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            try:
                fit(
                    model,
                    data,
                    clock.objective,
                    optimizer,
                    batch_size=batch,
                    max_steps=steps,
                    seed=0,
                    checkpoint=out / "ckpt.pt",
                    checkpoint_every=10**6,
                    final_weights=out / "model.pt",
                    log_csv=out / "log.csv",
                    device=device,
                    fingerprint="f",
                    num_workers=workers,
                    amp=amp,
                )
            except torch.cuda.OutOfMemoryError:
                rows.append((stage, f"{'bf16' if amp else 'fp32'}, batch {batch}", "–", "out of memory"))
                continue
        times = clock.times
        speed = batch * (len(times) - 2) / (times[-1] - times[1])
        memory = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB, " if device.type == "cuda" else ""
        rows.append(
            (
                stage,
                f"{'bfloat16' if amp else 'float32'}, batch {batch}, crop {crop}",
                f"{speed:.1f} img/s",
                f"{memory}{workers} JPEG workers, deterministic cuDNN",
            )
        )
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def part_train_cls(device: torch.device, tiny: bool) -> list[Row]:
    return _train_speed("train_cls", device, tiny)


def part_train_irn(device: torch.device, tiny: bool) -> list[Row]:
    return _train_speed("train_irn", device, tiny)


def part_train_seg(device: torch.device, tiny: bool) -> list[Row]:
    return _train_speed("train_seg", device, tiny)


def part_infer_cam(device: torch.device, tiny: bool) -> list[Row]:
    """CAM inference images/s at VOC size (375×500) with the recipe's scales, flips and batching."""
    from wsss.ops.cam import multiscale_cams
    from wsss.pipeline.classify import build_classifier, cam_and_scores

    cfg = recipe()
    params = dict(cfg["cls"], backbone=10 if tiny else 101)
    model = build_classifier(params, 20, cfg["method"], pretrained=False).to(device).eval()
    size = (48, 64) if tiny else (375, 500)
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, *size, generator=g).to(device) for _ in range(2 if tiny else 8)]
    keys = [[i % 20, (i + 7) % 20] for i in range(len(images))]
    scales = cfg["cam"]["scales"]

    def run() -> None:
        with torch.inference_mode():
            multiscale_cams(
                lambda x: cam_and_scores(model, x),
                images,
                keys,
                scales,
                cfg["cam"]["fusion"],
                max_batch=8,
                with_high_res=False,
                with_scores=True,
                max_pixels=cfg["cam"]["batch_pixels"],
            )

    run()
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    seconds = time.perf_counter() - start
    return [
        (
            "infer_cam",
            f"{size[0]}×{size[1]}, scales {scales} + flip",
            f"{len(images) / seconds:.1f} img/s",
            f"ResNet-{params['backbone']}",
        )
    ]


# ---------------------------------------------------------------------------------------------------- 3. DAG


def part_dag(device: torch.device, tiny: bool) -> list[Row]:
    """The synthetic DAG at the tests' tiny dataset sizes on ``device``; ``--cpu``: the dataset preparation only."""
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["device"] = device.type
    config["datasets"]["synth"].update(TINY_SYNTH)
    with tempfile.TemporaryDirectory() as tmp:
        configfile = Path(tmp) / "config.yaml"
        cmd = [sys.executable, str(REPO / "bench/bench_dag.py"), "--configfile", str(configfile)]
        if tiny:
            cmd += ["resources/synth/labels.tsv"]
        configfile.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return [("synthetic DAG", f"device: {device.type}", "FAILED", (proc.stderr.strip().splitlines() or [""])[-1])]
    lines = proc.stdout.splitlines()
    summary = next((line for line in lines if line.startswith("jobs:")), "")
    path = next((line.split(":", 2)[1].strip() for line in lines if line.startswith("critical path:")), "")
    return [
        (
            "synthetic DAG",
            f"device: {device.type}, tiny dataset" + (" (dataset only)" if tiny else ""),
            summary.split("DAG wall: ")[-1],
            f"critical path {path}",
        )
    ]


PART_FUNCTIONS: dict[str, Callable[[torch.device, bool], list[Row]]] = {
    name: globals()[f"part_{name}"] for name in LIMITS
}


# ---------------------------------------------------------------------------------------------------- driver


def run_part(name: str, device: torch.device, tiny: bool, fault: str | None) -> list[Row]:
    """One part in this process (the child side); ``fault`` plants a failure for the tests: raise or hang."""
    if fault == "raise":
        raise RuntimeError(f"planted failure in {name}")
    if fault == "hang":
        time.sleep(10**6)
    return PART_FUNCTIONS[name](device, tiny)


def format_row(part: str, row: Row | tuple[str, ...], seconds: float | str) -> str:
    sec = seconds if isinstance(seconds, str) else f"{seconds:.1f}"
    return "| " + " | ".join([part, *row, sec]) + " |"


def spawn_part(name: str, args: argparse.Namespace, limit: float) -> tuple[list[Row], float]:
    """Run part ``name`` in a subprocess within ``limit`` seconds; its rows, or a FAILED / TIMEOUT row."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-result", str(result)]
        cmd += ["--cpu"] if args.cpu else []
        cmd += [f"--fault={f}" for f in args.fault if f.split(":")[0] == name]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.cpu else None  # see the module docstring
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )  # its own process group: pytest, snakemake die with it
        try:
            _, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            try:  # noqa: SIM105
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return [("TIMEOUT", f"over {limit:.0f} s", "killed", "the next part goes on")], time.perf_counter() - start
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not result.exists():
            tail = (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return [("FAILED", f"exit {proc.returncode}", "FAILED", tail[:200])], seconds
        return [tuple(r) for r in json.loads(result.read_text())], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=list(LIMITS), help="run these parts (in the standard order)")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(LIMITS), help="parts to leave out")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="rows appended here as they come")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="PART=S",
        help="a part's limit in seconds (as given, also with --cpu)",
    )
    parser.add_argument("--fault", action="append", default=[], metavar="PART:raise|hang", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: gpu_check: no CUDA device visible (use --cpu for the smoke run)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    if args.part:  # child side
        fault = next((f.split(":", 1)[1] for f in args.fault if f.split(":")[0] == args.part), None)
        rows = run_part(args.part, device, args.cpu, fault)
        args.part_result.write_text(json.dumps([list(r) for r in rows]))
        return 0
    # --cpu: the same parts at tiny sizes, where imports and CPU convolutions dominate: 4× the limits
    limits = {part: limit * (CPU_LIMIT_FACTOR if args.cpu else 1) for part, limit in LIMITS.items()}
    budget = args.budget * (CPU_LIMIT_FACTOR if args.cpu else 1)
    for item in args.limit:
        part, _, value = item.partition("=")
        limits[part] = float(value)
    parts = [p for p in LIMITS if (args.only is None or p in args.only) and p not in args.skip]
    name = "CPU (--cpu smoke run, tiny sizes)" if args.cpu else torch.cuda.get_device_name(device)
    title = f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(title, "\n| " + " | ".join(HEAD) + " |\n|" + "|".join("---" for _ in HEAD) + "|", flush=True)
    record = {"device": name, "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": []}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    start = time.perf_counter()
    failed = False
    for part in parts:
        left = budget - (time.perf_counter() - start)
        if left < 5:
            rows, seconds = [(part, "SKIPPED", "budget spent", f"{budget:.0f} s")], 0.0
        else:
            rows, seconds = spawn_part(part, args, min(limits[part], left))
        for row in rows:
            failed |= "FAILED" in row or "TIMEOUT" in row
            print(format_row(part, row, seconds), flush=True)
            record["rows"].append({"part": part, **dict(zip(HEAD[1:5], row)), "seconds": round(seconds, 1)})
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
