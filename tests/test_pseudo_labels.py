"""IRN refinement library (wsss.pipeline.pseudo_labels, wsss.data.irn_data): IR label files, the loss, training, pseudo labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.artifacts.cam import CamRecord, save_cam
from wsss.data.dataset import VOCLayoutDataset, format_labels_tsv
from wsss.data.irn_data import AffinityTrainSet
from wsss.engine.train import build_optimizer, fit
from wsss.ops.path_index import PathIndex
from wsss.pipeline.crf import write_ir_labels
from wsss.pipeline.evaluate import evaluate_labels
from wsss.pipeline.pseudo_labels import (
    aggregate_losses,
    boundary_map,
    build_irn,
    check_train_params,
    irn_loss,
    optimizer_groups,
    pair_loss_maps,
    pseudo_label,
    training_step,
)
from wsss.runtime.errors import InputError
from wsss.runtime.io import index_label_dirs, read_label_png, write_jpeg, write_label_png

IR_OPTIONS = {"conf_fg": 0.30, "conf_bg": 0.05, "gt_prob": 0.7, "iters": 10, "pos": (3, 3), "bi": (50, 5, 10)}


@pytest.fixture
def square_voc(tmp_path: Path) -> Path:
    """Three 64×64 images (a bright square of class 1 or 2 on dark noise) with masks, in VOC layout."""
    root = tmp_path / "sq"
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    labels = {}
    for k, (image_id, cls) in enumerate([("im_0", 1), ("im_1", 2), ("im_2", 1)]):
        image = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        y, x = 8 + 6 * k, 12 + 4 * k
        image[y : y + 32, x : x + 32] = (230, 120 * cls - 100, 60)
        mask[y : y + 32, x : x + 32] = cls
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", image)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        labels[image_id] = [["cat", "dog"][cls - 1]]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("im_0\nim_1\nim_2\n")
    (root / "labels.tsv").write_text(format_labels_tsv(labels))
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "dataset.yaml").write_text("name: sq\n")
    return root


def _square_cams(data: VOCLayoutDataset, cam_dir: Path) -> None:
    """Stride-4 CAMs that cover each mask's object (value 1) with a weak halo, stored like infer_cam does."""
    for image_id in data.ids("train"):
        mask = data.mask(image_id)
        cls = int(mask.max())
        cam = (mask[::4, ::4] > 0).astype(np.float32)
        cam = np.maximum(cam, 0.1 * np.roll(cam, 2, axis=1))
        save_cam(
            cam_dir / f"{image_id}.npz",
            CamRecord(np.array([cls - 1]), cam[None].astype(np.float16), mask.shape, np.zeros(2, np.float32)),
        )


# ------------------------------------------------------------------------------------------------ loss terms


def test_zero_boundary_gives_unit_affinity() -> None:
    """sigmoid(−30) ≈ 0 everywhere → a = 1 → L_pos = −log(1 + 1e-5) ≈ 0, L_neg = −log(1e-5) ≈ 11.51."""
    index = PathIndex(3, 8, 10)
    maps = pair_loss_maps(torch.full((1, 1, 8, 10), -30.0), torch.zeros(1, 2, 8, 10), index)
    assert maps["pos_aff"].shape == (1, index.num_offsets, index.out_height, index.out_width)
    torch.testing.assert_close(maps["pos_aff"], torch.full_like(maps["pos_aff"], -math.log(1 + 1e-5)))
    neg = -np.log(np.float32(1 + 1e-5) - np.float32(1))  # float32 rounds 1 + 1e-5 (as in IRN): 11.5116
    torch.testing.assert_close(maps["neg_aff"], torch.full_like(maps["neg_aff"], float(neg)))


def test_a_boundary_wall_cuts_only_the_crossing_pairs() -> None:
    """A full-height wall (B ≈ 1) in one column: pairs whose path crosses it get affinity ≈ 0 (large L_pos)."""
    index = PathIndex(2, 6, 8)  # offsets (0,1), (1,-1), (1,0), (1,1); sources: cols 1..6
    logits = torch.full((1, 1, 6, 8), -30.0)
    logits[..., 4] = 30.0
    pos = pair_loss_maps(logits, torch.zeros(1, 2, 6, 8), index)["pos_aff"][0]
    k = index.offsets.index((0, 1))
    col = torch.arange(index.out_width) + index.margin  # image column of each source
    crossing = (col == 3) | (col == 4)  # path (x, x+1) touches column 4
    assert torch.all(pos[k][:, crossing] > 10) and torch.all(pos[k][:, ~crossing] < 1e-3)
    vertical = index.offsets.index((1, 0))
    assert torch.all(pos[vertical][:, col == 4] > 10) and torch.all(pos[vertical][:, col != 4] < 1e-3)


