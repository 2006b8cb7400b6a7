#!/usr/bin/env python
"""Memory and time per image of the per-image stages at VOC scale on the CPU, to size jobs (``mem_mb``,
``runtime`` of the rules, SLURM requests).

A few VOC-sized synthetic images (500×375, 21 labels: background + the 20 VOC classes, 1–3 objects each) in the
dataset layout, and the VOC recipe's networks (``config.yaml`` run ``voc``: VWL ResNet-101 classifier, IRNet
ResNet-50, DeepLabV2-R101) with random weights saved as the stages' model files. Then each stage script runs as
the rule runs it (one shard, ``OMP_NUM_THREADS`` = the rule's threads, 1 CRF worker), in a process of its own:

    infer_cam (scales 1.0/0.5/1.5/2.0 × flip) → cam_to_ir_label → make_pseudo → infer_seg → crf

For each: peak RSS of the process (``wait4``; this parent never imports torch nor holds a model, since a child's
peak RSS starts from its parent's at fork), the stage's own time per image (its log's ``done in``, divided
by the images; wall, so a busy machine inflates it), the process's CPU seconds per image (start-up included;
robust to other load) and its start-up (process wall − ``done in``). Random weights make random CAMs and boundaries,
which cost what trained ones cost (the work depends on the sizes, not the values); only the CRF, whose input a
random DeepLab would make all-NaN, refines logits made from the masks, over all 21 labels (``label_eps: 0``, the
worst case).

    python bench/bench_voc_scale.py               # 3 images
    python bench/bench_voc_scale.py --images 6 --keep /tmp/vocscale
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.data.dataset import format_labels_tsv  # noqa: E402
from wsss.data.voc import VOC_CLASSES as VOC_FOREGROUND  # noqa: E402
from wsss.runtime.config import load_schema, run_config, validate_config  # noqa: E402
from wsss.runtime.io import write_jpeg, write_label_png, write_text  # noqa: E402

VOC_CLASSES = ["background", *VOC_FOREGROUND]  # the one list: wsss.data.voc
# the rules' current requests (rules/*.smk), printed next to the measurements
RULE_REQUESTS = {
    "infer_cam": (6000, 240),
    "cam_to_ir_label": (4000, 240),
    "make_pseudo": (6000, 480),
    "infer_seg": (8000, 240),
    "crf": (4000, 240),
}
_DONE = re.compile(r"\bdone in ([0-9.]+) s\s*$", re.M)


def voc_recipe() -> dict:
    config = validate_config(
        yaml.safe_load((REPO / "config.yaml").read_text()), load_schema(REPO / "schemas/config.schema.yaml")
    )
    return run_config(config, "voc")


def write_dataset(root: Path, count: int, height: int, width: int, seed: int) -> list[str]:
    """A VOC-layout dataset of ``count`` synthetic images with 1–3 coloured ellipses of VOC classes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    labels, ids = {}, []
    for n in range(count):
        image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        classes = sorted(int(c) for c in rng.choice(np.arange(1, 21), size=int(rng.integers(1, 4)), replace=False))
        for c in classes:
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
            inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
            image[inside] = rng.integers(100, 256, 3)
            mask[inside] = c
        image_id = f"voc_{n:04d}"
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", image)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        labels[image_id] = [VOC_CLASSES[c] for c in sorted(set(np.unique(mask).tolist()) - {0})]
        ids.append(image_id)
    write_text(root / "ImageSets" / "Segmentation" / "val.txt", "\n".join(ids) + "\n")
    write_text(root / "classes.txt", "\n".join(VOC_CLASSES) + "\n")
    write_text(root / "labels.tsv", format_labels_tsv(labels))
    write_text(root / "dataset.yaml", yaml.safe_dump({"name": "vocscale"}, sort_keys=False))
    return ids


def write_models(folder: Path, cfg: dict) -> dict[str, Path]:
    """Random-weight state dicts of the recipe's classifier, IRNet and DeepLab, as the stages load them (run in a
    process of its own: see main)."""
    import torch

    from wsss.pipeline.classify import build_classifier
    from wsss.pipeline.pseudo_labels import build_irn
    from wsss.pipeline.segment import build_segmenter

    torch.manual_seed(0)
    nets = {
        "cls": build_classifier(dict(cfg["cls"], pretrained="none"), 20, cfg["method"], pretrained=False),
        "irn": build_irn(dict(cfg["irn"], pretrained="none"), cfg["cls"]["backbone"], pretrained=False),
        "seg": build_segmenter(dict(cfg["seg"], pretrained="none"), 21, pretrained=False),
    }
    paths = {}
    for name, net in nets.items():
        paths[name] = folder / f"{name}.pt"
        torch.save(net.state_dict(), paths[name])
    return paths


