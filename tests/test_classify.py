"""Classifier unit: CAM records (compact storage vs the full-resolution path), shards, the training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import schema_section

from wsss.artifacts.cam import CamRecord, index_cam_dirs, load_cam, save_cam
from wsss.methods import get_method
from wsss.ops.cam import cam_to_labels, multiscale_cams, pack_cam, upsample_cam
from wsss.pipeline.classify import build_classifier, cam_and_scores, image_scores, training_step
from wsss.pipeline.evaluate import labels_at_thresholds
from wsss.runtime.errors import InputError

PARAMS = schema_section("cls", backbone=18, pretrained="none", norm="batch", k_words=16, gamma=2.0, tau=1.0, rho=1e-3)


def _object_image(h: int, w: int, seed: int) -> torch.Tensor:
    """Channel k holds a noisy elliptical object of class k, so a stride-16 pooling of it acts like a CAM."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((3, h, w), np.float32)
    for k in range(3):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
        image[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return torch.from_numpy(image + rng.normal(0, 0.1, image.shape).astype(np.float32))


def _pooled_cam(batch: torch.Tensor) -> torch.Tensor:
    """A CAM function with the classifier's output stride: ReLU of 16×16 average pooling (4 classes, last empty)."""
    pooled = torch.relu(torch.nn.functional.avg_pool2d(batch, 16, ceil_mode=True))
    return torch.cat([pooled, torch.zeros_like(pooled[:, :1])], dim=1)


@pytest.mark.parametrize("bg", [0.13, 0.3, 0.5])
def test_compact_store_matches_full_resolution_labels(tmp_path: Path, bg: float) -> None:
    agree, total = 0, 0
    for seed, (h, w) in enumerate([(375, 500), (333, 250), (160, 160), (97, 130)]):
        image = _object_image(h, w, seed)
        keys = np.array([0, 1, 2])
        (res,) = multiscale_cams(_pooled_cam, [image], [keys])
        full = cam_to_labels(res.high_res.numpy(), keys, bg)
        path = tmp_path / f"{seed}.npz"
        save_cam(path, CamRecord(keys, pack_cam(res.cam), (h, w), np.zeros(5, np.float32)))
        rec = load_cam(path)
        assert rec.cam.dtype == np.float16 and rec.size == (h, w)
        compact = cam_to_labels(upsample_cam(rec.cam, rec.size), rec.keys, bg)
        agree += int((compact == full).sum())
        total += full.size
        # the stored record is at most 1/10 of the reference's float32 full-resolution high_res
        assert path.stat().st_size * 10 <= res.high_res.numel() * 4 + res.cam.numel() * 4
    assert agree / total >= 0.99


@pytest.mark.parametrize("method", ["vwl_l", "cam"])
def test_image_scores_come_from_the_scale_one_forward(method: str) -> None:
    """infer_cam's image-level scores reuse the multi-scale pass's scale-1.0 forward: equal to image_scores of the
    unflipped image on its own, for every image of a batch; one forward call fewer per image."""
    torch.manual_seed(0)
    model = build_classifier(PARAMS, 4, method, pretrained=False).eval()
    with torch.no_grad():  # trained-looking heads: scores spread over (0, 1) and differ between images
        model.classifier.weight.normal_(0, 0.5)
    images = [_object_image(64, 80, 1), _object_image(64, 80, 2), _object_image(48, 40, 3)]
    keys = [[0, 2], [1], [3]]
    calls: list[int] = []

    def counted(x):
        calls.append(len(x))
        return cam_and_scores(model, x)

    with torch.no_grad():
        results = multiscale_cams(counted, images, keys, (1.0, 0.5), with_scores=True)
        plain = multiscale_cams(model.forward_cam, images, keys, (1.0, 0.5))
        for image, res, ref in zip(images, results, plain, strict=True):
            expected = image_scores(model, image[None])[0]
            assert res.scores is not None and res.scores.shape == (4,)
            torch.testing.assert_close(res.scores, expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(res.cam, ref.cam)
        assert not torch.allclose(results[0].scores, results[1].scores, atol=1e-3)
        assert sum(calls) == 2 * len(images) * 2  # image + flip at two scales, no extra scoring pass
        without_one = multiscale_cams(
            lambda x: cam_and_scores(model, x), images[:1], keys[:1], (0.5,), with_scores=True
        )
        assert without_one[0].scores is None  # no scale 1.0: the caller scores the image itself


def test_labels_at_thresholds_equal_cam_to_labels() -> None:
    rng = np.random.default_rng(0)
    cams = rng.random((3, 6, 7)).astype(np.float32)
    cams[0, 0, 0] = 0.2  # an exact tie with a threshold goes to background in both
    cams[1:, 0, 0] = 0.0
    keys = np.array([4, 0, 9])
    for t, labels in zip([0.2, 0.5, 0.9], labels_at_thresholds(cams, keys, [0.2, 0.5, 0.9])):
        np.testing.assert_array_equal(labels, cam_to_labels(cams, keys, t))


def test_cam_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="x.npz: cannot read CAM file"):
        load_cam(bad)
    with pytest.raises(InputError, match="no CAM for 1 of 2 ids, e.g. 'y'"):
        index_cam_dirs([tmp_path], ["x", "y"])
    assert index_cam_dirs([tmp_path], ["x"]) == {"x": bad}


def test_shards_partition_ids() -> None:
    ids = [f"i{k}" for k in range(11)]
    from argparse import Namespace

    from wsss.runtime.cli import shard_ids

    parts = [shard_ids(ids, Namespace(shard=i, shards=4)) for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(ids) and max(map(len, parts)) - min(map(len, parts)) <= 1  # noqa: RUF017
    with pytest.raises(InputError, match="--shard: 4 outside 0..3"):
        shard_ids(ids, Namespace(shard=4, shards=4))


def test_training_step_vwl_m_updates_bank_reproducibly() -> None:
    batch = {"image": torch.randn(2, 3, 64, 64), "labels": torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])}
    banks = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_classifier(PARAMS, 3, "vwl_m")
        before = model.codebook.clone()
        loss, parts = training_step(model, batch, 0, torch.device("cpu"), seed=5)
        assert set(parts) == {"cls", "hist", "word"} and torch.isfinite(loss)
        assert not torch.equal(before, model.codebook)
        banks.append(model.codebook.clone())
    torch.testing.assert_close(banks[0], banks[1], rtol=0, atol=0)


