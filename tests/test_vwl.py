"""VWL maths (docs/method.md#vwl): hybrid pooling, word assignment, decov loss, memory bank, losses, gradient flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.methods import get_method
from wsss.models.backbone import build_resnet
from wsss.models.vwl import (
    VWLNet,
    decorrelation_loss,
    hybrid_pool,
    memory_bank_reinit,
    memory_bank_update,
    word_assignment,
)

LABELS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])


def _net(method: str, k_words: int = 8, seed: int = 0) -> VWLNet:
    """The network of a registered method (wsss.methods) with the schema's default VWL settings."""
    torch.manual_seed(seed)
    cls = {"k_words": k_words, "gamma": 2.0, "tau": 1.0, "rho": 1e-3, "detach_stage2": None}
    return get_method(method).build(build_resnet(18), 4, cls)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


# ---------------------------------------------------------------- hybrid pooling


def test_hybrid_pool_4x4_by_hand() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # GAP 7.5; M1 = 15; M2 = mean(5, 7, 13, 15) = 10; M4 = mean of all pixels = 7.5
    assert hybrid_pool(x).item() == pytest.approx((2 * 7.5 + 15 + 10 + 7.5) / 5)  # 9.5
    assert hybrid_pool(x, gamma=0.0).item() == pytest.approx((15 + 10 + 7.5) / 3)
    assert hybrid_pool(x, gamma=1.0, levels=(1,)).item() == pytest.approx((7.5 + 15) / 2)


def test_hybrid_pool_5x5_floor_windows() -> None:
    base = torch.arange(25.0).reshape(5, 5)
    x = torch.stack([base, -base])[None]  # 1×2×5×5, channels pooled independently
    # channel 0: GAP 12; M1 24; M2 uses 2×2 windows on rows/cols 0..3 only: mean(6, 8, 16, 18) = 12;
    # M4 has 1×1 windows over all 25 pixels: 12.  (2·12 + 24 + 12 + 12) / 5 = 14.4
    # channel 1: GAP −12; M1 0; M2 mean(0, −2, −10, −12) = −6; M4 −12.  (−24 + 0 − 6 − 12) / 5 = −8.4
    assert hybrid_pool(x)[0].tolist() == pytest.approx([14.4, -8.4])


def test_hybrid_pool_small_maps_by_hand() -> None:
    # 3x2 map (a 48x32 image at OS16): level 4 is below both sides -> 1-pixel windows -> the mean of all pixels;
    # level 2 -> windows (floor 3/2, 2/2) = (1, 1), stride 1 -> again every pixel; level 1 -> the maximum.
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])[None, None]
    gap = 24 / 6
    m1, m2, m4 = 9.0, gap, gap
    assert hybrid_pool(x).item() == pytest.approx((2 * gap + m1 + m2 + m4) / 5)
    # a 1x1 map (tiny image at a small scale): every level is the pixel itself
    assert hybrid_pool(torch.full((1, 2, 1, 1), 7.0)).tolist() == [[7.0, 7.0]]


def test_small_image_scores_and_cams() -> None:
    """A 64x48 image at scale 1.0 (4x3 map) and at 0.5 (2x2): scores and CAMs without an error (issue 10)."""
    from wsss.pipeline.classify import image_scores

    net = _net("vwl_l", k_words=4).eval()
    for size in [(48, 64), (24, 32), (12, 16)]:
        with torch.no_grad():
            scores = image_scores(net, torch.randn(1, 3, *size))
            cam = net.forward_cam(torch.randn(1, 3, *size))
        assert scores.shape == (1, 4) and torch.isfinite(scores).all()
        assert cam.shape[:2] == (1, 4)


# ---------------------------------------------------------------- decorrelation loss


def test_decorrelation_zero_for_orthogonal_centred_rows() -> None:
    # rows are orthogonal after centring (row means 2 and 5 are removed)
    b = torch.tensor([[3.0, 1.0, 2.0, 2.0], [5.0, 5.0, 6.0, 4.0]])
    assert decorrelation_loss(b).item() == pytest.approx(0.0, abs=1e-7)


def test_decorrelation_by_hand() -> None:
    # centred rows (1,0,−1), (1,−1,0): G = [[2,1],[1,2]], ½(√10 − √8)
    b = torch.tensor([[1.0, 0.0, -1.0], [1.0, -1.0, 0.0]])
    assert decorrelation_loss(b).item() == pytest.approx(0.5 * (math.sqrt(10) - math.sqrt(8)), rel=1e-6)
    # rows (2,0), (0,2) centre to (1,−1), (−1,1): G = [[2,−2],[−2,2]], ½(4 − √8) = 2 − √2
    b = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert decorrelation_loss(b).item() == pytest.approx(2 - math.sqrt(2), rel=1e-6)