def test_aggregation_formula_on_a_two_offset_toy() -> None:
    """Hand-computed aggregation: 1 image, K = 2 offsets, 1×2 sources (4 pairs), δ = (0, 1) and (1, 0)."""
    pos = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N×K×h×w
    neg = torch.tensor([[[[5.0, 6.0]], [[7.0, 8.0]]]])
    dp_fg = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 1, 2)  # N×2×K×h×w
    dp_bg = 10 + dp_fg
    bg_pos = torch.tensor([[[[True, False]], [[False, False]]]])
    fg_pos = torch.tensor([[[[False, True]], [[True, False]]]])
    neg_lab = torch.tensor([[[[False, False]], [[False, True]]]])
    terms = aggregate_losses(
        {"pos_aff": pos, "neg_aff": neg, "dp_fg": dp_fg, "dp_bg": dp_bg},
        {"bg_pos": bg_pos, "fg_pos": fg_pos, "neg": neg_lab},
    )
    eps = 1e-5
    bg_aff, fg_aff = 1 / (1 + eps), (2 + 3) / (2 + eps)
    # fg pairs: (k0, x1) and (k1, x0); channel values of dp_fg there: ch0 → 1, 2; ch1 → 5, 6
    dp_fg_term = (1 + 2 + 5 + 6) / (2 * 2 + eps)
    dp_bg_term = (10 + 14) / (2 * 1 + eps)  # bg pair (k0, x0): ch0 → 10, ch1 → 14
    expected = {
        "bg_pos_aff": bg_aff,
        "fg_pos_aff": fg_aff,
        "pos_aff": (bg_aff + fg_aff) / 2,
        "neg_aff": 8 / (1 + eps),
        "dp_fg": dp_fg_term,
        "dp_bg": dp_bg_term,
    }
    expected["total"] = (expected["pos_aff"] + expected["neg_aff"]) / 2 + (dp_fg_term + dp_bg_term) / 2
    for key, value in expected.items():
        assert float(terms[key]) == pytest.approx(value, rel=1e-6), key


def test_displacement_towards_a_common_centre_has_zero_foreground_loss() -> None:
    """D(p) = c − p for every pixel: D(src) − D(dst) = δ, so dp_fg = 0 and dp_bg = mean |δ| > 0."""
    height, width = 8, 10
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    disp = torch.stack([3.5 - ys, 4.5 - xs])[None]
    index = PathIndex(3, height, width)
    maps = pair_loss_maps(torch.zeros(1, 1, height, width), disp, index)
    assert float(maps["dp_fg"].abs().max()) < 1e-6
    delta = index.offsets_tensor.float()
    torch.testing.assert_close(maps["dp_bg"][0, :, :, 0, 0], delta.abs().t())
    terms = irn_loss(torch.zeros(1, 1, height, width), disp, torch.ones(1, height, width, dtype=torch.long), index)
    assert float(terms["dp_fg"]) < 1e-6 and float(terms["dp_bg"]) == 0.0  # no background pairs → 0/(0+ε)


def test_irn_loss_ignores_unsure_pixels_and_has_gradients() -> None:
    index = PathIndex(3, 8, 10)
    edge = torch.zeros(1, 1, 8, 10, requires_grad=True)
    disp = torch.zeros(1, 2, 8, 10, requires_grad=True)
    labels = torch.full((1, 8, 10), 255, dtype=torch.long)
    terms = irn_loss(edge, disp, labels, index)
    assert all(float(v.detach()) == 0.0 for v in terms.values())  # no valid pair at all
    labels[0, :, :5], labels[0, :, 5:] = 0, 1
    terms = irn_loss(edge, disp, labels, index)
    terms["total"].backward()
    assert edge.grad.abs().sum() > 0 and disp.grad.abs().sum() > 0
    assert float(terms["neg_aff"].detach()) == pytest.approx(-math.log(1 + 1e-5 - 0.5), rel=1e-4)  # B = 0.5 → a = 0.5


def test_check_train_params_needs_a_crop_wider_than_the_radius() -> None:
    check_train_params({"crop": 80, "radius": 10})
    for crop in (72, 82):
        with pytest.raises(InputError, match="irn.crop"):
            check_train_params({"crop": crop, "radius": 10})


# ---------------------------------------------------------------------------------------------- IR label files


