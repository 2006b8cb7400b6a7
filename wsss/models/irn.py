"""IRNet (docs/method.md#irnet-training): a frozen ResNet with a class-boundary and a displacement branch at stride 4.

The backbone (strides (2, 2, 2, 1), output stride 16) is read as five stages:
s1 = conv1+bn1+relu+maxpool (/4), s2 = layer1 (/4), s3 = layer2 (/8), s4 = layer3 (/16), s5 = layer4 (/16).
It is frozen: no parameter requires grad, it stays in eval mode whatever ``train()`` is called with (its
BatchNorm statistics never change) and its features are computed without a graph.

Boundary branch: each stage → 1×1 conv (32 ch, no bias) + GroupNorm(4) (+ bilinear ×2 for s3, ×4 for s4/s5) + ReLU,
cropped to the s2 size, concatenated (160 ch) → 1×1 conv with bias → 1 logit per pixel.

Displacement branch: s1 → 64 (GN8), s2 → 128 (GN16), s3 → 256 (GN16), s4/s5 → 256 (GN16, ×2) at /8;
concat(s3, s4, s5) → 256 (GN16, ×2) at /4; concat(s1, s2, that) → 256 (GN16) + ReLU → 1×1 conv to 2 (no bias).
IRN's MeanShift layer (a stored mean subtracted in eval mode) serves instance segmentation only and is left out.

Upsampling is bilinear with align_corners=False and happens after GroupNorm, before ReLU, as in IRN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import ResNetStages

EDGE_CHANNELS = 32


class _Unit(nn.Module):
    """1×1 conv (no bias) → GroupNorm → optional bilinear upsampling → ReLU."""

    def __init__(self, cin: int, cout: int, groups: int, scale: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.GroupNorm(groups, cout)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.scale != 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.relu(x)


def _crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x[..., : like.shape[-2], : like.shape[-1]]


class IRNet(nn.Module):
    """Boundary and displacement branches on a frozen :class:`ResNetStages` of output stride 16."""

    def __init__(self, backbone: ResNetStages) -> None:
        super().__init__()
        if backbone.output_stride != 16:
            raise ValueError(f"IRNet needs an output-stride-16 backbone, got {backbone.output_stride}")
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        c1 = backbone.conv1.out_channels
        c2, c3, c4, c5 = backbone.out_channels
        e = EDGE_CHANNELS
        self.edge1 = _Unit(c1, e, 4)
        self.edge2 = _Unit(c2, e, 4)
        self.edge3 = _Unit(c3, e, 4, scale=2)
        self.edge4 = _Unit(c4, e, 4, scale=4)
        self.edge5 = _Unit(c5, e, 4, scale=4)
        self.edge_out = nn.Conv2d(5 * e, 1, 1, bias=True)
        self.disp1 = _Unit(c1, 64, 8)
        self.disp2 = _Unit(c2, 128, 16)
        self.disp3 = _Unit(c3, 256, 16)
        self.disp4 = _Unit(c4, 256, 16, scale=2)
        self.disp5 = _Unit(c5, 256, 16, scale=2)
        self.disp6 = _Unit(768, 256, 16, scale=2)
        self.disp7 = _Unit(64 + 128 + 256, 256, 16)
        self.disp_out = nn.Conv2d(256, 2, 1, bias=False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> IRNet:
        """Set the branches' mode; the backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def edge_modules(self) -> list[nn.Module]:
        return [self.edge1, self.edge2, self.edge3, self.edge4, self.edge5, self.edge_out]

    def displacement_modules(self) -> list[nn.Module]:
        return [self.disp1, self.disp2, self.disp3, self.disp4, self.disp5, self.disp6, self.disp7, self.disp_out]

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary-branch parameters, displacement-branch parameters); the backbone has none to train."""
        edge = [p for m in self.edge_modules() for p in m.parameters()]
        disp = [p for m in self.displacement_modules() for p in m.parameters()]
        return edge, disp

    @torch.no_grad()
    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five frozen stage outputs s1..s5 (no graph)."""
        b = self.backbone
        s1 = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        s2 = b.layer1(s1)
        s3 = b.layer2(s2)
        s4 = b.layer3(s3)
        s5 = b.layer4(s4)
        return [s.detach() for s in (s1, s2, s3, s4, s5)]

    def _edge(self, s: list[torch.Tensor]) -> torch.Tensor:
        e2 = self.edge2(s[1])
        parts = [self.edge1(s[0]), e2, *(_crop(m(t), e2) for m, t in zip((self.edge3, self.edge4, self.edge5), s[2:]))]
        return self.edge_out(torch.cat(parts, dim=1))

    def _displacement(self, s: list[torch.Tensor]) -> torch.Tensor:
        d3 = self.disp3(s[2])
        mid = torch.cat([d3, _crop(self.disp4(s[3]), d3), _crop(self.disp5(s[4]), d3)], dim=1)
        d2 = self.disp2(s[1])
        up = _crop(self.disp6(mid), d2)
        return self.disp_out(self.disp7(torch.cat([self.disp1(s[0]), d2, up], dim=1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits N×1×h4×w4 and displacement N×2×h4×w4, (h4, w4) = (⌈H/4⌉, ⌈W/4⌉)."""
        s = self.stages(x)
        return self._edge(s), self._displacement(s)

    def edge_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The boundary logits alone (inference of pseudo labels needs no displacement)."""
        return self._edge(self.stages(x))


__all__ = ["IRNet"]
