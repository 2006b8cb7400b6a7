"""Visual words learning (VWL): hybrid pooling, visual-word assignment and a codebook that is learned (``vwl_l``,
with the decorrelation loss) or a memory bank (``vwl_m``, moved towards the batch word centroids each step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from wsss.methods.registry import POOL_STRIDE, Method, register_method

if TYPE_CHECKING:
    from torch import nn

    from wsss.models.backbone import ResNetStages

POOL_LEVELS = 4  # the largest level of hybrid pooling: a training crop must give at least 4×4 features


class _VWL(Method):
    memory_bank: ClassVar[bool]
    cls_keys = ("detach_stage2", "k_words", "gamma", "tau", "rho")

    def build(self, backbone: ResNetStages, num_classes: int, cls: Mapping[str, Any]) -> nn.Module:
        from wsss.models.vwl import VWLNet

        return VWLNet(
            backbone,
            num_classes,
            k_words=cls["k_words"],
            gamma=cls["gamma"],
            tau=cls["tau"],
            rho=cls["rho"],
            detach_stage2=cls["detach_stage2"],
            memory_bank=self.memory_bank,
        )

    def check_config(self, cls: Mapping[str, Any]) -> str | None:
        crop = cls["crop"]
        if crop < POOL_STRIDE * POOL_LEVELS:
            side = crop // POOL_STRIDE
            return (
                f"crop: {crop} gives a {side}x{side} feature map at output stride {POOL_STRIDE}, below the "
                f"{POOL_LEVELS}x{POOL_LEVELS} level of hybrid pooling; use crop >= {POOL_STRIDE * POOL_LEVELS}"
            )
        return None


@register_method
class VWLL(_VWL):
    name = "vwl_l"
    description = "learned codebook"
    memory_bank = False


@register_method
class VWLM(_VWL):
    name = "vwl_m"
    description = "memory-bank codebook"
    memory_bank = True
