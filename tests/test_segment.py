"""DeepLab library functions and stages: loss, inference, logit storage, CRF, evaluation, summary, training data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_stage_inline, schema_section

from wsss.artifacts.logits import labels_from_logits, load_logits, probs_from_logits, save_logits
from wsss.data import transforms as T
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.seg_data import (
    CAFFE_MEAN_BGR,
    SegmentationTrainSet,
    draw_scale,
    normalize_image,
    training_label_paths,
)
from wsss.engine.metrics import ConfusionMatrix
from wsss.models.deeplab import build_deeplab
from wsss.outputs.summary import SummaryRow, summary_table
from wsss.pipeline.crf import crf_refine, crf_shard
from wsss.pipeline.evaluate import evaluate_segmentation
from wsss.pipeline.segment import (
    build_segmenter,
    check_train_params,
    image_logits,
    label_fit,
    load_segmenter,
    msc_loss,
    predict_logits,
    resize_labels,
)
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_label_png, write_label_png
from wsss.runtime.stage_config import STAGES


def test_msc_loss_known_values() -> None:
    labels = torch.randint(0, 4, (2, 33, 33))
    labels[:, :8] = 255
    zeros = [torch.zeros(2, 4, n, n) for n in (5, 2, 3, 5)]
    names = ["loss_1", "loss_0.5", "loss_0.75", "loss_max"]
    total, parts = msc_loss(zeros, labels, names, "sum")
    assert total.item() == pytest.approx(4 * math.log(4), rel=1e-6)
    assert list(parts) == names and all(v == pytest.approx(math.log(4), rel=1e-6) for v in parts.values())
    mean, _ = msc_loss(zeros, labels, names, "mean")
    assert mean.item() == pytest.approx(math.log(4), rel=1e-6)
    small = resize_labels(labels, (5, 5))
    perfect = [
        F.one_hot(resize_labels(labels, (n, n)).clamp(max=3), 4).permute(0, 3, 1, 2).float() * 50 for n in (5, 2, 3, 5)
    ]
    assert msc_loss(perfect, labels, names)[0].item() < 1e-6
    assert (small == 255).any()
    ignored, _ = msc_loss(zeros, torch.full((2, 33, 33), 255), names)
    assert ignored.item() == 0.0


def test_resize_labels_matches_pil_nearest() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 21, (2, 41, 37)).astype(np.uint8)
    got = resize_labels(torch.from_numpy(labels.astype(np.int64)), (9, 8)).numpy()
    for k in range(2):
        np.testing.assert_array_equal(got[k], T.resize(labels[k], (9, 8), nearest=True))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_deeplab(3, depth=18, weights="none").eval()


def test_predict_logits_default_is_the_msc_output_and_flip_averages(model) -> None:
    image = torch.randn(3, 41, 50)
    with torch.no_grad():
        direct = model(image[None])[0]
        flipped = model(image.flip(-1)[None])[0].flip(-1)
    torch.testing.assert_close(predict_logits(model, image), direct)
    torch.testing.assert_close(predict_logits(model, image, flip=True), (direct + flipped) / 2)
    multi = predict_logits(model, image, scales=(1.0, 0.5))
    assert multi.shape == direct.shape == (3, *model.base.logit_size(41, 50))
    with torch.no_grad():
        half = model(F.interpolate(image[None], size=(20, 25), mode="bilinear", align_corners=False))
    half = F.interpolate(half, size=direct.shape[-2:], mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(multi, (direct + half) / 2)


def test_logit_storage_roundtrip(tmp_path: Path) -> None:
    logits = torch.randn(4, 7, 9) * 10
    save_logits(tmp_path / "a.npz", logits, (50, 65))
    rec = load_logits(tmp_path / "a.npz")
    assert rec.size == (50, 65) and rec.logits.dtype == np.float16 and rec.logits.shape == (4, 7, 9)
    np.testing.assert_allclose(rec.logits.astype(np.float32), logits.numpy(), atol=1e-2)
    probs = probs_from_logits(rec.logits, rec.size)
    assert probs.shape == (4, 50, 65) and np.allclose(probs.sum(0), 1, atol=1e-5)
    full = F.interpolate(logits[None], size=(50, 65), mode="bilinear", align_corners=False)[0].argmax(0)
    agree = (labels_from_logits(rec.logits, rec.size) == full.numpy()).mean()
    assert agree > 0.995  # float16 rounding may flip near-ties only
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        load_logits(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", logits=np.array([{"x": 1}], dtype=object), size=np.array([1, 1]))
    with pytest.raises(InputError, match="obj.npz"):
        load_logits(tmp_path / "obj.npz")


def _two_colour_case(seed: int = 0):
    """A sharp vertical edge between two colours; probabilities with the boundary 5 px off, blurred and noisy."""
    height, width, edge = 40, 64, 30
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :edge], image[:, edge:] = (200, 40, 40), (40, 40, 200)
    gt = np.zeros((height, width), np.uint8)
    gt[:, edge:] = 1
    x = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    p1 = 1 / (1 + np.exp(-(x - (edge - 5)) / 3.0))
    p1 = np.clip(p1 + np.random.default_rng(seed).normal(0, 0.15, p1.shape), 0.02, 0.98)
    return image, gt, np.log(np.stack([1 - p1, p1])).astype(np.float32)


def _miou(pred: np.ndarray, gt: np.ndarray, n: int = 2) -> float:
    return ConfusionMatrix(n).update(pred, gt).scores()["miou_present"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_never_lowers_miou_on_a_clear_edge(seed: int) -> None:
    image, gt, logits = _two_colour_case(seed)
    before = _miou(labels_from_logits(logits, gt.shape), gt)
    after = _miou(crf_refine(image, logits, schema_section("seg")["crf"]), gt)
    assert before < 0.95
    assert after >= before and after > 0.99


def _tiny_logits(data: VOCLayoutDataset, ids: list[str], folder: Path, correct: bool) -> None:
    """Full-resolution logits that are right (GT one-hot) or shift every object one class up."""
    for i in ids:
        gt = data.mask(i).astype(np.int64)
        gt[gt == 255] = 0
        target = gt if correct else (gt + 1) % data.num_classes
        logits = F.one_hot(torch.from_numpy(target), data.num_classes).permute(2, 0, 1).float() * 8
        save_logits(folder / f"{i}.npz", logits, gt.shape)


def test_evaluation_and_crf_shard(tiny_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(tiny_voc)
    ids = ["a_1", "b_2", "c_3"]
    good, bad = tmp_path / "good", tmp_path / "bad"
    _tiny_logits(data, ids[:2], good, True)
    _tiny_logits(data, ids[2:], bad, True)
    crf_dir = tmp_path / "crf"
    crf_shard(tiny_voc, ids, [good, bad], crf_dir, {**schema_section("seg")["crf"], "iters": 2}, workers=1)
    assert sorted(p.stem for p in crf_dir.glob("*.png")) == ids
    cms = evaluate_segmentation(data, ids, [good, bad], [crf_dir])
    assert cms["no_crf"].scores()["miou_present"] == 1.0
    assert cms["crf"].scores()["miou_present"] > 0.5
    write_label_png(crf_dir / "c_3.png", np.zeros((12, 16), np.uint8))
    _tiny_logits(data, ids[2:], bad, False)
    cms = evaluate_segmentation(data, ids, [good, bad], [crf_dir])
    assert cms["no_crf"].scores()["miou_present"] < 1.0 and cms["crf"].scores()["iou"][2] < 1.0
    with pytest.raises(InputError, match="no logits"):
        evaluate_segmentation(data, ids, [good], [crf_dir])


def test_summary_table_formatting() -> None:
    rows = [
        SummaryRow("voc", "voc", "vwl_l", "pseudo", 56.9, 66.456, 69.2049, 70.6),
        SummaryRow("voc_gt", "voc", "–", "gt", None, None, 76.7, float("nan")),
    ]
    text = summary_table(rows, cam_split="val", pseudo_split="train")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 4 and all(line.count("|") == 9 for line in table)
    assert "Pseudo (train)" in table[0] and "DeepLab+CRF (val)" in table[0]
    assert table[2] == "| voc | voc | vwl_l | pseudo | 56.90 | 66.46 | 69.20 | 70.60 |"
    assert table[3] == "| voc_gt | voc | – | gt | – | – | 76.70 | – |"


def test_training_set_augmentation(tiny_voc: Path) -> None:
    data = VOCLayoutDataset(tiny_voc)
    ids = data.ids("train")
    labels = training_label_paths(data, ids, "gt")
    ds = SegmentationTrainSet(data, ids, labels, crop=20, scales=[1.0], flip=False)
    item = ds[(0, 123)]
    assert item["image"].shape == (3, 20, 20) and item["label"].shape == (20, 20)
    # image 12x16 < crop: it sits top-left, padding (bottom/right) is 0 in the image and 255 in the label
    assert torch.all(item["label"][12:] == 255) and torch.all(item["label"][:, 16:] == 255)
    assert torch.all(item["image"][:, 12:] == 0) and torch.all(item["image"][:, :, 16:] == 0)
    mask = data.mask(ids[0]).astype(np.int64)
    np.testing.assert_array_equal(item["label"][:12, :16].numpy(), mask)
    np.testing.assert_allclose(
        item["image"][:, :12, :16].numpy(), T.to_chw(normalize_image(data.image(ids[0]))), atol=1e-6
    )
    again = SegmentationTrainSet(data, ids, labels, crop=8, scales=[0.5, 1.5], scale_sampling="uniform")
    a, b = again[(1, 7)], again[(1, 7)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    rng = np.random.default_rng(0)
    assert {draw_scale(rng, [0.5, 1.0, 1.5]) for _ in range(60)} == {0.5, 1.0, 1.5}
    assert all(0.5 <= draw_scale(rng, [0.5, 1.5], "uniform") <= 1.5 for _ in range(20))


def test_caffe_normalisation_is_bgr_minus_mean() -> None:
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 0] = (123, 117, 104)
    out = normalize_image(image, "caffe")
    np.testing.assert_allclose(out[0, 0], [104 - 104.008, 117 - 116.669, 123 - 122.675], atol=1e-4)
    np.testing.assert_allclose(out[0, 1], -CAFFE_MEAN_BGR)


def test_bad_settings_are_input_errors(tiny_voc: Path) -> None:
    data = VOCLayoutDataset(tiny_voc)
    with pytest.raises(InputError, match="seg.batch_size: 10 does not split into 4 micro-batch"):
        check_train_params({"batch_size": 10, "accumulate": 4})
    check_train_params({"batch_size": 10, "accumulate": 2})
    with pytest.raises(InputError, match="on each of 2 process"):
        check_train_params({"batch_size": 10, "accumulate": 2}, world_size=2)
    with pytest.raises(InputError, match="seg.label_source"):
        training_label_paths(data, ["a_1"], "pseudo", [])
    (tiny_voc / "SegmentationClass" / "b_2.png").unlink()
    with pytest.raises(InputError, match="1 of 2"):
        training_label_paths(data, ["a_1", "b_2"], "gt")


def _stage(name: str, *argv: str) -> None:
    """Run stages/<name>.py in this process; a non-zero exit fails the test."""
    code = run_stage_inline(name, *argv)
    assert code == 0, f"{name} exited with {code}"


SEG = {
    "backbone": 18,
    "pretrained": "none",
    "pretrained_sha256": None,
    "norm": "fixed",
    "style": "torchvision",
    "aspp_rates": [6, 12, 18, 24],
    "msc_scales": [0.5, 0.75],
    "label_source": "gt",
    "batch_size": 2,
    "accumulate": 1,
    "iterations": 3,
    "optimizer": "sgd",
    "lr": 2.5e-4,
    "lr_mult_weight": 10,
    "lr_mult_bias": 20,
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "poly_power": 0.9,
    "crop": 24,
    "scales": [0.75, 1.0, 1.25],
    "scale_sampling": "discrete",
    "flip": True,
    "loss_reduction": "sum",
    "amp": True,
    "seed": 0,
    "checkpoint_every": 2,
    "workers": 0,
    "test_scales": [1.0],
    "test_flip": True,
    "crf": {
        "iters": 3,
        "pos_xy_std": 1,
        "pos_w": 3,
        "bi_xy_std": 67,
        "bi_rgb_std": 3,
        "bi_w": 4,
        "label_eps": 1e-3,
        "max_labels": None,
    },
}


def _params(stage: str, source: dict) -> str:
    """``stage``'s --params (its typed view's keys, wsss.runtime.stage_config) picked from ``source``."""
    return json.dumps(STAGES[stage].pick(source))


def test_stages_end_to_end(tiny_voc: Path, tmp_path: Path) -> None:
    root, out = str(tiny_voc), tmp_path / "results"
    _stage(
        "train_seg",
        "--params",
        _params("train_seg", SEG),
        "--dataset",
        root,
        "--split",
        "train",
        "--device",
        "cpu",
        "--out-dir",
        str(out / "deeplab"),
    )
    log = (out / "deeplab" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,lr,loss,loss_1,loss_0.5,loss_0.75,loss_max" and len(log) == 4
    assert not (out / "deeplab" / "checkpoint.pt").exists()
    for k in range(2):
        _stage(
            "infer_seg",
            "--params",
            _params("infer_seg", SEG),
            "--dataset",
            root,
            "--split",
            "val",
            "--shard",
            str(k),
            "--shards",
            "2",
            "--model",
            str(out / "deeplab" / "model.pt"),
            "--device",
            "cpu",
            "--out",
            str(out / f"seg/s{k}"),
        )
        _stage(
            "crf",
            "--params",
            _params("crf", SEG),
            "--dataset",
            root,
            "--split",
            "val",
            "--shard",
            str(k),
            "--shards",
            "2",
            "--logits",
            str(out / f"seg/s{k}"),
            "--out",
            str(out / f"crf/s{k}"),
        )
    shard_files = [sorted(p.name for p in (out / f"seg/s{k}").iterdir() if p.name != ".wsss-output") for k in (0, 1)]
    assert shard_files == [["c_3.npz"], []]
    labels = read_label_png(out / "crf/s0/c_3.png", 3)
    assert labels.shape == (12, 16)
    _stage(
        "eval_seg",
        "--dataset",
        root,
        "--split",
        "val",
        "--logits",
        str(out / "seg/s0"),
        str(out / "seg/s1"),
        "--crf",
        str(out / "crf/s0"),
        str(out / "crf/s1"),
        "--miou",
        str(out / "miou.txt"),
        "--metrics",
        str(out / "metrics.json"),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["crf"]["iou"]) == {"background", "cat", "dog"}
    assert (out / "miou.txt").read_text() == f"{metrics['miou_crf']:.2f}\n"
    expected = 100 * _miou(labels, VOCLayoutDataset(tiny_voc).mask("c_3"), 3)
    assert metrics["miou_crf"] == pytest.approx(expected, abs=1e-3)
    summary = {
        "runs": [
            {
                "run": "tiny",
                "dataset": "synth",
                "method": "–",
                "labels": "gt",
                "cam": None,
                "pseudo": None,
                "deeplab": str(out / "metrics.json"),
            }
        ],
        "cam_split": "val",
        "pseudo_split": "val",
        "seg_split": "val",
        "seed_groups": {},
    }
    _stage("summary", "--params", json.dumps(summary), "--out", str(out / "summary.md"))
    assert (
        f"| tiny | synth | – | gt | – | – | {metrics['miou_no_crf']:.2f} | {metrics['miou_crf']:.2f} |"
        in (out / "summary.md").read_text()
    )


def test_from_cls_starts_the_backbone_from_the_trained_classifier(tmp_path: Path) -> None:
    from wsss.engine.train import save_state_dict
    from wsss.pipeline.classify import build_classifier

    cls_params = schema_section(
        "cls",
        backbone=18,
        pretrained="none",
        norm="batch",
        freeze_stem=False,
        k_words=8,
        gamma=2.0,
        tau=1.0,
        rho=1e-3,
        detach_stage2=False,
    )
    torch.manual_seed(3)
    classifier = build_classifier(cls_params, 4, "vwl_l")
    for module in classifier.modules():  # non-trivial BN statistics must travel too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "model.pt"
    save_state_dict(path, classifier.state_dict())
    params = {**SEG, "pretrained": "from_cls"}
    seg = build_segmenter(params, 5, cls_model=path)
    seg_state, cls_state = seg.base.backbone.state_dict(), classifier.backbone.state_dict()
    assert seg_state.keys() == cls_state.keys()
    for key, value in cls_state.items():
        assert torch.equal(seg_state[key], value), key
    assert not any(
        p.requires_grad for m in seg.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    )  # norm fixed: the classifier's statistics stay frozen
    with pytest.raises(InputError, match="from_cls needs the trained classifier"):
        build_segmenter(params, 5)
    with pytest.raises(InputError, match="model.pt"):  # a ResNet-34 DeepLab cannot take a ResNet-18 classifier
        build_segmenter({**params, "backbone": 34}, 5, cls_model=path)


def test_seg_gate_measures_the_fit_to_the_training_labels(tiny_voc: Path, tmp_path: Path) -> None:
    """Labels that are DeepLab's own predictions fit at 100 mIoU and pass any threshold; the same images labelled
    with another class everywhere fit at 0 and stop the gate with one line; gates.enabled false lets it pass."""
    root, out = str(tiny_voc), tmp_path / "results"
    _stage(
        "train_seg",
        "--params",
        _params("train_seg", SEG),
        "--dataset",
        root,
        "--split",
        "train",
        "--device",
        "cpu",
        "--out-dir",
        str(out / "deeplab"),
    )
    data = VOCLayoutDataset(tiny_voc)
    model = load_segmenter(SEG, data.num_classes, out / "deeplab" / "model.pt")
    own, other = tmp_path / "own", tmp_path / "other"
    for image_id in data.ids("train"):
        pred = labels_from_logits(image_logits(model, data.image(image_id), SEG), (12, 16)).astype(np.uint8)
        write_label_png(own / f"{image_id}.png", pred)
        write_label_png(other / f"{image_id}.png", ((pred + 1) % data.num_classes).astype(np.uint8))
    fit = label_fit(model, data, data.ids("train"), {i: own / f"{i}.png" for i in data.ids("train")}, SEG)
    assert fit.scores()["miou_present"] == 1.0

    def gate(labels: Path, enabled: bool = True) -> tuple[int, Path]:
        cfg = {
            "gates": {"enabled": enabled, "min_seg_fit": 0.99, "seg_fit_images": 64},
            "seg": {**SEG, "label_source": "pseudo"},
        }
        path = tmp_path / f"gate_{labels.name}_{enabled}.json"
        code = run_stage_inline(
            "seg_gate",
            "--params",
            _params("seg_gate", cfg),
            "--dataset",
            root,
            "--split",
            "train",
            "--labels",
            str(labels),
            "--model",
            str(out / "deeplab" / "model.pt"),
            "--device",
            "cpu",
            "--out",
            str(path),
        )
        return code, path

    code, path = gate(own)
    assert code == 0 and json.loads(path.read_text())["fit_miou"] == 1.0
    code, path = gate(other)
    assert code != 0 and not path.exists()
    code, path = gate(other, enabled=False)
    assert code == 0 and json.loads(path.read_text())["fit_miou"] == 0.0
