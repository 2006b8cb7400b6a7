"""ReCAM (Chen et al., CVPR 2022, "Class Re-Activation Maps for Weakly-Supervised Semantic Segmentation"; public
code github.com/zhaozhengChen/ReCAM): the plain CAM classifier, then a re-activation phase from its weights.

Phase ``cam``: exactly the ``cam`` method's training (same network, objective, epochs and learning rates; the extra
predictor is initialised on a forked RNG so that the classifier sees the same random numbers as ``cam``).

Phase ``recam`` (``cls.recam_epochs``): with features F (N×ch×h×w) and CAMs ``A_k = ReLU(W_cls[k]·F)``, each
divided by its own spatial maximum (+1e-5), the class-specific feature ``f_k = mean_p A_k(p)·F(p)``; a bias-free
linear predictor P (C×ch) classifies the f_k of the classes present in the image with a softmax cross-entropy
whose target is k (classes compete, unlike the multi-label loss). Loss = multi-label soft margin on the image
logits + λ·SCE (λ = ``cls.recam_loss_weight``), the SCE summed over each image's present classes and divided by
the number of images. P trains at ``cls.recam_lr``; the backbone and W_cls keep training at
``cls.recam_lr × cls.recam_lr_mult_backbone``.

Inference: the CAM of class k is ``ReLU((P[k] ⊙ W_cls[k])·F)``; image scores stay the sigmoid of the W_cls logits.

This module imports no torch at import time (the registry is read by the Snakefile); the network class is built on
first use (:func:`network_class`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsss.methods.registry import Method, TrainingPhase, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wsss.engine.train import Objective
    from wsss.models.backbone import ResNetStages


def normalised_cams(features: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``ReLU(weight·F)`` (weight C×ch or C×ch×1×1), each map divided by its own spatial maximum + ``eps``."""
    import torch.nn.functional as F

    w = weight.reshape(weight.shape[0], -1, 1, 1)
    cams = F.relu(F.conv2d(features, w))
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + eps)


def class_features(cams: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """N×C×ch: ``f_k = mean over pixels of A_k·F`` for every class k (cams N×C×h×w, features N×ch×h×w)."""
    import torch

    n, c, h, w = cams.shape
    return torch.einsum("nkp,ncp->nkc", cams.reshape(n, c, h * w), features.reshape(n, -1, h * w)) / (h * w)


def reactivation_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The SCE of ReCAM: ``class_logits`` N×C×C (the predictor's logits of each class-specific feature f_k),
    labels N×C multi-hot; the softmax cross-entropy of every present class's row against its own index, summed
    over present classes and divided by N."""
    import torch
    import torch.nn.functional as F

    n, c = labels.shape
    present = labels > 0.5
    targets = torch.arange(c, device=labels.device).expand(n, c)
    ce = F.cross_entropy(class_logits[present].float(), targets[present], reduction="sum")
    return ce / n


def reactivated_cams(features: torch.Tensor, classifier: torch.Tensor, predictor: torch.Tensor) -> torch.Tensor:
    """ReCAM's inference CAMs N×C×h×w: ``ReLU((P[k] ⊙ W_cls[k])·F)`` (not normalised)."""
    import torch.nn.functional as F

    weight = predictor.reshape(predictor.shape[0], -1) * classifier.reshape(classifier.shape[0], -1)
    return F.relu(F.conv2d(features, weight[:, :, None, None]))


@functools.cache
def network_class() -> type:
    """The ReCAM network: :class:`wsss.models.vwl.CAMNet` plus the predictor P; with ``reactivate`` set, the
    forward also returns ``class_logits`` (N×C×C), so that under DDP every trained parameter is reached from the
    forward's outputs."""
    import torch
    from torch import nn

    from wsss.models.vwl import CAMNet

    class ReCAMNet(CAMNet):
        def __init__(self, backbone: ResNetStages, num_classes: int, detach_stage2: bool = True) -> None:
            super().__init__(backbone, num_classes, detach_stage2=detach_stage2)
            with torch.random.fork_rng(devices=[]):
                self.predictor = nn.Conv2d(backbone.out_channels[-1], num_classes, 1, bias=False)
            self.reactivate = False

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x)
            if self.reactivate:
                feat = out["features"]
                f = class_features(normalised_cams(feat, self.classifier.weight), feat)
                out["class_logits"] = f @ self.predictor.weight.flatten(1).t()
            return out

        def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
            return reactivated_cams(self.features(x), self.classifier.weight, self.predictor.weight)

    return ReCAMNet


def reactivation_objective(device: torch.device, loss_weight: float) -> Objective:
    """The re-activation phase's loss: multi-label soft margin + ``loss_weight``·SCE (per-image means, so a
    micro-batch's share is its image fraction)."""
    objective: Objective = _objective_class()(device, loss_weight)
    return objective


@functools.cache
def _objective_class() -> type:
    from wsss.engine.train import MicroBatch, Objective
    from wsss.runtime import distributed

    class _ReCAMObjective(Objective):
        def __init__(self, device: torch.device, loss_weight: float) -> None:
            self.device, self.loss_weight = device, float(loss_weight)

        def loss(
            self, model: nn.Module, batch: dict[str, Any], micro: MicroBatch
        ) -> tuple[torch.Tensor, dict[str, float]]:
            import torch.nn.functional as F

            net: Any = distributed.unwrap(model)
            net.reactivate = True
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["labels"].to(self.device, non_blocking=True)
            out = model(images)
            cls = F.multilabel_soft_margin_loss(out["logits"].float(), labels.float())
            sce = reactivation_loss(out["class_logits"], labels)
            loss = cls + self.loss_weight * sce
            return loss * micro.fraction, {
                "cls": float(cls.detach()) * micro.fraction,
                "sce": float(sce.detach()) * micro.fraction,
            }

    return _ReCAMObjective


@register_method
class ReCAM(Method):
    name = "recam"
    description = "CAM, then class re-activation (softmax CE on CAM-masked features)"
    cls_keys = ("detach_stage2", "recam_epochs", "recam_lr", "recam_lr_mult_backbone", "recam_loss_weight")

    def build(self, backbone: ResNetStages, num_classes: int, cls: Mapping[str, Any]) -> nn.Module:
        detach = cls["detach_stage2"]
        net: nn.Module = network_class()(backbone, num_classes, detach_stage2=True if detach is None else bool(detach))
        return net

    def training_phases(self, cls: Mapping[str, Any]) -> tuple[TrainingPhase, ...]:
        (first,) = Method.training_phases(self, cls)
        cam = TrainingPhase("cam", first.epochs, first.lr, first.groups, first.objective)
        lr, mult, weight = cls["recam_lr"], cls["recam_lr_mult_backbone"], cls["recam_loss_weight"]

        def groups(model: Any) -> list[dict[str, Any]]:
            predictor = list(model.predictor.parameters())
            ids = {id(p) for p in predictor}
            rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
            return [{"params": rest, "lr_mult": mult}, {"params": predictor, "lr_mult": 1.0}]

        return (
            cam,
            TrainingPhase(
                "recam", cls["recam_epochs"], lr, groups, lambda device, seed: reactivation_objective(device, weight)
            ),
        )

    def cams_and_scores(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        net: Any = model
        feat = net.features(images)
        scores = torch.sigmoid(net.logits(feat).float())
        return reactivated_cams(feat, net.classifier.weight, net.predictor.weight), scores
