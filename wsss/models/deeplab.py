"""DeepLabV2 (docs/method.md#deeplabv2): an output-stride-8 ResNet, the ASPP classifier, the multi-scale (MSC) wrapper.

* Backbone: a torchvision ResNet with strides (conv1, layer2, layer3, layer4) = (2, 2, 1, 1) and dilations
  (1, 1, 2, 4) for layer1..4: with the stride-2 max-pool the output stride is 8 for every depth (321 → 41).
  BatchNorm is frozen (``norm="fixed"``: running statistics always, BN parameters not trained).
* ``style="caffe"`` turns the torchvision ResNet into the MSRA/Caffe ResNet the COCO-pretrained DeepLab init was
  trained as: the stride of a bottleneck's first block sits in its 1×1 ``conv1`` (not the 3×3), and the max-pool
  uses ``ceil_mode``. Its inputs are BGR, mean-subtracted, unscaled (see :mod:`wsss.data.seg_data`).
* ASPP: four parallel 3×3 convolutions (features → classes) with dilation = padding = 6, 12, 18, 24, with bias,
  weights N(0, 0.01), biases 0; their outputs are summed.
* MSC: the base network runs on the input and on bilinear copies at 0.5 and 0.75 (size ``floor(H·s)``); the scaled
  logits are bilinearly upsampled to the 1.0 logits' size and fused by the elementwise max. In training the model
  returns ``[l_1.0, l_0.5, l_0.75, l_max]`` with each scaled logit at its own resolution (kazuto1011's variant,
  docs/method.md#deeplabv2: each is scored against labels resized to its own size); in eval mode it returns ``l_max``.

Initial weights (``load_init``): a state dict with torchvision ResNet names (``conv1.*``, ``layer1.0.conv1.*``…),
optionally under ``module.``, ``base.`` or ``backbone.`` prefixes, or with kazuto1011's DeepLab names (the converted
COCO init ``deeplabv1_resnet101-coco.pth`` and DeepLabV2 checkpoints under ``base.``), mapped as

* ``layer1.conv1.conv.*`` / ``layer1.conv1.bn.*`` → ``conv1.*`` / ``bn1.*``
* ``layer{k}.block{j}.reduce.{conv,bn}.*`` → ``layer{k-1}.{j-1}.{conv1,bn1}.*``
* ``layer{k}.block{j}.conv3x3.{conv,bn}.*`` → ``layer{k-1}.{j-1}.{conv2,bn2}.*``
* ``layer{k}.block{j}.increase.{conv,bn}.*`` → ``layer{k-1}.{j-1}.{conv3,bn3}.*``
* ``layer{k}.block{j}.{shortcut,proj}.{conv,bn}.*`` → ``layer{k-1}.{j-1}.downsample.{0,1}.*``

(k = 2..5, j = 1..). Classifier keys (``fc.*``, ``aspp.*``, ``classifier.*``) are skipped: the ASPP always starts
from its random init, as in both reference trainers. If any key carries the ``backbone.`` prefix the dict is read
as a whole model (e.g. a trained VWL classifier) and only its ``backbone.*`` entries are used. Any other key
that maps to no backbone parameter is an InputError listing it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from wsss.models.backbone import ResNetStages, build_resnet, load_backbone_state, read_state_dict, tensor_entries
from wsss.runtime.errors import InputError

log = logging.getLogger(__name__)

ASPP_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)
STRIDES = (2, 2, 1, 1)
DILATIONS = (1, 1, 2, 4)
STYLES = ("torchvision", "caffe")
_PREFIXES = ("module.", "base.", "backbone.")
_HEAD_PREFIXES = ("fc.", "aspp.", "classifier.")
_KAZUTO_STEM = re.compile(r"^layer1\.conv1\.(conv|bn)\.(.+)$")
_KAZUTO_BLOCK = re.compile(r"^layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase|shortcut|proj)\.(conv|bn)\.(.+)$")
_BRANCH_INDEX = {"reduce": "1", "conv3x3": "2", "increase": "3"}


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabV2: parallel dilated 3×3 convolutions whose outputs are summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in self.rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


def _halve(n: int, ceil_mode: bool = False) -> int:
    """Output length of a stride-2 op with 'same' padding (k=1/p=0, k=3/p=1, k=7/p=3) on length ``n``."""
    return n // 2 + 1 if ceil_mode else (n - 1) // 2 + 1


class DeepLabV2(nn.Module):
    """OS8 ResNet + ASPP: B×3×H×W → B×C×h×w logits with (h, w) = :meth:`logit_size` (H, W)."""

    def __init__(
        self, backbone: ResNetStages, num_classes: int, rates: Sequence[int] = ASPP_RATES, style: str = "torchvision"
    ) -> None:
        super().__init__()
        if backbone.output_stride != 8:
            raise ValueError(f"DeepLabV2 needs an output-stride-8 backbone, got {backbone.output_stride}")
        self.backbone = backbone
        self.style = style
        self.num_classes = num_classes
        self.aspp = ASPP(backbone.out_channels[3], num_classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(x))

    def logit_size(self, height: int, width: int) -> tuple[int, int]:
        """The logit grid of an H×W input: three stride-2 steps (conv1, max-pool, layer2)."""
        ceil = bool(self.backbone.maxpool.ceil_mode)
        return tuple(_halve(_halve(_halve(n), ceil)) for n in (height, width))  # type: ignore[return-value]

    def param_groups(self, lr_mult_weight: float = 10.0, lr_mult_bias: float = 20.0) -> list[dict[str, Any]]:
        """Optimizer groups (docs/method.md#deeplabv2): trainable backbone at 1×, ASPP weights at ``lr_mult_weight``×,
        ASPP biases at ``lr_mult_bias``× without weight decay. Frozen (BN) parameters are left out."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr_mult": 1.0},
            {"params": [c.weight for c in self.aspp.branches], "lr_mult": float(lr_mult_weight)},
            {"params": [c.bias for c in self.aspp.branches], "lr_mult": float(lr_mult_bias), "weight_decay": 0.0},
        ]


