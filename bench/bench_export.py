#!/usr/bin/env python
"""Benchmark the deployment formats of the trained DeepLab against the eager model on the same images: images/s
and peak memory (own peak resident set of a fresh process that loads the model and segments the images) of eager PyTorch,
TorchScript (model.ts), ONNX Runtime (model.onnx, a process without torch) and the torch.export program
(model.pt2), as ratios against eager in one run.

    python bench/bench_export.py [--backbone 18] [--size 320 240] [--images 8] [--repeats 2] [--threads 2]

Random weights (speed does not depend on them), the seg defaults' MSC scales 0.5 and 0.75, test scale 1.0, no
flip. Each format runs in its own process (one warm-up pass, then the best of ``repeats`` passes over the images,
one image per call); peak memory is that process's own maximum resident set (VmHWM). Results vary by machine;
compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMATS = ("eager", "torchscript", "onnxruntime", "pt2")


def _params(backbone: int) -> dict:
    return {
        "backbone": backbone,
        "pretrained": "none",
        "norm": "batch",
        "aspp_rates": [6, 12, 18, 24],
        "style": "torchvision",
        "msc_scales": [0.5, 0.75],
        "test_scales": [1.0],
        "test_flip": False,
    }


def worker(fmt: str, folder: Path, repeats: int, threads: int) -> None:
    """Load ``fmt`` from ``folder``, segment ``images.npy`` ``repeats`` + 1 times; print seconds per pass."""
    images = np.load(folder / "images.npy")  # N x 3 x H x W uint8
    if fmt == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {"images": x[None].astype(np.float32)})[0]  # noqa: E731
    else:
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        if fmt == "eager":
            from wsss.outputs.export import ExportedSegmenter
            from wsss.pipeline.segment import TestTimeSegmenter, build_segmenter

            params = _params(json.loads((folder / "bench.json").read_text())["backbone"])
            model = build_segmenter(params, 21, pretrained=False)
            model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
            module = ExportedSegmenter(
                TestTimeSegmenter(model.eval(), params["test_scales"], params["test_flip"]), params["style"]
            ).eval()
        elif fmt == "torchscript":
            module = torch.jit.load(str(folder / "model.ts")).eval()
        else:
            module = torch.export.load(str(folder / "model.pt2")).module()
        run = lambda x: module(torch.from_numpy(x)[None].float()).numpy()  # noqa: E731
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        labels = [run(x)[0].argmax(0) for x in images]
        times.append(time.perf_counter() - start)
    np.save(folder / f"labels_{fmt}.npy", np.stack(labels))
    # VmHWM: this process's own peak resident set since exec (wait4's ru_maxrss also counts the parent's RSS at
    # fork time on Linux, which made every format read the parent's peak)
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": min(times[1:]), "peak_kib": int(hwm.split()[1])}))


def measure(fmt: str, folder: Path, repeats: int, threads: int) -> dict:
    """Run :func:`worker` in a fresh process; its best pass time and maximum resident set."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--worker",
            fmt,
            "--dir",
            str(folder),
            "--repeats",
            str(repeats),
            "--threads",
            str(threads),
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"error: {fmt}: the worker failed")
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": result["seconds"], "peak_mib": result["peak_kib"] / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=int, default=18)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.dir), args.repeats, args.threads)
        return

    import torch

    from wsss.outputs.export import export_model, export_program, write_onnx, write_program
    from wsss.pipeline.segment import build_segmenter

    params = _params(args.backbone)
    torch.manual_seed(0)
    model = build_segmenter(params, 21, pretrained=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        torch.save(model.state_dict(), folder / "model.pt")
        (folder / "bench.json").write_text(json.dumps({"backbone": args.backbone}))
        export_model(model, params, [str(i) for i in range(21)], folder / "model.ts", folder / "model.json")
        program = export_program(model, params)
        write_program(program, folder / "model.pt2")
        write_onnx(program, folder / "model.onnx")
        export_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        width, height = args.size
        np.save(folder / "images.npy", rng.integers(0, 256, (args.images, 3, height, width), dtype=np.uint8))
        results = {fmt: measure(fmt, folder, args.repeats, args.threads) for fmt in FORMATS}
        eager_labels = np.load(folder / "labels_eager.npy")
        for fmt in FORMATS:
            results[fmt]["agree"] = float((np.load(folder / f"labels_{fmt}.npy") == eager_labels).mean())

    print(
        f"ResNet-{args.backbone} DeepLab, MSC 0.5/0.75, {args.images} images {width}x{height}, "
        f"{args.threads} threads, torch {torch.__version__}; exports written in {export_s:.0f} s"
    )
    print("| format | images/s | × eager | peak memory (MiB) | × eager | pixels = eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = results["eager"]
    for fmt in FORMATS:
        r = results[fmt]
        ips = args.images / r["seconds"]
        print(
            f"| {fmt} | {ips:.2f} | {base['seconds'] / r['seconds']:.2f} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / base['peak_mib']:.2f} | {100 * r['agree']:.2f} % |"
        )


if __name__ == "__main__":
    main()
