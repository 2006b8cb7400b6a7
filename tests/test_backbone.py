"""ResNet backbone: output stride, fixed BatchNorm, frozen stem, dilations, local weights with checksums."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from wsss.models.backbone import FixedBatchNorm, build_resnet
from wsss.runtime.errors import InputError


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(0)
    return build_resnet(18)


def _randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics, so that batch statistics and running statistics differ."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("depth,channels", [(10, 512), (18, 512), (50, 2048)])
def test_output_stride_16(depth: int, channels: int) -> None:
    torch.manual_seed(0)
    net = build_resnet(depth)
    outs = net.forward_stages(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16), (8, 8), (4, 4), (4, 4)]
    assert [o.shape[1] for o in outs] == list(net.out_channels)
    assert net.out_channels[-1] == channels and net.output_stride == 16
    # layer4 keeps stride 1 and no dilation in the default recipe, including the shortcut projection
    assert net.layer4[0].downsample[0].stride == (1, 1)
    assert all(m.dilation == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))


def test_resnet10_is_one_basic_block_per_layer_without_imagenet_weights() -> None:
    net = build_resnet(10)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    r18 = build_resnet(18)
    # exactly ResNet-18 minus the second block of each layer
    second_blocks = sum(p.numel() for i in range(1, 5) for p in getattr(r18, f"layer{i}")[1].parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in r18.parameters()) - second_blocks
    with pytest.raises(InputError, match="ResNet-10: has no ImageNet weights"):
        build_resnet(10, weights="imagenet")


def test_dilations_keep_resolution() -> None:
    torch.manual_seed(0)
    net = build_resnet(50, strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4))
    assert net.output_stride == 8
    assert tuple(net(torch.randn(1, 3, 64, 64)).shape[-2:]) == (8, 8)
    for block in net.layer4:
        assert block.conv2.dilation == (4, 4) and block.conv2.padding == (4, 4)
        assert block.conv1.dilation == (1, 1) and block.conv1.padding == (0, 0)
    assert net.layer3[0].conv2.stride == (1, 1) and net.layer3[0].downsample[0].stride == (1, 1)


def test_dilation_in_basic_block() -> None:
    torch.manual_seed(0)
    net = build_resnet(18, strides=(2, 2, 1, 1), dilations=(1, 1, 2, 2))
    assert tuple(net(torch.randn(1, 3, 64, 64)).shape[-2:]) == (8, 8)
    assert net.layer4[1].conv2.dilation == (2, 2) and net.layer4[1].conv2.padding == (2, 2)


def test_fixed_bn_uses_running_stats_in_train_mode(r18: nn.Module) -> None:
    _randomise_bn(r18)
    assert all(type(m) is FixedBatchNorm for m in r18.modules() if isinstance(m, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in r18.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    r18.train()
    y_train = r18(x)
    r18.eval()
    y_eval = r18(x)
    assert torch.equal(y_train, y_eval)
    for k, v in r18.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats and counters untouched
    # and it differs from ordinary BN in train mode, which would use batch statistics
    plain = build_resnet(18, norm="batch")
    plain.load_state_dict(r18.state_dict())
    plain.train()
    assert not torch.allclose(plain(x), y_eval)


def test_stem_frozen_rest_trainable(r18: nn.Module) -> None:
    frozen = {n for n, p in r18.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.weight", "bn1.weight", "bn1.bias"}
    assert r18.layer1[0].bn1.weight.requires_grad and r18.layer4[1].bn2.bias.requires_grad


def test_state_dict_keys_are_torchvision_without_fc(r18: nn.Module) -> None:
    tv_keys = set(resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(r18.state_dict()) == tv_keys


def test_stage_modules_partition_parameters(r18: nn.Module) -> None:
    ids = [id(p) for i in range(1, 5) for p in r18.stage(i).parameters()]
    assert len(ids) == len(set(ids)) == len(list(r18.parameters()))


def _save_torchvision_checkpoint(path, prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    state = resnet18().state_dict()  # includes fc.*, which must be dropped on load
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return state


def test_local_weights_with_checksum(tmp_path) -> None:
    path = tmp_path / "r18.pth"
    state = _save_torchvision_checkpoint(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    net = build_resnet(18, weights=str(path), sha256=digest)
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(net.bn1.running_var, state["bn1.running_var"])
    with pytest.raises(InputError, match="sha256 mismatch") as err:
        build_resnet(18, weights=str(path), sha256="0" * 64)
    assert str(path) in str(err.value)


def test_module_prefix_is_stripped(tmp_path) -> None:
    path = tmp_path / "dp.pth"
    state = _save_torchvision_checkpoint(path, prefix="module.")
    net = build_resnet(18, weights=str(path))
    assert torch.equal(net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_wrong_checkpoints_are_input_errors(tmp_path) -> None:
    missing = tmp_path / "absent.pth"
    with pytest.raises(InputError, match="missing"):
        build_resnet(18, weights=str(missing))
    partial = tmp_path / "partial.pth"
    state = resnet18().state_dict()
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, partial)
    with pytest.raises(InputError, match="layer2.0.conv1.weight") as err:
        build_resnet(18, weights=str(partial))
    assert "extra.weight" in str(err.value)
    wrong_depth = tmp_path / "r18_for_r34.pth"
    torch.save(resnet18().state_dict(), wrong_depth)
    with pytest.raises(InputError, match="ResNet-34"):
        build_resnet(34, weights=str(wrong_depth))
    misshapen = tmp_path / "misshapen.pth"
    state = resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    torch.save(state, misshapen)
    with pytest.raises(InputError, match="wrong shape"):
        build_resnet(18, weights=str(misshapen))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_resnet(18, weights=str(garbage))


def test_imagenet_weights_from_cache_dir(tmp_path) -> None:
    """The torchvision file already in cache_dir is used as is (no download in tests)."""
    state = _save_torchvision_checkpoint(tmp_path / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1])
    net = build_resnet(18, weights="imagenet", cache_dir=str(tmp_path))
    assert torch.equal(net.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])