def _scaled_length(n: int, scale: float) -> int:
    """``max(1, int(n·scale))``; outside TorchScript (which has no math.trunc) with math.trunc, the same on these
    non-negative lengths, which torch.export keeps symbolic (``int()`` pins it to the traced size) and can save."""
    if torch.jit.is_scripting():
        return max(1, int(n * scale))
    return max(1, math.trunc(n * scale))


class MSC(nn.Module):
    """Multi-scale wrapper: max fusion over the input scale 1.0 and ``scales`` (see the module doc)."""

    def __init__(self, base: DeepLabV2, scales: Sequence[float] = MSC_SCALES) -> None:
        super().__init__()
        self.base = base
        self.scales = [float(s) for s in scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # written for TorchScript too (wsss.outputs.export scripts it around a traced base network)
        logits = self.base(x)
        size = logits.shape[-2:]
        pyramid: list[torch.Tensor] = []
        for s in self.scales:
            h, w = _scaled_length(x.shape[-2], s), _scaled_length(x.shape[-1], s)
            pyramid.append(self.base(F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)))
        fusion = [logits]
        for p in pyramid:
            fusion.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))  # noqa: PERF401
        fused = torch.stack(fusion).amax(dim=0)
        if self.training:
            return [logits] + pyramid + [fused]
        return fused

    def param_groups(self, lr_mult_weight: float = 10.0, lr_mult_bias: float = 20.0) -> list[dict[str, Any]]:
        """The base network's groups (MSC adds no parameters)."""
        return self.base.param_groups(lr_mult_weight, lr_mult_bias)


# TorchScript reads class annotations unevaluated (this module has postponed annotations): a real type lets it
# type ``scales`` when the list is empty too.
MSC.__annotations__["scales"] = list[float]


def _caffe_style(backbone: ResNetStages) -> None:
    """Stride in the first 1×1 conv of each strided bottleneck layer, ceil-mode max-pool (MSRA/Caffe ResNet)."""
    backbone.maxpool.ceil_mode = True
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        block = layer[0]
        if not isinstance(block, tv_resnet.Bottleneck):
            raise ValueError("style 'caffe' needs a bottleneck ResNet (depth 50 or 101)")
        stride = block.conv2.stride
        block.conv1.stride, block.conv2.stride = stride, (1, 1)


