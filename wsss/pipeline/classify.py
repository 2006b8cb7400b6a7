"""The VWL classifier as a trainable, inferable unit: built from config params, one training step, CAM records.

The stages ``train_cls``, ``infer_cam`` and ``eval_cam`` are recipes over these functions.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from wsss.engine.train import MicroBatch, Objective, load_state_dict_file
from wsss.methods import get_method
from wsss.models.backbone import build_resnet
from wsss.models.vwl import CAMNet, VWLNet, memory_bank_blend, memory_bank_sums
from wsss.runtime import distributed


def build_classifier(
    params: dict[str, Any],
    num_classes: int,
    method: str,
    cache_dir: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
) -> CAMNet:
    """The classification network of ``method`` (:mod:`wsss.methods`) on an OS16 ResNet from the ``cls`` config
    section; ``pretrained=False`` skips loading backbone weights (when a trained state dict is loaded next anyway)."""
    spec = get_method(method)
    weights = params["pretrained"] if pretrained else "none"
    backbone = build_resnet(
        params["backbone"],
        strides=(2, 2, 2, 1),
        weights=weights,
        sha256=params["pretrained_sha256"],
        cache_dir=cache_dir,
        norm=params["norm"],
        freeze_stem=params["freeze_stem"],
    )
    return spec.build(backbone, num_classes, params)


def load_classifier(
    params: dict[str, Any], num_classes: int, method: str, path: str | os.PathLike[str], device: torch.device
) -> CAMNet:
    """A trained classifier for inference: built from the ``cls`` section, its state dict loaded (weights only),
    on ``device`` in eval mode."""
    model = build_classifier(params, num_classes, method, pretrained=False)
    model.load_state_dict(load_state_dict_file(path))
    return model.to(device).eval()


def optimizer_groups(model: CAMNet, lr_mult_new: float) -> list[dict[str, Any]]:
    """Backbone at 1× and the new layers (classifier, fc_a, fc_b, learned codebook) at ``lr_mult_new``×."""
    backbone, new = model.param_groups()
    return [{"params": backbone, "lr_mult": 1.0}, {"params": new, "lr_mult": lr_mult_new}]


def training_step(
    model: CAMNet, batch: dict[str, Any], step: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, VWL-M memory-bank update (before the caller's backward, docs/method.md#vwl-m), loss, its parts, for one
    whole batch in one process (:class:`ClassifierObjective` with the batch as the global batch).

    The memory bank's first-step re-initialisation draws from a generator seeded by (seed, step), so a resumed
    run makes the same draws."""
    objective = ClassifierObjective(device, seed)
    n = len(batch["image"])
    loss, parts = objective.loss(model, batch, MicroBatch(step, tuple(range(n)), n, None))
    objective.end_step(model, step)
    return loss, parts


class _BankStep:
    """One step's VWL-M memory-bank update gathered over micro-batches and processes (docs/method.md#vwl-m).

    Every micro-batch is assigned with the codebook of the step's start; the update uses all pixels of the global
    batch: summed word centroids, or on the first update K pixel features drawn (with replacement, generator
    seeded by (seed, step)) from the global batch's B·h·w pixels in global-batch order, each row filled by the
    process holding that pixel. The result equals the single-process update on the whole batch."""

    def __init__(self, model: VWLNet, seed: int, step: int) -> None:
        self.model, self.seed, self.step = model, seed, step
        self.reinit = int(model.bank_updates) == 0
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        self.draw: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, features: torch.Tensor, hard_words: torch.Tensor, micro: MicroBatch) -> None:
        """Fold in a micro-batch's (detached) features and hard words."""
        feats = features.detach().float()
        n, ch, h, w = feats.shape
        if not self.reinit:
            sums, counts = memory_bank_sums(feats, hard_words, self.model.k_words)
            self.sums = sums if self.sums is None else self.sums + sums
            self.counts = counts if self.counts is None else self.counts + counts
            return
        if self.rows is None:
            gen = torch.Generator(device=feats.device).manual_seed(self.seed * 100_003 + self.step)
            self.draw = torch.randint(
                micro.global_size * h * w, (self.model.k_words,), generator=gen, device=gen.device
            ).to(feats.device)
            self.rows = torch.zeros(self.model.k_words, ch, device=feats.device)
        local = torch.full((micro.global_size,), -1, dtype=torch.long, device=feats.device)
        local[torch.tensor(micro.positions, device=feats.device)] = torch.arange(n, device=feats.device)
        where = local[self.draw // (h * w)]
        mine = where >= 0
        pixels = feats.permute(0, 2, 3, 1).reshape(-1, ch)
        self.rows[mine] = pixels[where[mine] * (h * w) + self.draw[mine] % (h * w)]

    @torch.no_grad()
    def apply(self) -> None:
        """All-reduce the gathered statistics and update the model's memory bank."""
        if self.reinit:
            if self.rows is not None:
                self.model.set_codebook(distributed.all_reduce_sum(self.rows))
            return
        if self.sums is not None:
            stats = distributed.all_reduce_sum(torch.cat([self.sums, self.counts[:, None]], dim=1))
            self.model.set_codebook(memory_bank_blend(self.model.codebook, stats[:, :-1], stats[:, -1], self.model.rho))


class ClassifierObjective(Objective):
    """The VWL classifier's loss for :func:`wsss.engine.train.fit`: per-image means (so a micro-batch's share is its image
    fraction; the codebook-only decorrelation term is shared the same way) and, for ``vwl_m``, the memory-bank
    update of the whole global batch after the step's last backward (:class:`_BankStep`); the loss does not
    depend on the bank after the forward pass, so this equals the reference's update between forward and
    backward."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device, self.seed = device, seed
        self._bank: _BankStep | None = None

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], micro: MicroBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        net = distributed.unwrap(model)
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        out = model(images)
        if isinstance(net, VWLNet) and net.memory_bank:
            if self._bank is None:
                self._bank = _BankStep(net, self.seed, micro.step)
            self._bank.add(out["features"], out["hard_words"], micro)
        loss, parts = net.loss(out, labels)
        return loss * micro.fraction, {k: float(v) * micro.fraction for k, v in parts.items() if k != "total"}

    def end_step(self, model: torch.nn.Module, step: int) -> None:
        if self._bank is not None:
            self._bank.apply()
            self._bank = None


def _probabilities(model: CAMNet, feat: torch.Tensor) -> torch.Tensor:
    """Sigmoid of the training logits from backbone features (the network's own pooling)."""
    return torch.sigmoid(model.logits(feat).float())


@torch.no_grad()
def image_scores(model: CAMNet, images: torch.Tensor) -> torch.Tensor:
    """Image-level class probabilities (sigmoid of the training logits)."""
    return _probabilities(model, model.features(images))


def cam_and_scores(model: CAMNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``model.forward_cam(images)``, :func:`image_scores` ``(model, images)``) from one backbone pass: the CAM
    function for :func:`wsss.ops.cam.multiscale_cams` with ``with_scores=True``."""
    feat = model.features(images)
    return torch.relu(torch.nn.functional.conv2d(feat, model.classifier.weight)), _probabilities(model, feat)
