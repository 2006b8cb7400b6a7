"""ReCAM (wsss/methods/recam.py): class-specific features, the SCE, the P⊙W CAMs and the two training phases, with
known answers and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import schema_section

from wsss.engine.train import MicroBatch
from wsss.methods import get_method
from wsss.methods.recam import class_features, normalised_cams, reactivated_cams, reactivation_loss
from wsss.pipeline.classify import build_classifier


def test_class_features_known_answer() -> None:
    """f_k = mean over pixels of A_k·F. Planted bug: dividing by the CAM's sum instead of the pixel count fails."""
    cams = torch.tensor([[[[1.0, 0.0]], [[0.5, 1.0]]]])  # N=1, C=2, 1×2 pixels
    feats = torch.tensor([[[[2.0, 4.0]], [[6.0, 8.0]]]])  # ch=2
    f = class_features(cams, feats)
    assert f.shape == (1, 2, 2)
    torch.testing.assert_close(f[0], torch.tensor([[1.0, 3.0], [2.5, 5.5]]))


def test_normalised_cams_divide_by_own_max() -> None:
    """ReLU, then each map / (its max + 1e-5). Planted bug: dividing by the max over all classes fails."""
    feats = torch.tensor([[[[1.0, -2.0, 3.0]]]])  # ch=1, 3 pixels
    weight = torch.tensor([[2.0], [-1.0]])
    cams = normalised_cams(feats, weight)
    torch.testing.assert_close(cams[0, 0, 0], torch.tensor([2.0, 0.0, 6.0]) / (6.0 + 1e-5))
    torch.testing.assert_close(cams[0, 1, 0], torch.tensor([0.0, 2.0, 0.0]) / (2.0 + 1e-5))


def test_reactivation_loss_over_present_classes_divided_by_batch() -> None:
    """SCE of each present class's row against its own index, summed, / N. Planted bugs: a mean over the present
    rows (/3), or rows of absent classes counted, fail."""
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    logits = torch.arange(18, dtype=torch.float32).reshape(2, 3, 3).sin() * 3

    def ce(row: list[float], target: int) -> float:
        return -row[target] + math.log(sum(math.exp(v) for v in row))

    rows = logits.tolist()
    expected = (ce(rows[0][0], 0) + ce(rows[0][2], 2) + ce(rows[1][1], 1)) / 2
    assert reactivation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_reactivated_cams_equal_a_pixel_loop() -> None:
    """ReLU(Σ_c P[k,c]·W[k,c]·F[c,p]) by an explicit loop. Planted bug: P·W as a matrix product (P @ Wᵀ) fails."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 3, 4, generator=gen)
    w = torch.randn(3, 5, 1, 1, generator=gen)
    p = torch.randn(3, 5, 1, 1, generator=gen)
    got = reactivated_cams(feats, w, p).numpy()
    fn, wn, pn = feats.numpy(), w[:, :, 0, 0].numpy(), p[:, :, 0, 0].numpy()
    want = np.zeros((2, 3, 3, 4), dtype=np.float64)
    for n in range(2):
        for k in range(3):
            for y in range(3):
                for x in range(4):
                    want[n, k, y, x] = max(0.0, sum(pn[k, c] * wn[k, c] * fn[n, c, y, x] for c in range(5)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _net() -> torch.nn.Module:
    params = schema_section("cls", backbone=10, pretrained="none", norm="batch", freeze_stem=False)
    torch.manual_seed(0)
    return build_classifier(params, 3, "recam", pretrained=False)


def test_inference_cams_use_the_product_of_predictor_and_classifier() -> None:
    """The method's CAMs (the ones infer_cam stores) and forward_cam are ReLU((P⊙W)·F), not the plain CAM; scores
    are the sigmoid of the W logits. Planted bug: cams_and_scores returning the plain ReLU(W·F) fails."""
    model = _net().eval()
    images = torch.randn(2, 3, 64, 64)
    cams, scores = get_method("recam").cams_and_scores(model, images)
    with torch.no_grad():
        feat = model.features(images)
        p, w = model.predictor.weight[:, :, 0, 0], model.classifier.weight[:, :, 0, 0]
        want = torch.relu(torch.einsum("kc,nchw->nkhw", p * w, feat))
        torch.testing.assert_close(cams, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.forward_cam(images), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(scores, torch.sigmoid(feat.mean(dim=(2, 3)) @ w.t()), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(cams, torch.relu(torch.einsum("kc,nchw->nkhw", w, feat)))


def test_predictor_does_not_change_the_cam_phase() -> None:
    """recam's first phase is cam's: same initial weights and the same RNG stream afterwards (P is drawn on a
    forked RNG). Planted bug: creating P without fork_rng fails the next-draw comparison."""
    params = schema_section("cls", backbone=10, pretrained="none", norm="batch", freeze_stem=False)
    torch.manual_seed(3)
    cam = build_classifier(params, 3, "cam", pretrained=False)
    after_cam = torch.rand(4)
    torch.manual_seed(3)
    recam = build_classifier(params, 3, "recam", pretrained=False)
    after_recam = torch.rand(4)
    torch.testing.assert_close(after_cam, after_recam)
    state = recam.state_dict()
    assert set(state) - set(cam.state_dict()) == {"predictor.weight"}
    for key, value in cam.state_dict().items():
        torch.testing.assert_close(state[key], value)


def test_training_phases() -> None:
    """Phase cam = the cam method's phase; phase recam: recam_epochs, P at recam_lr, everything else at
    recam_lr × recam_lr_mult_backbone. Planted bug: the backbone group missing the classifier W fails."""
    cls = schema_section("cls", backbone=10, pretrained="none", norm="batch", freeze_stem=False, epochs=2)
    cam_phase, recam_phase = get_method("recam").training_phases(cls)
    (plain,) = get_method("cam").training_phases(cls)
    assert (cam_phase.name, cam_phase.epochs, cam_phase.lr) == ("cam", plain.epochs, plain.lr) == ("cam", 2, 0.01)
    assert (recam_phase.name, recam_phase.epochs, recam_phase.lr) == ("recam", 4, 0.0005)
    model = _net()
    rest, pred = recam_phase.groups(model)
    assert pred["lr_mult"] == 1.0 and [id(p) for p in pred["params"]] == [id(model.predictor.weight)]
    assert rest["lr_mult"] == 0.1
    assert {id(p) for p in rest["params"]} == {id(p) for n, p in model.named_parameters() if n != "predictor.weight"}
    cam_groups = cam_phase.groups(model)
    assert id(model.predictor.weight) not in {id(p) for g in cam_groups for p in g["params"]}


def test_reactivation_objective_trains_all_parts() -> None:
    """Loss = BCE + λ·SCE with λ from the config; gradients reach P, W and the backbone. Planted bug: λ ignored
    (the loss equal for λ = 1 and 2) fails."""
    model = _net().train()
    batch = {"image": torch.randn(2, 3, 64, 64), "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    losses = []
    for weight in (1.0, 2.0):
        cls = schema_section("cls", recam_loss_weight=weight)
        phase = get_method("recam").training_phases(cls)[1]
        model.zero_grad()
        loss, parts = phase.objective(torch.device("cpu"), 0).loss(model, batch, MicroBatch(0, (0, 1), 2, None))
        loss.backward()
        assert loss.item() == pytest.approx(parts["cls"] + weight * parts["sce"], rel=1e-5)
        losses.append(loss.item())
    assert losses[1] > losses[0]
    for name in ("predictor.weight", "classifier.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
