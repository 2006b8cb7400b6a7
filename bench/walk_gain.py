#!/usr/bin/env python
"""Does IRNet's random walk improve a run's CAMs, and which part limits it: the CAMs, the IRNet, or the walk?

For built runs of one working directory (e.g. the comparison's ``synth-vwl_l_s0`` and ``synth-recam_s0``), on the
val images: the CAMs of each run walked on the boundary maps of each run's IRNet (a swap: CAMs of A on the
boundaries of B), with the walk's scores divided by their global maximum (the pipeline's ``make_pseudo``) or by each
class's own maximum, and the CAMs themselves without a walk (the stride-4 CAM upsampled as the walk's output is).
Each cell is the best mIoU over the background thresholds 0.05..0.80 (an oracle: it reads the val masks, so it is
reported, never used) and the threshold that gives it. The walk's settings are the runs' own (``irn`` section).

    python bench/walk_gain.py --workdir /tmp/cmp --runs synth-vwl_l_s0,synth-recam_s0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss.artifacts.cam import index_cam_dirs, load_cam  # noqa: E402
from wsss.data.dataset import VOCLayoutDataset  # noqa: E402
from wsss.data.transforms import normalize, to_chw  # noqa: E402
from wsss.engine.metrics import ConfusionMatrix  # noqa: E402
from wsss.engine.train import load_state_dict_file  # noqa: E402
from wsss.ops.random_walk import random_walk  # noqa: E402
from wsss.pipeline.pseudo_labels import boundary_map, build_irn, labels_from_walk  # noqa: E402
from wsss.runtime.config import load_schema, run_config, validate_config  # noqa: E402

THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 17)]


def best_miou(data: VOCLayoutDataset, ids: list[str], scores: dict[str, tuple[torch.Tensor, np.ndarray]]) -> tuple:
    """The best val mIoU (%) over THRESHOLDS of per-image class scores (C×H×W, keys) and its threshold."""
    cms = [ConfusionMatrix(data.num_classes, pred_ignore_as_background=True) for _ in THRESHOLDS]
    for image_id in ids:
        up, keys = scores[image_id]
        for cm, label in zip(cms, labels_from_walk(up, keys, tuple(up.shape[1:]), THRESHOLDS)):
            cm.update(label, data.mask(image_id))
    miou = [100 * cm.scores()["miou_present"] for cm in cms]
    k = int(np.nanargmax(miou))
    return miou[k], THRESHOLDS[k]


def scaled(maps: torch.Tensor, size: tuple[int, int], per_class: bool) -> torch.Tensor:
    up = F.interpolate(maps[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, : size[0], : size[1]]
    peak = up.flatten(1).max(1).values[:, None, None] if per_class else up.max()
    return up / torch.clamp(peak, min=1e-5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a working directory with the runs built")
    parser.add_argument("--runs", required=True, help="comma-separated run names (results/<run>/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [r for r in args.runs.split(",") if r]
    config = yaml.safe_load((args.workdir / "config.yaml").read_text())
    full = validate_config(config, load_schema(REPO / "schemas" / "config.schema.yaml"))
    params = {run: run_config(full, run) for run in runs}
    data = VOCLayoutDataset(args.workdir / "resources" / params[runs[0]]["dataset"])
    ids = data.ids("val")
    cams, bounds = {}, {}
    with torch.inference_mode():
        for run in runs:
            irn, cls = params[run]["irn"], params[run]["cls"]
            model = build_irn(irn, cls["backbone"], pretrained=False)
            model.load_state_dict(load_state_dict_file(args.workdir / "results" / run / "irn/model.pt"))
            model.eval()
            shards = sorted((args.workdir / "results" / run / "cam/val").glob("shard_*"))
            cams[run] = {i: load_cam(p) for i, p in index_cam_dirs(shards, ids).items()}
            bounds[run] = {
                i: boundary_map(model, torch.from_numpy(to_chw(normalize(data.image(i)))), irn["boundary_canvas"])
                for i in ids
            }
        print("| CAMs of | walked on IRNet of | walk scores / global max | / each class's max |")
        print("|---|---|---|---|")
        for cam_run in runs:
            recs = cams[cam_run]
            for irn_run in [*runs, None]:
                cells = []
                for per_class in (False, True):
                    scores = {}
                    for i, rec in recs.items():
                        cam = torch.as_tensor(np.asarray(rec.cam, np.float32))
                        if irn_run is not None:
                            irn = params[irn_run]["irn"]
                            cam = random_walk(
                                cam, bounds[irn_run][i].float(), irn["rw_radius"], irn["beta"], 2 ** irn["exp_times"]
                            )
                        scores[i] = (scaled(cam, tuple(rec.size), per_class), rec.keys)
                    miou, at = best_miou(data, ids, scores)
                    cells.append(f"{miou:.2f} (bg {at:.2f})")
                print(f"| {cam_run} | {irn_run or 'no walk'} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
