"""DeepLabV2: output stride, ASPP, MSC fusion and training outputs, parameter groups, frozen BN, init loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.engine.train import build_optimizer
from wsss.models.deeplab import ASPP, MSC, build_deeplab, map_init_state
from wsss.runtime.errors import InputError


@pytest.fixture(scope="module")
def msc() -> MSC:
    torch.manual_seed(0)
    return build_deeplab(3, depth=18, weights="none")


def test_output_stride_8(msc: MSC) -> None:
    msc.eval()
    with torch.no_grad():
        for h, w in [(65, 65), (64, 71), (33, 40)]:
            out = msc.base(torch.randn(1, 3, h, w))
            assert tuple(out.shape) == (1, 3, *msc.base.logit_size(h, w))
        assert msc.base.logit_size(65, 65) == (9, 9) and msc.base.logit_size(321, 321) == (41, 41)
    layer3, layer4 = msc.base.backbone.layer3, msc.base.backbone.layer4
    assert layer3[0].conv1.stride == (1, 1) and layer3[1].conv2.dilation == (2, 2)
    assert layer4[0].conv1.dilation == (4, 4) and layer4[1].conv2.padding == (4, 4)


def test_caffe_style_moves_the_stride_to_the_1x1_conv() -> None:
    model = build_deeplab(2, depth=50, weights="none", style="caffe")
    block = model.base.backbone.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert model.base.backbone.maxpool.ceil_mode
    model.eval()
    with torch.no_grad():
        for h, w in [(32, 32), (33, 26)]:
            assert tuple(model.base(torch.randn(1, 3, h, w)).shape[-2:]) == model.base.logit_size(h, w)
    assert model.base.logit_size(64, 64) == (9, 9)  # ceil-mode pool: 64 → 32 → 17 → 9 (torchvision style: 8)
    with pytest.raises(ValueError, match="caffe"):
        build_deeplab(2, depth=50, weights="imagenet", style="caffe")


def test_aspp_shapes_init_and_branch_sum() -> None:
    torch.manual_seed(0)
    aspp = ASPP(32, 5)
    assert [(c.dilation, c.padding, c.kernel_size) for c in aspp.branches] == [
        ((r, r), (r, r), (3, 3)) for r in (6, 12, 18, 24)
    ]
    assert all(c.bias is not None and torch.all(c.bias == 0) for c in aspp.branches)
    weights = torch.cat([c.weight.flatten() for c in aspp.branches])
    assert abs(weights.std().item() - 0.01) < 5e-4 and abs(weights.mean().item()) < 5e-4
    x = torch.randn(2, 32, 9, 11)
    with torch.no_grad():
        for c in aspp.branches:
            c.bias.uniform_(-1, 1)
        out = aspp(x)
        assert out.shape == (2, 5, 9, 11)
        torch.testing.assert_close(out, sum(c(x) for c in aspp.branches))
        for c in list(aspp.branches)[:3]:
            c.weight.zero_()
            c.bias.zero_()
        torch.testing.assert_close(aspp(x), aspp.branches[3](x))


def test_msc_eval_is_the_max_of_upsampled_scaled_logits(msc: MSC) -> None:
    msc.eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        fused = msc(x)
        l1 = msc.base(x)
        l05 = msc.base(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
        l075 = msc.base(F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False))
        up = [F.interpolate(t, size=(9, 9), mode="bilinear", align_corners=False) for t in (l05, l075)]
        expected = torch.maximum(torch.maximum(l1, up[0]), up[1])
    torch.testing.assert_close(fused, expected)
    assert (fused > l1).any(), "the smaller scales must win somewhere, else the test proves nothing"


def test_msc_training_returns_four_outputs(msc: MSC) -> None:
    msc.train()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        outs = msc(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 9, 9), (1, 3, 4, 4), (1, 3, 6, 6), (1, 3, 9, 9)]
    up = [F.interpolate(o, size=(9, 9), mode="bilinear", align_corners=False) for o in outs[1:3]]
    torch.testing.assert_close(outs[3], torch.stack([outs[0], *up]).amax(0))
    msc.eval()


def test_param_groups_hold_aspp_weights_and_biases_with_their_multipliers(msc: MSC) -> None:
    groups = msc.param_groups(10.0, 20.0)
    ids = [{id(p) for p in g["params"]} for g in groups]
    aspp = msc.base.aspp.branches
    assert ids[1] == {id(c.weight) for c in aspp} and groups[1]["lr_mult"] == 10.0
    assert ids[2] == {id(c.bias) for c in aspp} and groups[2]["lr_mult"] == 20.0 and groups[2]["weight_decay"] == 0
    bn = {id(p) for m in msc.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    backbone = {id(p) for p in msc.base.backbone.parameters()} - bn
    assert ids[0] == backbone and groups[0]["lr_mult"] == 1.0
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2])
    trainable = {id(p) for p in msc.parameters() if p.requires_grad}
    assert ids[0] | ids[1] | ids[2] == trainable and not (trainable & bn)
    assert id(msc.base.backbone.conv1.weight) in ids[0], "the stem is trained (1x), as in kazuto1011's recipe"


def test_groups_really_train_at_their_rates() -> None:
    """One plain SGD step moves each parameter by lr × multiplier × gradient (the ASPP bias too)."""
    torch.manual_seed(1)
    model = build_deeplab(3, depth=18, weights="none")
    lr = 1e-3
    opt = build_optimizer(model.param_groups(10.0, 20.0), "sgd", lr, weight_decay=5e-4, momentum=0.0)
    assert [g["initial_lr"] for g in opt.param_groups] == pytest.approx([lr, 10 * lr, 20 * lr])
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4, 0.0]
    model.train()
    labels = torch.randint(0, 3, (1, 5, 5))
    outs = model(torch.randn(1, 3, 33, 33))
    F.cross_entropy(outs[0], labels).backward()
    checks = [
        (model.base.aspp.branches[0].bias, 20 * lr, 0.0),
        (model.base.aspp.branches[1].weight, 10 * lr, 5e-4),
        (model.base.backbone.layer4[0].conv1.weight, lr, 5e-4),
    ]
    before = [(p.detach().clone(), p.grad.clone()) for p, _, _ in checks]
    opt.step()
    for (p, rate, wd), (old, grad) in zip(checks, before):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(p.detach(), old - rate * (grad + wd * old))


def test_frozen_batchnorm(msc: MSC) -> None:
    bn = [m for m in msc.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bn]
    with torch.no_grad():
        m0 = bn[0]
        m0.running_mean.uniform_(-0.5, 0.5)
        m0.running_var.uniform_(0.5, 2.0)
        stats[0] = (m0.running_mean.clone(), m0.running_var.clone())
        x = torch.randn(1, 3, 33, 33) * 3 + 1
        msc.train()
        train_out = msc.base(x)
        msc.eval()
        eval_out = msc.base(x)
    torch.testing.assert_close(train_out, eval_out)  # train mode normalises with the running statistics too
    for m, (mean, var) in zip(bn, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert not m.weight.requires_grad and not m.bias.requires_grad
    opt = build_optimizer(msc.param_groups(), "sgd", 1e-3, 5e-4, 0.9)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for m in bn for p in m.parameters()}


def _torchvision_state(seed: int, depth: int = 18) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_deeplab(3, depth=depth, weights="none")
    return {k: v.clone() for k, v in model.base.backbone.state_dict().items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_init_from_module_prefixed_torchvision_state(tmp_path: Path) -> None:
    source = _torchvision_state(7)
    state = {f"module.{k}": v for k, v in source.items()}
    state["module.fc.weight"] = torch.zeros(1000, 512)  # classifier keys are skipped
    path = tmp_path / "init.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = build_deeplab(3, depth=18, weights=str(path))
    got = model.base.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in source.items())
    aspp = model.base.aspp.branches[0]
    assert abs(aspp.weight.std().item() - 0.01) < 1e-3 and aspp.bias.abs().sum() == 0  # the head stays random
    model2 = build_deeplab(3, depth=18, weights=str(path), sha256=_sha(path))
    assert torch.equal(model2.base.backbone.conv1.weight, source["conv1.weight"])


def test_load_init_rejects_bad_checksum_unmapped_keys_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "init.pth"
    state = _torchvision_state(3)
    torch.save(state, path)
    with pytest.raises(InputError, match="sha256 mismatch"):
        build_deeplab(3, depth=18, weights=str(path), sha256="0" * 64)
    state["decoder.conv.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(InputError, match="decoder.conv.weight"):
        build_deeplab(3, depth=18, weights=str(path))
    del state["decoder.conv.weight"], state["layer4.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(InputError, match="missing"):
        build_deeplab(3, depth=18, weights=str(path))
    with pytest.raises(InputError, match="missing"):
        build_deeplab(3, depth=18, weights=str(tmp_path / "absent.pth"))


def test_whole_model_with_backbone_prefix_uses_only_the_backbone(tmp_path: Path) -> None:
    source = _torchvision_state(5)
    state = {f"backbone.{k}": v for k, v in source.items()} | {
        "classifier.weight": torch.zeros(4, 512, 1, 1),
        "codebook": torch.zeros(8, 512),
    }
    path = tmp_path / "cls.pt"
    torch.save(state, path)
    model = build_deeplab(3, depth=18, weights=str(path))
    assert torch.equal(model.base.backbone.layer3[1].conv2.weight, source["layer3.1.conv2.weight"])


@pytest.mark.parametrize(
    "kazuto, torchvision",
    [
        ("layer1.conv1.conv.weight", "conv1.weight"),
        ("layer1.conv1.bn.running_var", "bn1.running_var"),
        ("layer2.block1.reduce.conv.weight", "layer1.0.conv1.weight"),
        ("layer2.block1.shortcut.bn.running_mean", "layer1.0.downsample.1.running_mean"),
        ("layer3.block4.conv3x3.bn.bias", "layer2.3.bn2.bias"),
        ("base.layer4.block23.increase.conv.weight", "layer3.22.conv3.weight"),
        ("module.base.layer5.block1.proj.conv.weight", "layer4.0.downsample.0.weight"),
    ],
)
def test_kazuto_names_map_to_torchvision(kazuto: str, torchvision: str) -> None:
    value = torch.zeros(1)
    assert map_init_state({kazuto: value, "fc.weight": value, "aspp.c0.bias": value}, "x") == {torchvision: value}


def test_kazuto_named_checkpoint_loads_completely(tmp_path: Path) -> None:
    """A ResNet-50 state dict renamed to kazuto1011's scheme (base. prefix) loads into every backbone tensor."""
    torch.manual_seed(2)
    ref = build_deeplab(3, depth=50, weights="none", style="caffe").base.backbone.state_dict()
    names = {
        "conv1": "reduce",
        "bn1": "reduce",
        "conv2": "conv3x3",
        "bn2": "conv3x3",
        "conv3": "increase",
        "bn3": "increase",
    }
    renamed = {}
    for key, value in ref.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            new = f"layer1.conv1.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"
        elif parts[2] == "downsample":
            new = f"layer{int(parts[0][5]) + 1}.block{int(parts[1]) + 1}.shortcut.{'conv' if parts[3] == '0' else 'bn'}"
            new += "." + parts[4]
        else:
            kind = "conv" if parts[2].startswith("conv") else "bn"
            new = f"layer{int(parts[0][5]) + 1}.block{int(parts[1]) + 1}.{names[parts[2]]}.{kind}.{parts[3]}"
        renamed[f"base.{new}"] = value + 1.0 if value.is_floating_point() else value
    renamed["base.aspp.c0.weight"] = torch.zeros(21, 2048, 3, 3)
    path = tmp_path / "kazuto.pth"
    torch.save(renamed, path)
    model = build_deeplab(3, depth=50, weights=str(path), sha256=_sha(path), style="caffe")
    got = model.base.backbone.state_dict()
    assert all(torch.equal(got[k], v + 1.0) for k, v in ref.items() if v.is_floating_point())
