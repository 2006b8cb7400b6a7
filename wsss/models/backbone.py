"""Torchvision ResNets as 4-stage feature extractors with configurable strides/dilations and fixed BatchNorm.

IRN's classification backbone (docs/method.md#backbone): strides (conv1, layer2, layer3, layer4) = (2, 2, 2, 1)
plus the stride-2 max-pool give output stride 16; every BatchNorm normalises with its running (ImageNet) statistics
even in train mode; conv1/bn1 are frozen. Parameter names equal torchvision's (minus ``fc``), so torchvision
checkpoints load as they are.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from wsss.runtime.errors import InputError


def _resnet10(weights: None = None, **kwargs: Any) -> tv_resnet.ResNet:
    """ResNet-10: torchvision's ResNet with one BasicBlock per layer (about half ResNet-18's compute). It has no
    published ImageNet weights; it exists for CPU runs trained from scratch (the synthetic run)."""
    return tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], **kwargs)


_ARCHS = {
    10: (_resnet10, None),
    18: (tv_resnet.resnet18, tv_resnet.ResNet18_Weights.IMAGENET1K_V1),
    34: (tv_resnet.resnet34, tv_resnet.ResNet34_Weights.IMAGENET1K_V1),
    50: (tv_resnet.resnet50, tv_resnet.ResNet50_Weights.IMAGENET1K_V1),
    101: (tv_resnet.resnet101, tv_resnet.ResNet101_Weights.IMAGENET1K_V1),
}


class FixedBatchNorm(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them.

    Unlike ``torchvision.ops.FrozenBatchNorm2d`` the affine weight and bias stay trainable parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, momentum=0.0, eps=self.eps
        )


class ResNetStages(nn.Module):
    """A ResNet without ``fc``, read as four stages.

    stage1 = conv1+bn1+relu+maxpool+layer1, stage2..4 = layer2..4. ``out_channels[i]`` is the channel count of
    stage i+1's output; ``output_stride`` is the total downsampling factor of stage4.
    """

    def __init__(self, net: tv_resnet.ResNet, depth: int, output_stride: int) -> None:
        super().__init__()
        self.depth = depth
        self.output_stride = output_stride
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.out_channels: tuple[int, int, int, int] = (
            64 * expansion,
            128 * expansion,
            256 * expansion,
            512 * expansion,
        )

    def stage(self, index: int) -> nn.Module:
        """Stage ``index`` (1..4) as a module sharing this network's parameters (for parameter selection)."""
        if index == 1:
            return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool, self.layer1)
        if index in (2, 3, 4):
            return getattr(self, f"layer{index}")
        raise ValueError(f"stage index must be 1..4, got {index}")

    def forward_stages(self, x: torch.Tensor, detach_after: int | None = None) -> list[torch.Tensor]:
        """Outputs of the four stages; with ``detach_after=k`` the output of stage k is cut from the graph,
        so stages 1..k receive no gradient (IRN/VWL-L detach after stage 2)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for k, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            x = layer(x)
            if detach_after == k:
                x = x.detach()
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor, detach_after: int | None = None) -> torch.Tensor:
        """The stage-4 feature map (stride ``output_stride``)."""
        return self.forward_stages(x, detach_after)[-1]


def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    conv.stride = (stride, stride)
    if conv.kernel_size[0] > 1:
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2


def _configure_layer(layer: nn.Sequential, stride: int, dilation: int) -> None:
    """Give the first block ``stride`` (3×3 conv and the 1×1 shortcut) and every 3×3 conv ``dilation``.

    Every block of the layer, the first included, uses the dilation (DeepLab convention)."""
    for j, block in enumerate(layer):
        s = stride if j == 0 else 1
        strided = block.conv2 if isinstance(block, tv_resnet.Bottleneck) else block.conv1
        for conv in (block.conv1, block.conv2, getattr(block, "conv3", None)):
            if conv is not None:
                _set_conv(conv, s if conv is strided else 1, dilation)
        if block.downsample is not None:
            block.downsample[0].stride = (s, s)
        elif s != 1:
            raise ValueError("stride on a block without a shortcut projection is not supported")
        block.stride = s


def read_state_dict(path: str | os.PathLike[str], sha256: str | None, what: str) -> Mapping[str, Any]:
    """The mapping stored in a local weights file, read with ``weights_only=True`` (never unpickled).

    ``sha256``, when given, must match the file's digest. ``what`` names the file's role in the errors
    (e.g. "backbone weights"): a missing, mismatching or unreadable file, or one that holds no mapping, is an
    InputError naming the file. The entries are checked by the caller's loader."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file is missing")
    if sha256 is not None:
        with open(path, "rb") as fh:
            got = hashlib.file_digest(fh, "sha256").hexdigest()
        if got.lower() != sha256.lower():
            raise InputError(path, f"sha256 mismatch: expected {sha256}, got {got}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise InputError(path, f"cannot read {what} ({type(err).__name__}: {first_line})") from None
    if not isinstance(state, Mapping):
        raise InputError(path, f"expected a state dict, got {type(state).__name__}")
    return state


def tensor_entries(state: Mapping[str, object], source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}`` and check every entry is a named tensor."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(source, f"not a state dict of tensors (entry {key!r} is {type(value).__name__})")
    return dict(state)


def _clean_state_dict(state: Mapping[str, object], source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """:func:`tensor_entries`, then strip ``module.`` prefixes and drop ``fc.*``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensor_entries(state, source).items():
        while key.startswith("module."):
            key = key[len("module.") :]
        if not key.startswith("fc."):
            out[key] = value
    return out


def load_backbone_state(model: ResNetStages, state: Mapping[str, object], source: str | os.PathLike[str]) -> None:
    """Load a (torchvision-named) ResNet state dict strictly, ignoring ``fc.*`` and ``module.`` prefixes.

    Missing, unexpected or wrongly shaped entries raise InputError naming ``source``."""
    clean = _clean_state_dict(state, source)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in clean and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in clean if k not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
        raise InputError(source, f"not a ResNet-{model.depth} checkpoint: " + "; ".join(parts))
    bad = [k for k, v in clean.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(
            source,
            f"{len(bad)} tensors have the wrong shape (e.g. {k}: "
            f"{tuple(clean[k].shape)} vs {tuple(expected[k].shape)})",
        )
    model.load_state_dict(clean, strict=False)


def build_resnet(
    depth: int,
    strides: Sequence[int] = (2, 2, 2, 1),
    dilations: Sequence[int] = (1, 1, 1, 1),
    weights: str = "none",
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    norm: str = "fixed",
    freeze_stem: bool = True,
) -> ResNetStages:
    """A torchvision ResNet-``depth`` (10/18/34/50/101; 10 = one block per layer) as :class:`ResNetStages`.

    strides: (conv1, layer2, layer3, layer4); the max-pool always has stride 2, so the output stride is
        ``2 * prod(strides)`` (16 for the default).
    dilations: for layer1..4; every 3×3 conv of a layer gets that dilation (and matching padding).
    weights: ``"none"`` (torchvision random init; seed it yourself), ``"imagenet"`` (torchvision IMAGENET1K_V1,
        downloaded into ``cache_dir`` or torch hub's default directory), or a path to a state dict (read with
        ``weights_only=True``; checked against ``sha256`` when given; ``module.`` prefixes stripped, ``fc.*``
        dropped, the rest loaded strictly).
    norm: ``"fixed"`` (running statistics always, docs/method.md#backbone) or ``"batch"`` (BatchNorm2d, batch statistics
        in train mode; for training from scratch).
    freeze_stem: conv1 and bn1 get ``requires_grad=False`` (docs/method.md#backbone).
    """
    if depth not in _ARCHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_ARCHS)}, got {depth}")
    if len(strides) != 4 or len(dilations) != 4:
        raise ValueError("strides and dilations need 4 entries: (conv1, layer2, layer3, layer4) / (layer1..4)")
    if norm not in ("fixed", "batch"):
        raise ValueError(f"norm must be 'fixed' or 'batch', got {norm!r}")
    builder, imagenet = _ARCHS[depth]
    net = builder(weights=None, norm_layer=FixedBatchNorm if norm == "fixed" else nn.BatchNorm2d)
    net.conv1.stride = (strides[0], strides[0])
    for i, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        _configure_layer(layer, 1 if i == 0 else int(strides[i]), int(dilations[i]))
    output_stride = 2 * int(strides[0]) * int(strides[1]) * int(strides[2]) * int(strides[3])
    model = ResNetStages(net, depth, output_stride)

    if weights == "imagenet":
        if imagenet is None:
            raise InputError(f"ResNet-{depth}", "has no ImageNet weights; use pretrained: none (or a local file)")
        try:
            state = imagenet.get_state_dict(
                model_dir=None if cache_dir is None else str(cache_dir),
                progress=False,
                check_hash=True,
                map_location="cpu",
                weights_only=True,
            )
        except (OSError, RuntimeError) as err:
            raise InputError(
                imagenet.url,
                f"cannot fetch ImageNet weights ({err}); without internet, put the "
                f"file in cache_dir or pass a local path as weights",
            ) from None
        load_backbone_state(model, state, imagenet.url)
    elif weights != "none":
        path = Path(weights)
        load_backbone_state(model, read_state_dict(path, sha256, "backbone weights"), path)

    if freeze_stem:
        for p in (*model.conv1.parameters(), *model.bn1.parameters()):
            p.requires_grad_(False)
    return model


# ------------------------------------------------------------------ initialising from the run's trained classifier
FROM_CLS = "from_cls"  # config value: initialise a backbone from the run's trained classifier


def classifier_backbone_state(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` entries of a trained classifier's state dict (``VWLNet``), prefix removed."""
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith("backbone."):
            out[key[len("backbone.") :]] = value
    if not out:
        raise InputError(source, "no backbone.* tensors: not a trained classifier state dict")
    return out


def build_weights(pretrained: str) -> str:
    """The ``weights`` to build a backbone with for config value ``pretrained``: none for ``from_cls`` (the
    classifier's weights are loaded next, :func:`init_from_classifier`), else the value itself."""
    return "none" if pretrained == FROM_CLS else pretrained


def init_from_classifier(
    backbone: ResNetStages, pretrained: str, cls_model: str | os.PathLike[str] | None, section: str
) -> None:
    """For ``pretrained: from_cls`` load the trained classifier's backbone weights and BatchNorm statistics
    (``cls_model``, a state dict read with ``weights_only=True``) into ``backbone``, strictly; no-op otherwise.
    The one place where IRNet and DeepLab start from the classifier."""
    if pretrained != FROM_CLS:
        return
    if cls_model is None:
        raise InputError(f"config: {section}.pretrained", "from_cls needs the trained classifier (cls/model.pt)")
    state = tensor_entries(read_state_dict(cls_model, None, "trained classifier"), cls_model)
    load_backbone_state(backbone, classifier_backbone_state(state, str(cls_model)), str(cls_model))


__all__ = [
    "FROM_CLS",
    "FixedBatchNorm",
    "ResNetStages",
    "build_resnet",
    "build_weights",
    "classifier_backbone_state",
    "init_from_classifier",
    "load_backbone_state",
    "read_state_dict",
]