def test_cam_evaluation_baselines(tiny_voc: Path, tmp_path: Path) -> None:
    from wsss.data.dataset import VOCLayoutDataset
    from wsss.pipeline.evaluate import evaluate_cams

    data = VOCLayoutDataset(tiny_voc)
    for image_id in ["a_1", "b_2", "c_3"]:
        mask = data.mask(image_id)
        keys = np.flatnonzero(data.label_vector(image_id))
        cam = np.stack([(mask == k + 1).astype(np.float32) for k in keys])  # a perfect CAM at full resolution
        save_cam(
            tmp_path / f"{image_id}.npz",
            CamRecord(keys, pack_cam(cam[:, ::4, ::4]), mask.shape, np.zeros(2, np.float32)),
        )
    ids = data.ids("train") + data.ids("val")
    res = evaluate_cams(data, ids, [tmp_path], 0.5, [])
    bg = res.baselines["all_background"].scores()
    fg = res.baselines["all_foreground"].scores()
    assert bg["iou"][0] == pytest.approx(bg["pixel_accuracy"]) and bg["iou"][1] == 0 and bg["iou"][2] == 0
    assert fg["iou"][0] == 0 and fg["miou_present"] < res.main.scores()["miou_present"]
    assert res.main.scores()["miou_present"] > 0.5


def test_image_scores_hand_worked() -> None:
    """sigmoid(W · pool(features)): hybrid pooling (γ·GAP + Σ_levels mean of window maxima) / (γ + 3) for VWL,
    GAP for the plain CAM baseline, on a feature map whose pools are worked out by hand."""
    from types import SimpleNamespace

    feat = torch.zeros(1, 2, 4, 4)
    feat[0, 0, 0, 0] = 8.0  # GAP 0.5; max 8; 2×2 windows: maxima 8, 0, 0, 0 → 2; 1×1 windows → 0.5
    feat[0, 1] = 1.0  # every pool 1
    classifier = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]])[:, :, None, None])
    images = torch.zeros(1, 3, 8, 8)
    cls = {"k_words": 2, "gamma": 2.0, "tau": 1.0, "rho": 1e-3, "detach_stage2": None}
    for method, pooled0 in [("vwl_l", (2 * 0.5 + 8 + 2 + 0.5) / 5), ("cam", 0.5)]:
        model = get_method(method).build(SimpleNamespace(out_channels=(2,)), 2, cls)
        model.features = lambda x: feat
        model.classifier = classifier
        expected = 1 / (1 + np.exp(-np.array([pooled0, -1.0])))
        np.testing.assert_allclose(image_scores(model, images)[0].numpy(), expected, rtol=1e-6)