# ---------------------------------------------------------------- memory bank


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, :, 0, 0] = torch.tensor([1.0, 2.0])
    feats[0, :, 0, 1] = torch.tensor([3.0, 4.0])
    feats[0, :, 1, 0] = torch.tensor([5.0, 6.0])
    feats[0, :, 1, 1] = torch.tensor([7.0, 8.0])
    return feats, torch.tensor([[[0, 0], [2, 0]]])


def test_memory_bank_update_centroids() -> None:
    feats, words = _toy_batch()
    codebook = torch.tensor([[1.0, 1.0], [10.0, -10.0], [0.0, 4.0]])
    new = memory_bank_update(codebook, feats, words, rho=0.1)
    mu0 = torch.tensor([1.0 + 3.0 + 7.0, 2.0 + 4.0 + 8.0]) / (3 + 1e-4)
    mu2 = torch.tensor([5.0, 6.0]) / (1 + 1e-4)
    torch.testing.assert_close(new[0], 0.1 * mu0 + 0.9 * codebook[0])
    torch.testing.assert_close(new[1], 0.9 * codebook[1])  # unused word only shrinks
    torch.testing.assert_close(new[2], 0.1 * mu2 + 0.9 * codebook[2])


def test_memory_bank_reinit_samples_pixels() -> None:
    feats = torch.randn(2, 3, 2, 2)
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, 3)
    rows = memory_bank_reinit(feats, 20, torch.Generator().manual_seed(0))
    assert rows.shape == (20, 3)
    matches = (rows[:, None, :] == pixels[None]).all(-1)
    assert matches.any(1).all()  # every word is one of the 8 pixel features
    assert len({tuple(r.tolist()) for r in rows}) < 20  # with replacement: 20 draws from 8 repeat
    torch.testing.assert_close(rows, memory_bank_reinit(feats, 20, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- word assignment


def test_word_assignment_matches_cosine_argmax() -> None:
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 4, 3, 3, generator=g).abs().add(0.1).requires_grad_(True)
    codebook = torch.randn(5, 4, generator=g, requires_grad=True)
    res = word_assignment(feat, codebook, tau=2.0)
    f = feat.detach().numpy().transpose(0, 2, 3, 1)
    b = codebook.detach().numpy()
    cos = np.einsum(
        "nhwc,kc->nhwk", f / np.linalg.norm(f, axis=-1, keepdims=True), b / np.linalg.norm(b, axis=-1, keepdims=True)
    )
    np.testing.assert_array_equal(res.hard.numpy(), cos.argmax(-1))
    assert res.hard.dtype == torch.int64
    soft = np.exp(2 * cos) / np.exp(2 * cos).sum(-1, keepdims=True)
    np.testing.assert_allclose(res.soft.detach().numpy().transpose(0, 2, 3, 1), soft, rtol=1e-5, atol=1e-6)
    for n in range(2):
        used = set(res.hard[n].flatten().tolist())
        assert res.presence[n].tolist() == [1.0 if k in used else 0.0 for k in range(5)]
    torch.testing.assert_close(res.histogram.sum(1), torch.full((2,), 9.0))
    # scale of a pixel's feature does not matter (cosine)
    scaled = word_assignment(feat.detach() * torch.rand(2, 1, 3, 3, generator=g).add(0.5), codebook)
    torch.testing.assert_close(scaled.soft, word_assignment(feat, codebook).soft)
    # stop-gradient on features: only the codebook receives gradient
    (res.histogram * torch.arange(5.0)).sum().backward()
    assert feat.grad is None
    assert codebook.grad is not None and codebook.grad.abs().sum() > 0


# ---------------------------------------------------------------- network


def test_codebook_init_and_heads() -> None:
    torch.manual_seed(0)
    net = VWLNet(build_resnet(18), num_classes=4, k_words=256)
    assert tuple(net.codebook.shape) == (256, 512)
    assert net.codebook.std().item() == pytest.approx(math.sqrt(1 / 3) / math.sqrt(512), rel=0.03)
    assert tuple(net.fc_a.weight.shape) == (4, 256, 1, 1) and net.fc_a.bias is None
    assert tuple(net.fc_b.weight.shape) == (256, 512, 1, 1) and net.fc_b.bias is None
    assert tuple(net.classifier.weight.shape) == (4, 512, 1, 1) and net.classifier.bias is None
    assert net.detach_stage2 and not _net("vwl_m").detach_stage2 and _net("cam").detach_stage2


def _bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()


def test_vwl_l_forward_and_loss(x: torch.Tensor) -> None:
    net = _net("vwl_l")
    out = net(x)
    feat = net.features(x)
    torch.testing.assert_close(out["logits"], hybrid_pool(feat) @ net.classifier.weight.flatten(1).t())
    words = word_assignment(feat, net.codebook)
    torch.testing.assert_close(out["hist_logits"], words.histogram @ net.fc_a.weight.flatten(1).t())
    torch.testing.assert_close(out["word_logits"], feat.mean((2, 3)) @ net.fc_b.weight.flatten(1).t())
    assert torch.equal(out["hard_words"], words.hard) and torch.equal(out["word_labels"], words.presence)
    total, parts = net.loss(out, LABELS)
    expected = (
        _bce(out["logits"], LABELS)
        + _bce(out["hist_logits"], LABELS)
        + _bce(out["word_logits"], out["word_labels"])
        + decorrelation_loss(net.codebook)
    )
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"cls", "hist", "word", "dec", "total"}


