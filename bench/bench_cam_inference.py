#!/usr/bin/env python
"""Benchmark CAM inference: batched scales/flips vs a per-scale loop (images/s, one run, same model and images),
infer_cam's image scores from the scale-1.0 forward vs an extra forward per image (CPU seconds), and artifact bytes per image of the compact CAM store vs the reference layout (float32 stride-4 ``cam`` plus a
float32 full-resolution ``high_res``).

    python bench/bench_cam_inference.py [--backbone 18] [--size 320 240] [--images 8] [--classes 2] [--device cpu]

Prints a table and the ratios. Results vary by machine; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsss.artifacts.cam import CamRecord, save_cam
from wsss.models.backbone import build_resnet
from wsss.models.vwl import VWLNet
from wsss.ops.cam import multiscale_cams, pack_cam
from wsss.pipeline.classify import cam_and_scores, image_scores


def time_inference(
    model: VWLNet, images: list[torch.Tensor], keys: list[np.ndarray], batch: bool, repeats: int
) -> tuple[float, list]:
    """Best-of-``repeats`` seconds for all images, and the CAMs of the last repeat."""
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            out = multiscale_cams(
                model.forward_cam, images, keys, batch_scales=batch, max_batch=len(images), with_high_res=False
            )
        if images[0].is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def reference_bytes(cam4: np.ndarray, size: tuple[int, int]) -> int:
    """Bytes of the reference's per-image file: float32 stride-4 cam + float32 high_res, as an .npy dict would
    hold them (array payloads only, a lower bound)."""
    return cam4.astype(np.float32).nbytes + cam4.shape[0] * size[0] * size[1] * 4


def time_scores(model: VWLNet, images: list[torch.Tensor], keys: list[np.ndarray], reuse: bool, repeats: int) -> float:
    """Best-of-``repeats`` process CPU seconds of CAMs plus image scores for all images: scores from the
    multi-scale pass's scale-1.0 forward (``reuse``, what infer_cam does) or from an extra forward per image."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        with torch.inference_mode():
            if reuse:
                multiscale_cams(
                    lambda x: cam_and_scores(model, x),
                    images,
                    keys,
                    max_batch=len(images),
                    with_high_res=False,
                    with_scores=True,
                )
            else:
                multiscale_cams(model.forward_cam, images, keys, max_batch=len(images), with_high_res=False)
                for image in images:
                    image_scores(model, image[None])
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=int, default=18)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, default=2, help="GT classes kept per image")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = VWLNet(build_resnet(args.backbone), 20).to(device).eval()
    w, h = args.size
    images = [torch.randn(3, h, w, device=device) for _ in range(args.images)]
    keys = [np.arange(args.classes) for _ in images]
    time_inference(model, images[:1], keys[:1], True, 1)  # warm-up
    t_loop, loop = time_inference(model, images, keys, False, args.repeats)
    t_batch, batched = time_inference(model, images, keys, True, args.repeats)
    diff = max(float((a.cam - b.cam).abs().max()) for a, b in zip(loop, batched))

    cam4 = batched[0].cam.cpu().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npz"
        save_cam(path, CamRecord(np.arange(args.classes), pack_cam(cam4), (h, w), np.zeros(20, np.float32)))
        ours = path.stat().st_size
    ref = reference_bytes(cam4, (h, w))
    print(f"device {device}, ResNet-{args.backbone}, {args.images} images {w}x{h}, scales (1, .5, 1.5, 2) x flip")
    print(f"{'mode':<18}{'images/s':>10}")
    print(f"{'per-scale loop':<18}{args.images / t_loop:>10.2f}")
    print(f"{'batched':<18}{args.images / t_batch:>10.2f}")
    print(f"speed-up batched / loop: {t_loop / t_batch:.2f}x   (max |diff| {diff:.2e})")
    print(f"bytes per image: ours {ours}, reference >= {ref}; ratio reference/ours {ref / ours:.1f}x")
    t_extra = time_scores(model, images, keys, False, args.repeats)
    t_reuse = time_scores(model, images, keys, True, args.repeats)
    print(
        f"CAMs + image scores, CPU s: extra forward {t_extra:.2f}, reused scale-1.0 forward {t_reuse:.2f}; "
        f"speed-up {t_extra / t_reuse:.2f}x"
    )


if __name__ == "__main__":
    main()