def _map_key(key: str) -> str | None:
    """A backbone key in torchvision naming, or None for classifier keys to skip; unknown names pass through."""
    if key.startswith(_HEAD_PREFIXES):
        return None
    m = _KAZUTO_STEM.match(key)
    if m:
        return f"{'conv1' if m.group(1) == 'conv' else 'bn1'}.{m.group(2)}"
    m = _KAZUTO_BLOCK.match(key)
    if m:
        layer, block, branch, kind, rest = m.groups()
        prefix = f"layer{int(layer) - 1}.{int(block) - 1}."
        if branch in ("shortcut", "proj"):
            return prefix + f"downsample.{0 if kind == 'conv' else 1}.{rest}"
        return prefix + f"{kind}{_BRANCH_INDEX[branch]}.{rest}"
    return key


def map_init_state(state: Mapping[str, Any], source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Backbone state in torchvision naming from a torchvision/prefixed/kazuto1011 state dict (module doc)."""
    entries = tensor_entries(state, source)
    while entries and all(k.startswith("module.") for k in entries):
        entries = {k[len("module.") :]: v for k, v in entries.items()}
    if any(k.startswith("backbone.") for k in entries):
        dropped = [k for k in entries if not k.startswith("backbone.")]
        if dropped:
            log.info(
                "%s: using the backbone.* entries only (skipping %d others, e.g. %s)", source, len(dropped), dropped[0]
            )
        entries = {k: v for k, v in entries.items() if k.startswith("backbone.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in entries.items():
        stripped = key
        while stripped.startswith(_PREFIXES):
            stripped = stripped.split(".", 1)[1]
        mapped = _map_key(stripped)
        if mapped is not None:
            out[mapped] = value
    return out


def load_init(model: DeepLabV2, path: str | os.PathLike[str], sha256: str | None = None) -> None:
    """Load initial backbone weights from a local state-dict file (read with ``weights_only=True``).

    The file must match ``sha256`` when given; its keys are mapped by :func:`map_init_state`; every backbone
    parameter and buffer must be present and no unmapped key may remain, else InputError naming the file."""
    path = Path(path)
    state = read_state_dict(path, sha256, "DeepLab init weights")
    mapped = map_init_state(state, path)
    known = set(model.backbone.state_dict())
    unmapped = sorted(k for k in mapped if k not in known)
    if unmapped:
        raise InputError(
            path,
            f"{len(unmapped)} keys map to no ResNet-{model.backbone.depth} parameter "
            f"(e.g. {', '.join(unmapped[:5])}); accepted: torchvision names, optionally prefixed "
            f"by module./base./backbone., or kazuto1011 DeepLab names",
        )
    load_backbone_state(model.backbone, mapped, path)


def build_deeplab(
    num_classes: int,
    depth: int = 101,
    weights: str = "imagenet",
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    norm: str = "fixed",
    style: str = "torchvision",
    rates: Sequence[int] = ASPP_RATES,
    msc_scales: Sequence[float] = MSC_SCALES,
) -> MSC:
    """DeepLabV2-MSC on a ResNet-``depth``; ``weights`` = ``imagenet`` (torchvision), ``none`` or a state-dict path.

    ``norm="fixed"`` freezes BatchNorm (running statistics, parameters not trained; the recipe for pretrained
    weights); ``"batch"`` trains ordinary BatchNorm (only sensible from scratch). The stem is trained (1×)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "caffe" and weights == "imagenet":
        raise ValueError("style 'caffe' is for converted Caffe weights (a local file) or none, not torchvision's")
    backbone = build_resnet(
        depth,
        strides=STRIDES,
        dilations=DILATIONS,
        weights="imagenet" if weights == "imagenet" else "none",
        cache_dir=cache_dir,
        norm=norm,
        freeze_stem=False,
    )
    if style == "caffe":
        _caffe_style(backbone)
    base = DeepLabV2(backbone, num_classes, rates, style)
    if weights not in ("imagenet", "none"):
        load_init(base, weights, sha256)
    if norm == "fixed":
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                for p in module.parameters():
                    p.requires_grad_(False)
    return MSC(base, msc_scales)


__all__ = [
    "ASPP",
    "ASPP_RATES",
    "MSC",
    "MSC_SCALES",
    "STYLES",
    "DeepLabV2",
    "build_deeplab",
    "load_init",
    "map_init_state",
]
