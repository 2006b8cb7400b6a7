"""Own data in, model out, end to end: the README's folder snippet and a COCO-format root (train/val subsets, no
train_aug anywhere) run through the real DAG on tiny images made by the synthetic generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, deeplab_miou_from_pngs, snakemake, write_config
from PIL import Image
from pycocotools import mask as mask_utils

from wsss.data.folder import in_val
from wsss.data.synth import class_names, render_sample
from wsss.runtime.io import write_label_png

NUM_CLASSES = 3
NAMES = class_names(NUM_CLASSES)[1:]
SIZES = [(64, 64), (48, 64), (64, 56), (56, 72)]  # (H, W): several sizes, non-square


def _sample(index: int, split: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A synthetic image cut to one of SIZES (crop, then nearest resize for the mask), with its classes."""
    rgb, mask, _ = render_sample([7, split, index], 72, NUM_CLASSES, 2)
    h, w = SIZES[index % len(SIZES)]
    rgb = np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    mask = np.array(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    classes = sorted(int(c) for c in np.unique(mask) if 0 < c < 255)
    return rgb, mask, classes


def make_folder_dataset(root: Path, count: int = 36) -> list[str]:
    """images/ (JPEG and PNG mixed), labels.csv (file names and stems), masks for every val image and a few train
    images; returns the val stems."""
    rows, val = ["image,labels"], []
    for i in range(count):
        rgb, mask, classes = _sample(i)
        if not classes:
            continue
        stem = f"shape_{i:03d}"
        name = f"{stem}.png" if i % 3 == 0 else f"{stem}.jpg"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "images" / name, quality=95)
        rows.append(f"{name if i % 2 else stem},{';'.join(NAMES[c - 1] for c in classes)}")
        if in_val(stem, 0.1):
            val.append(stem)
        if in_val(stem, 0.1) or i < 4:
            write_label_png(root / "masks" / f"{stem}.png", mask)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert len(val) >= 2, "the hash split must give val images"
    return val


def readme_snippet() -> dict:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- own-data-snippet -->\s*```yaml\n(.*?)```\s*<!-- /own-data-snippet -->", text, re.S)
    assert block, "README lost its own-data snippet"
    return yaml.safe_load(block.group(1))


def tiny_overrides() -> dict:
    """The fewest steps that run every stage's real code on these images: these tests check the plumbing of own
    data (sizes, formats, splits, outputs), not learning (the session's tiny run and the golden values do that)."""
    return {
        "cls": {
            "backbone": 10,
            "pretrained": "none",
            "norm": "batch",
            "freeze_stem": False,
            "detach_stage2": False,
            "k_words": 8,
            "batch_size": 4,
            "epochs": 1,
            "optimizer": "adamw",
            "lr": 1e-3,
            "resize_long": [64, 80],
            "crop": 64,
            "checkpoint_every": 100,
            "workers": 0,
        },
        "cam": {"scales": [1.0, 0.5], "shards": 1},
        "irn": {
            "pretrained": "from_cls",
            "crop": 64,
            "radius": 5,
            "batch_size": 4,
            "epochs": 1,
            "checkpoint_every": 100,
            "workers": 0,
            "crf_workers": 1,
            "exp_times": 3,
        },
        "seg": {
            "backbone": 10,
            "pretrained": "from_cls",
            "norm": "batch",
            "crop": 64,
            "batch_size": 4,
            "iterations": 3,
            "scales": [0.75, 1.0],
            "checkpoint_every": 100,
            "workers": 0,
            "shards": 1,
            "crf_workers": 1,
        },
    }