def write_logits(data: Path, out: Path, seed: int = 0) -> None:
    """Trained-looking stride-8 DeepLab logits from the masks (each class high inside its blurred object, every
    class low with noise elsewhere) for the CRF: a random-weight DeepLab's logits overflow float16."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from wsss.artifacts.logits import save_logits

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((data / "SegmentationClass").glob("*.png")):
        mask = np.asarray(Image.open(path))
        h8, w8 = (mask.shape[0] - 1) // 8 + 1, (mask.shape[1] - 1) // 8 + 1
        onehot = (mask[::8, ::8][None] == np.arange(21)[:, None, None]).astype(np.float32)
        logits = 8.0 * np.stack([gaussian_filter(c, 1.5) for c in onehot]) + rng.normal(-2, 1.0, (21, h8, w8))
        save_logits(out / f"{path.stem}.npz", logits.astype(np.float32), mask.shape)


def run_stage(name: str, args: list[str], threads: int, log: Path) -> dict[str, float]:
    """Run stages/<name>.py like its rule; wall seconds, peak RSS (MB) and the stage's own seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "stages" / f"{name}.py"), *args], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        print(text[-3000:], file=sys.stderr)
        raise SystemExit(f"error: {log}: stage {name} failed (exit {proc.returncode})")
    done = _DONE.findall(text)
    return {
        "wall": wall,
        "rss_mb": usage.ru_maxrss / 1024,
        "useful": float(done[-1]) if done else wall,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--stages", nargs="+", help="run only these (their inputs from an earlier --keep run)")
    parser.add_argument("--write-models", type=Path, help=argparse.SUPPRESS)  # internal: the model-writing child
    args = parser.parse_args()
    cfg = voc_recipe()
    if args.write_models:
        write_models(args.write_models, cfg)
        write_logits(args.write_models / "data", args.write_models / "crf_logits")
        return
    tmp = Path(tempfile.mkdtemp(prefix="wsss-vocscale-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        data = tmp / "data"
        if not args.stages or not (tmp / "crf_logits").is_dir():
            if not args.stages:
                write_dataset(data, args.images, *args.size, args.seed)
            subprocess.run([sys.executable, __file__, "--write-models", str(tmp)], check=True)
        models = {name: tmp / f"{name}.pt" for name in ("cls", "irn", "seg")}
        common = ["--dataset", str(data), "--split", "val", "--shard", "0", "--shards", "1"]
        from wsss.runtime.stage_config import STAGES  # each stage's --params: the keys of its typed view

        def params(stage: str, source: dict) -> str:
            return json.dumps(STAGES[stage].pick(source))

        steps = [
            (
                "infer_cam",
                1,
                [
                    *common,
                    "--params",
                    params("infer_cam", cfg),
                    "--method",
                    cfg["method"],
                    "--model",
                    str(models["cls"]),
                    "--device",
                    "cpu",
                    "--out",
                    str(tmp / "cam"),
                ],
            ),
            (
                "cam_to_ir_label",
                1,
                [
                    *common,
                    "--params",
                    params("cam_to_ir_label", cfg),
                    "--cams",
                    str(tmp / "cam"),
                    "--threads",
                    "1",
                    "--out",
                    str(tmp / "ir_label"),
                ],
            ),
            (
                "make_pseudo",
                1,
                [
                    *common,
                    "--params",
                    params("make_pseudo", cfg),
                    "--cams",
                    str(tmp / "cam"),
                    "--model",
                    str(models["irn"]),
                    "--device",
                    "cpu",
                    "--out",
                    str(tmp / "pseudo"),
                ],
            ),
            (
                "infer_seg",
                1,
                [
                    *common,
                    "--params",
                    params("infer_seg", cfg["seg"]),
                    "--model",
                    str(models["seg"]),
                    "--device",
                    "cpu",
                    "--out",
                    str(tmp / "seg"),
                ],
            ),
            # all 21 labels (label_eps 0): the worst case; random-weight logits would leave one or two labels
            (
                "crf",
                1,
                [
                    *common,
                    "--params",
                    json.dumps({"crf": dict(cfg["seg"]["crf"], label_eps=0.0)}),
                    "--logits",
                    str(tmp / "crf_logits"),
                    "--workers",
                    "1",
                    "--out",
                    str(tmp / "seg_crf"),
                ],
            ),
        ]
        print(
            f"{args.images} images of {args.size[0]}×{args.size[1]}, 21 labels, VOC recipe networks "
            f"(cls ResNet-{cfg['cls']['backbone']}, IRNet ResNet-{cfg['irn']['backbone']}, "
            f"DeepLabV2-R{cfg['seg']['backbone']}), CPU, {os.cpu_count()} cores"
        )
        print(
            "| stage | threads | peak RSS (MB) | s / image | CPU s / image | start-up (s) | rule mem_mb / runtime (min) |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, threads, stage_args in steps:
            if args.stages and name not in args.stages:
                continue
            m = run_stage(name, stage_args, threads, tmp / f"{name}.log")
            mem, runtime = RULE_REQUESTS[name]
            print(
                f"| {name} | {threads} | {m['rss_mb']:.0f} | {m['useful'] / args.images:.1f} | "
                f"{m['cpu'] / args.images:.1f} | {m['wall'] - m['useful']:.1f} | {mem} / {runtime} |",
                flush=True,
            )
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
