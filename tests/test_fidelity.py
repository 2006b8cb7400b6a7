"""Fidelity switches: the reference's high_res CAM (cam.high_res: per_scale) and the precision keys (cls.amp,
irn.amp) reaching the training loop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, TINY_CLS

from wsss.artifacts.cam import load_cam
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.transforms import normalize, to_chw
from wsss.ops.cam import upsample_cam
from wsss.pipeline.classify import build_classifier
from wsss.runtime.config import load_schema, run_config, validate_config
from wsss.runtime.io import write_label_png
from wsss.runtime.stage_config import TrainIrn


def _sections(**overrides) -> dict:
    """Every stage section of a synth run with the schema's defaults, ``overrides`` per section merged over them."""
    schema = load_schema(REPO / "schemas" / "config.schema.yaml")
    raw = {"runs": {"r": {"dataset": "synth", **{k: dict(v) for k, v in overrides.items()}}}}
    return run_config(validate_config(raw, schema), "r")


def _infer(tiny_voc: Path, tmp: Path, model: Path, cls: dict, high_res: str) -> Path:
    cam = {
        "scales": [1.0, 2.0],
        "fusion": "max",
        "batch_scales": True,
        "batch_pixels": 16_000_000,
        "high_res": high_res,
    }
    out = tmp / f"cams_{high_res}"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages/infer_cam.py"),
            "--params",
            json.dumps({"cls": cls, "cam": cam}),
            "--dataset",
            str(tiny_voc),
            "--split",
            "train",
            "--shard",
            "0",
            "--shards",
            "1",
            "--method",
            "vwl_l",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_per_scale_high_res_is_the_reference_sum_of_upsampled_scales(tiny_voc: Path, tmp_path: Path) -> None:
    """infer_cam, cam.high_res: per_scale stores high_res = Σ_s bilinear(A_s → (H, W)) (method.md#cam-inference); A_s =
    the max of the CAM and its flipped-back flip at scale s, max-normalised; computed here step by step. The
    default stores none, and every reader then upsamples the stride-4 CAM (the same in both modes)."""
    cls = _sections(cls={**TINY_CLS, "backbone": 18})["cls"]  # ResNet-18: random CAMs that are not all zero
    torch.manual_seed(0)
    model = build_classifier(cls, 2, "vwl_l", pretrained=False).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    ref_dir = _infer(tiny_voc, tmp_path, tmp_path / "model.pt", cls, "per_scale")
    default_dir = _infer(tiny_voc, tmp_path, tmp_path / "model.pt", cls, "upsample")
    data = VOCLayoutDataset(tiny_voc)
    for image_id in data.ids("train"):
        image = torch.from_numpy(to_chw(normalize(data.image(image_id))))
        keys = np.flatnonzero(data.label_vector(image_id) > 0.5)
        h, w = image.shape[-2:]
        total = torch.zeros(len(keys), h, w)
        with torch.no_grad():
            for s in (1.0, 2.0):
                x = (
                    F.interpolate(
                        image[None],
                        size=(round(h * s), round(w * s)),
                        mode="bicubic",
                        align_corners=False,
                        antialias=True,
                    )
                    if s != 1.0
                    else image[None]
                )
                out = model.forward_cam(torch.cat([x, x.flip(-1)]))[:, keys]
                fused = torch.maximum(out[0], out[1].flip(-1))
                total += F.interpolate(fused[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        expected = (total / (total.flatten(1).amax(1)[:, None, None] + 1e-5)).numpy()
        ref, default = load_cam(ref_dir / f"{image_id}.npz"), load_cam(default_dir / f"{image_id}.npz")
        assert ref.high_res is not None and ref.high_res.dtype == np.float16 and default.high_res is None
        np.testing.assert_allclose(ref.full_res(), expected, atol=1e-3)
        np.testing.assert_array_equal(ref.cam, default.cam)
        np.testing.assert_array_equal(default.full_res(), upsample_cam(default.cam, default.size))
        assert np.abs(ref.full_res() - default.full_res()).max() > 1e-3  # the switch changes what is read


def _stage_module(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("amp", [False, True])
def test_training_stages_pass_their_amp_key_to_fit(tiny_voc: Path, tmp_path: Path, monkeypatch, amp: bool) -> None:
    """train_cls and train_irn train under bfloat16 autocast only when cls.amp / irn.amp say so (fit decides the
    CUDA part); train_seg already passes seg.amp."""
    seen = {}
    sections = _sections(
        cls={**TINY_CLS, "amp": amp},
        irn={"backbone": 18, "pretrained": "none", "crop": 32, "radius": 3, "batch_size": 2, "amp": amp},
    )

    class Stop(Exception):
        """Raised by the stand-in ``fit``: the stage's work after training is not this test's business."""

    def fake_fit(section):
        def fit(*args, **kwargs):
            seen[section] = kwargs["amp"]
            raise Stop

        return fit

    cls_stage = _stage_module("train_cls")
    monkeypatch.setattr(cls_stage, "fit", fake_fit("cls"))
    with pytest.raises(Stop):
        cls_stage.main(
            SimpleNamespace(
                dataset=str(tiny_voc),
                split="train",
                method="vwl_l",
                device="cpu",
                weights_cache=None,
                out_dir=str(tmp_path / "cls"),
            ),
            sections["cls"],
        )
    for image_id in ("a_1", "b_2"):
        write_label_png(tmp_path / "ir" / f"{image_id}.png", np.zeros((12, 16), np.uint8))
    irn_stage = _stage_module("train_irn")
    monkeypatch.setattr(irn_stage, "fit", fake_fit("irn"))
    with pytest.raises(Stop):
        irn_stage.main(
            SimpleNamespace(
                dataset=str(tiny_voc),
                split="train",
                labels=[str(tmp_path / "ir")],
                cls_model=None,
                device="cpu",
                weights_cache=None,
                out_dir=str(tmp_path / "irn"),
            ),
            TrainIrn.pick({"irn": sections["irn"], "cls": {"backbone": 18}}),
        )
    assert seen == {"cls": amp, "irn": amp}