def test_write_ir_labels_from_files_serial_and_parallel_agree(square_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(square_voc)
    _square_cams(data, tmp_path / "cam")
    tasks = [(i, data.image_path(i), tmp_path / "cam" / f"{i}.npz") for i in data.ids("train")]
    totals = write_ir_labels(tasks, tmp_path / "one", IR_OPTIONS, workers=1)
    write_ir_labels(tasks, tmp_path / "two", IR_OPTIONS, workers=2)
    assert sum(totals.values()) == 3 * 64 * 64 and totals["foreground"] > 0 and totals["background"] > 0
    for image_id in data.ids("train"):
        one = read_label_png(tmp_path / "one" / f"{image_id}.png")
        np.testing.assert_array_equal(one, read_label_png(tmp_path / "two" / f"{image_id}.png"))
        mask = data.mask(image_id)
        assert set(np.unique(one).tolist()) <= {0, int(mask.max()), 255}
        fg, obj = (one != 0) & (one != 255), mask > 0
        assert (fg & obj).sum() / (fg | obj).sum() > 0.85  # the confident foreground is the object (±1 px)
        assert ((one == 0) & obj).sum() == 0  # nothing of the object is called background


def test_write_ir_labels_reports_a_bad_cam_as_input_error(square_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(square_voc)
    (tmp_path / "bad.npz").write_bytes(b"not a cam")
    with pytest.raises(InputError, match="bad.npz"):
        write_ir_labels([("im_0", data.image_path("im_0"), tmp_path / "bad.npz")], tmp_path / "out", IR_OPTIONS)


# ------------------------------------------------------------------------------------------- training data / fit


def test_affinity_train_set_is_deterministic_and_shaped(square_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(square_voc)
    ids = data.ids("train")
    for image_id in ids:
        write_label_png(tmp_path / "lab" / f"{image_id}.png", data.mask(image_id))
    dataset = AffinityTrainSet(data, ids, index_label_dirs([tmp_path / "lab"], ids), crop=96)
    a, b = dataset[(1, 7)], dataset[(1, 7)]
    assert a["image"].shape == (3, 96, 96) and a["label"].shape == (24, 24) and a["label"].dtype == torch.int64
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    labels = torch.cat([dataset[(i, s)]["label"].flatten() for i in range(3) for s in range(4)])
    assert set(labels.unique().tolist()) == {0, 1, 2, 255}  # 255 = padding (images of ≤ 96 px in a 96 crop)
    with pytest.raises(InputError, match="no label PNG"):
        index_label_dirs([tmp_path / "lab"], ids + ["im_9"])


def test_tiny_fit_trains_the_branches_only(square_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(square_voc)
    ids = data.ids("train")
    for image_id in ids:
        write_label_png(tmp_path / "lab" / f"{image_id}.png", data.mask(image_id))
    torch.manual_seed(0)
    model = build_irn({"pretrained": "none", "pretrained_sha256": None, "backbone": 18}, cls_depth=18)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.edge_out.weight.detach().clone()
    optimizer = build_optimizer(optimizer_groups(model, 10.0), "sgd", 0.1, 1e-4, 1e-4)
    index = PathIndex(10, 20, 20)
    out = tmp_path / "irn"
    fit(
        model,
        AffinityTrainSet(data, ids, index_label_dirs([tmp_path / "lab"], ids), crop=80),
        lambda m, batch, step: training_step(m, batch, index, torch.device("cpu")),
        optimizer,
        batch_size=1,
        max_steps=3,
        seed=0,
        checkpoint=out / "checkpoint.pt",
        checkpoint_every=2,
        final_weights=out / "model.pt",
        log_csv=out / "train_log.csv",
        device=torch.device("cpu"),
        fingerprint="x",
    )
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,lr,loss,bg_pos_aff,fg_pos_aff,pos_aff,neg_aff,dp_fg,dp_bg" and len(log) == 4
    assert all(math.isfinite(float(v)) for row in log[1:] for v in row.split(","))
    state = torch.load(out / "model.pt", weights_only=True)
    for key, value in backbone_before.items():
        assert torch.equal(state[f"backbone.{key}"], value), key
    assert not torch.equal(state["edge_out.weight"], head_before)
    assert not (out / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------ pseudo labels


def test_random_walk_fills_an_enclosed_object_from_half_a_cam() -> None:
    """Object = stride-4 cells 4..11 (image px 16..47) enclosed by a boundary ring; the CAM covers its left half.
    Thresholding the CAM labels half the object; the walk spreads it to the whole enclosed region."""
    boundary = torch.zeros(16, 16)
    boundary[3, 3:13] = boundary[12, 3:13] = boundary[3:13, 3] = boundary[3:13, 12] = 1.0
    cam = torch.zeros(1, 16, 16)
    cam[0, 4:12, 4:8] = 1.0
    label = pseudo_label(cam, [4], boundary, (64, 64))
    obj = np.zeros((64, 64), bool)
    obj[16:48, 16:48] = True
    assert set(np.unique(label).tolist()) == {0, 5}
    ring = np.zeros((64, 64), bool)  # the boundary cells (px 12..15 and 48..51) blur by ×4 bilinear upsampling
    ring[12:52, 12:52] = True
    ring[16:48, 16:48] = False
    assert (label[obj] == 5).all()
    assert (label[~obj & ~ring] == 0).all()
    leaky = pseudo_label(cam, [4], torch.zeros(16, 16), (64, 64))  # without the enclosing boundary it spreads out
    assert (leaky[~obj & ~ring] == 5).mean() > 0.5


def test_pseudo_label_edge_cases() -> None:
    boundary = torch.zeros(4, 5)
    assert (pseudo_label(np.zeros((0, 4, 5), np.float16), [], boundary, (13, 17)) == 0).all()
    zero = pseudo_label(np.zeros((2, 4, 5), np.float16), [0, 2], boundary, (13, 17))
    assert zero.shape == (13, 17) and (zero == 0).all()  # vanishing seeds: no NaN, all background
    cam = np.zeros((2, 4, 5), np.float32)
    cam[1] = 1.0
    assert (pseudo_label(cam, [0, 2], boundary, (13, 17)) == 3).all()
    with pytest.raises(ValueError):
        pseudo_label(cam, [0, 2], torch.zeros(4, 4), (13, 17))


def test_boundary_map_size_and_flip_equivariance() -> None:
    torch.manual_seed(0)
    model = build_irn({"pretrained": "none", "pretrained_sha256": None, "backbone": 18}, cls_depth=18).eval()
    image = torch.randn(3, 48, 64)
    b = boundary_map(model, image)
    assert b.shape == (12, 16) and float(b.min()) > 0 and float(b.max()) < 1
    torch.testing.assert_close(boundary_map(model, image.flip(-1)), b.flip(-1), rtol=1e-4, atol=1e-5)
    assert boundary_map(model, torch.randn(3, 50, 70)).shape == (13, 18)  # padded to 64×80, cropped to ⌈H/4⌉, ⌈W/4⌉
    assert boundary_map(model, torch.randn(3, 20, 600)).shape == (5, 150)  # no 512-px limit


def test_evaluate_labels_counts_ignore_as_background(square_voc: Path, tmp_path: Path) -> None:
    data = VOCLayoutDataset(square_voc)
    paths = {}
    for image_id in data.ids("train"):
        pred = data.mask(image_id).copy()
        pred[pred == 0] = 255  # IRN reads predicted 255 as background
        paths[image_id] = tmp_path / f"{image_id}.png"
        write_label_png(paths[image_id], pred)
    scores = evaluate_labels(data, data.ids("train"), paths).scores()
    assert scores["miou_present"] == 1.0 and scores["pixel_accuracy"] == 1.0


def test_boundary_map_on_the_reference_canvas_matches_irn_edge_displacement() -> None:
    """``canvas`` = IRN's EdgeDisplacement: image and flip zero-padded right/bottom to canvas × canvas, edge logits
    cropped to the stride-4 size, sigmoid(e/2 + flip(e_flip)/2). The padded size changes GroupNorm statistics, so
    it differs from the multiple-of-16 padding; an image larger than the canvas is padded to a multiple of 16."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_irn({"pretrained": "none", "pretrained_sha256": None, "backbone": 18}, cls_depth=18).eval()

    def reference(image: torch.Tensor, canvas_h: int, canvas_w: int) -> torch.Tensor:
        h, w = image.shape[-2:]
        x = F.pad(torch.stack([image, image.flip(-1)]), [0, canvas_w - w, 0, canvas_h - h])
        with torch.no_grad():
            edge = model.edge_logits(x)[:, 0, : (h - 1) // 4 + 1, : (w - 1) // 4 + 1]
        return torch.sigmoid(edge[0] / 2 + edge[1].flip(-1) / 2)

    image = torch.randn(3, 45, 61)
    on_canvas = boundary_map(model, image, canvas=128)
    torch.testing.assert_close(on_canvas, reference(image, 128, 128), rtol=0, atol=1e-6)
    torch.testing.assert_close(boundary_map(model, image), reference(image, 48, 64), rtol=0, atol=1e-6)
    assert (on_canvas - boundary_map(model, image)).abs().max() > 1e-3
    wide = torch.randn(3, 20, 150)
    torch.testing.assert_close(boundary_map(model, wide, canvas=128), reference(wide, 128, 160), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 16"):
        boundary_map(model, image, canvas=100)