def _grad_owners(net: VWLNet, loss: torch.Tensor) -> set[str]:
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads, strict=True) if g is not None and g.abs().sum() > 0}


def test_vwl_l_gradient_routing(x: torch.Tensor) -> None:
    net = _net("vwl_l")
    terms = net.loss_terms(net(x), LABELS)
    deep = {n for n, p in net.named_parameters() if n.startswith(("backbone.layer3.", "backbone.layer4."))}
    assert _grad_owners(net, terms["hist"]) == {"codebook", "fc_a.weight"}
    assert _grad_owners(net, terms["dec"]) == {"codebook"}
    assert _grad_owners(net, terms["word"]) == deep | {"fc_b.weight"}
    assert _grad_owners(net, terms["cls"]) == deep | {"classifier.weight"}
    total, _ = net.loss(net(x), LABELS)
    total.backward()
    assert all(
        p.grad is None for n, p in net.named_parameters() if n.startswith(("backbone.layer1.", "backbone.layer2."))
    )


def test_vwl_m_loss_and_routing(x: torch.Tensor) -> None:
    net = _net("vwl_m")
    assert "codebook" not in dict(net.named_parameters()) and "codebook" in dict(net.named_buffers())
    out = net(x)
    total, parts = net.loss(out, LABELS)
    torch.testing.assert_close(total, _bce(out["logits"], LABELS) + _bce(out["word_logits"], out["word_labels"]))
    assert "hist" in parts and "dec" not in parts  # L_hist logged, not added
    owners = _grad_owners(net, total)
    assert "backbone.layer1.0.conv1.weight" in owners and "backbone.layer2.0.conv1.weight" in owners
    assert "fc_a.weight" not in owners


def test_vwl_m_memory_bank_steps(x: torch.Tensor) -> None:
    net = _net("vwl_m")
    out = net(x)
    net.update_memory_bank(out["features"], out["hard_words"], torch.Generator().manual_seed(0))
    pixels = out["features"].detach().permute(0, 2, 3, 1).reshape(-1, 512)
    assert ((net.codebook[:, None, :] == pixels[None]).all(-1)).any(1).all()  # first step: sampled pixels
    assert int(net.bank_updates) == 1
    before = net.codebook.clone()
    out = net(x)
    assert torch.equal(out["hard_words"], word_assignment(out["features"], before).hard)
    net.update_memory_bank(out["features"], out["hard_words"])
    torch.testing.assert_close(net.codebook, memory_bank_update(before, out["features"], out["hard_words"], 1e-3))
    assert int(net.bank_updates) == 2 and "bank_updates" in net.state_dict()


def test_cam_method_is_gap_classifier(x: torch.Tensor) -> None:
    net = _net("cam")
    out = net(x)
    total, parts = net.loss(out, LABELS)
    assert set(parts) == {"cls", "total"}
    torch.testing.assert_close(total, _bce(out["logits"], LABELS))
    # GAP of the pre-ReLU CAM equals the logits (the classifier is linear, no bias)
    pre = F.conv2d(net.features(x), net.classifier.weight)
    torch.testing.assert_close(pre.mean((2, 3)), out["logits"], rtol=1e-5, atol=1e-5)


def test_cam_is_classifier_per_pixel(x: torch.Tensor) -> None:
    net = _net("vwl_l")
    with torch.no_grad():
        cam = net.forward_cam(x)
        feat = net.features(x)
    assert cam.shape == (2, 4, 4, 4)
    w = net.classifier.weight.detach().flatten(1)
    for n, c, i, j in [(0, 0, 0, 0), (1, 3, 2, 1), (0, 2, 3, 3)]:
        expected = max(0.0, float(w[c] @ feat[n, :, i, j]))
        assert cam[n, c, i, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(cam, torch.einsum("kc,nchw->nkhw", w, feat).relu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,n_new", [("vwl_l", 4), ("vwl_m", 3), ("cam", 1)])
def test_param_groups(method: str, n_new: int) -> None:
    net = _net(method)
    backbone, new = net.param_groups()
    assert len(new) == n_new
    ids_b, ids_n = {id(p) for p in backbone}, {id(p) for p in new}
    assert not ids_b & ids_n
    assert ids_b | ids_n == {id(p) for p in net.parameters() if p.requires_grad}
    assert id(net.backbone.conv1.weight) not in ids_b