@pytest.mark.slow
def test_readme_snippet_trains_predicts_and_exports(tmp_path: Path) -> None:
    data, photos, work = tmp_path / "shapes", tmp_path / "new photos", tmp_path / "work"
    val = make_folder_dataset(data)
    photos.mkdir()
    for k, (h, w) in enumerate([(50, 70), (64, 40), (33, 33)]):
        rgb, _, _ = _sample(100 + k, split=1)
        Image.fromarray(rgb).resize((w, h)).save(photos / (f"p{k}.png" if k % 2 else f"p{k}.JPG"))

    snippet = readme_snippet()
    [(name, entry)] = snippet["datasets"].items()
    [(run, run_entry)] = snippet["runs"].items()
    [(pred_name, _)] = snippet["predict"].items()
    entry["root"] = str(data)
    snippet["predict"][pred_name] = str(photos)
    for section, values in tiny_overrides().items():  # the snippet's keys stay unless tiny sizes replace them
        run_entry[section] = {**run_entry.get(section, {}), **values}
    # the checkout's config.yaml role; one step of training is not judged by the gate (tests/test_heldout.py)
    write_config(work, {"device": "cpu", "gates": {"enabled": False}, "runs": {"synth": {"dataset": "synth"}}})
    (work / "mine.yaml").write_text(yaml.safe_dump(snippet))

    targets = [
        f"results/{run}/deeplab_val_miou.txt",
        f"results/{run}/predict/{pred_name}",
        f"results/{run}/deeplab/model.ts",
    ]
    proc = snakemake(work, *targets, "--configfile", "mine.yaml", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ds_root = work / "resources" / name
    assert (ds_root / "ImageSets/Segmentation/val.txt").read_text().split() == sorted(val)
    # evaluated on the val images (all have masks): the reported mIoU is the one of the label PNGs, recomputed here
    # independently (a plumbing run of 1 epoch / 3 iterations: no quality floor, see tiny_overrides)
    reported, recomputed, _ = deeplab_miou_from_pngs(work, run, name)
    assert reported == pytest.approx(recomputed, abs=0.006)
    out = work / "results" / run / "predict" / pred_name
    for src in sorted(photos.iterdir()):
        with Image.open(src) as img:
            size = img.size
        with Image.open(out / f"{src.stem}.png") as pred:
            assert pred.size == size and pred.mode == "P"
            assert np.array(pred).max() < NUM_CLASSES + 1
        assert (out / f"{src.stem}_overlay.jpg").is_file()
    assert (work / "results" / run / "deeplab" / "model.ts").is_file()
    if run_entry["irn"].get("conf_fg") == "auto":  # the snippet's thresholds came from the calibrations
        calib = json.loads((work / "results" / run / "calibration.json").read_text())
        log = (work / "logs" / run / "cam_to_ir_label" / "0.log").read_text()
        assert f"irn.conf_fg {calib['conf_fg']:.2f} from" in log
    if run_entry["irn"].get("bg_threshold") == "auto":
        calib = json.loads((work / "results" / run / "calibration_pseudo.json").read_text())
        log = (work / "logs" / run / "make_pseudo" / "train_0.log").read_text()
        assert f"irn.bg_threshold {calib['bg_threshold']:.2f} from" in log


@pytest.mark.slow
def test_folder_without_masks_trains_and_evaluation_says_why(tmp_path: Path) -> None:
    data, work = tmp_path / "d", tmp_path / "work"
    make_folder_dataset(data, count=12)
    for mask in (data / "masks").iterdir():
        mask.unlink()
    write_config(
        work,
        {
            "device": "cpu",
            "gates": {"enabled": False},
            "datasets": {"mine": {"kind": "folder", "root": str(data), "val_fraction": 0.3}},
            "runs": {"m": {"dataset": "mine", **tiny_overrides()}},
        },
    )
    proc = snakemake(work, "resources/mine/labels.tsv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ev = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "eval_pseudo.py"),
            "--dataset",
            "resources/mine",
            "--split",
            "val",
            "--labels",
            "nowhere",
            "--miou",
            "m.txt",
            "--metrics",
            "m.json",
        ],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert ev.returncode == 2
    assert [line for line in ev.stderr.splitlines() if line.startswith("error:")] == [
        "error: resources/mine/ImageSets/Segmentation/val.txt: split 'val' has no masks "
        f"({len((work / 'resources/mine/ImageSets/Segmentation/val.txt').read_text().split())} images): nothing to "
        "evaluate; its CAMs, pseudo labels and predictions need none"
    ]
    assert not (work / "m.txt").exists()


def make_coco_root(root: Path) -> None:
    """train/ and val/ image folders with one instances JSON each (RLE masks from the generator), 2017-style."""
    cats = [{"id": 10 + k, "name": n.replace("_", " "), "supercategory": "shape"} for k, n in enumerate(NAMES)]
    for split, count, offset in (("train", 24, 0), ("val", 8, 1)):
        images, anns = [], []
        (root / split).mkdir(parents=True)
        for i in range(count):
            rgb, mask, classes = _sample(i, split=offset)
            h, w = mask.shape
            name = f"{split}_{i:04d}.jpg"
            Image.fromarray(rgb).save(root / split / name, quality=95)
            images.append({"id": 1000 * offset + i, "file_name": name, "height": h, "width": w})
            for c in classes:
                rle = mask_utils.encode(np.asfortranarray((mask == c).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                anns.append(
                    {
                        "id": len(anns) + 1 + 10000 * offset,
                        "image_id": 1000 * offset + i,
                        "category_id": 9 + c,
                        "segmentation": rle,
                        "iscrowd": 0,
                        "area": float((mask == c).sum()),
                        "bbox": [0, 0, 1, 1],
                    }
                )
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )


@pytest.mark.slow
def test_coco_format_subsets_run_end_to_end(tmp_path: Path) -> None:
    root, work = tmp_path / "coco17", tmp_path / "work"
    make_coco_root(root)
    subsets = {s: {"images": s, "annotations": f"annotations/{s}.json"} for s in ("train", "val")}
    write_config(
        work,
        {
            "device": "cpu",
            "gates": {"enabled": False},
            "datasets": {"c17": {"kind": "coco", "root": str(root), "subsets": subsets}},
            "runs": {"c": {"dataset": "c17", **tiny_overrides()}},
        },
    )
    proc = snakemake(work, "results/c/deeplab_val_miou.txt", "results/c/pseudo_val_miou.txt", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "resources/c17/classes.txt").read_text().split("\n")[:2] == ["background", NAMES[0]]
    assert sorted(p.name for p in (work / "resources/c17/ImageSets/Segmentation").iterdir()) == ["train.txt", "val.txt"]
    reported, recomputed, _ = deeplab_miou_from_pngs(work, "c", "c17")  # independent of wsss.engine.metrics
    assert reported == pytest.approx(recomputed, abs=0.006)
    assert (work / "logs/c/train_cls.log").read_text().count("training images of train") == 1
