"""The plain CAM baseline (IRN's classifier): GAP logits and the multi-label soft-margin loss only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsss.methods.registry import Method, register_method

if TYPE_CHECKING:
    from torch import nn

    from wsss.models.backbone import ResNetStages


@register_method
class CAM(Method):
    name = "cam"
    description = "plain GAP baseline"
    cls_keys = ("detach_stage2",)

    def build(self, backbone: ResNetStages, num_classes: int, cls: Mapping[str, Any]) -> nn.Module:
        from wsss.models.vwl import CAMNet

        detach = cls["detach_stage2"]
        return CAMNet(backbone, num_classes, detach_stage2=True if detach is None else bool(detach))
