"""DeepLabV2 as a trainable, inferable unit (docs/method.md#deeplabv2): model, MSC loss, multi-scale + flip inference
and the fit to its own training labels.

The stages ``train_seg`` and ``infer_seg`` are recipes over these functions. The stored logits are
:mod:`wsss.artifacts.logits`; the dense CRF over them is :mod:`wsss.pipeline.crf`, their evaluation
:func:`wsss.pipeline.evaluate.evaluate_segmentation` and the cross-run table :mod:`wsss.outputs.summary` (numpy only,
so ``crf``, ``eval_seg`` and ``summary`` import no model).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss.artifacts.logits import labels_from_logits
from wsss.data.dataset import VOCLayoutDataset
from wsss.data.seg_data import normalize_image
from wsss.data.transforms import to_chw
from wsss.engine.metrics import ConfusionMatrix
from wsss.engine.train import MicroBatch, Objective, check_batch_split, load_state_dict_file
from wsss.models.backbone import FROM_CLS, build_weights, init_from_classifier
from wsss.models.deeplab import MSC, _halve, build_deeplab
from wsss.runtime import distributed
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE, read_label_png
from wsss.runtime.progress import progress


# ----------------------------------------------------------------------------------------------------- training
def build_segmenter(
    params: dict[str, Any],
    num_classes: int,
    cache_dir: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    cls_model: str | os.PathLike[str] | None = None,
) -> MSC:
    """DeepLabV2-MSC from the ``seg`` config section; ``pretrained=False`` skips the initial weights (when a trained
    state dict is loaded next anyway).

    ``pretrained: from_cls`` starts the backbone from the run's trained classifier ``cls_model`` (weights and
    BatchNorm statistics; no supervision beyond the image labels): the initialisation of runs without ImageNet
    weights. Its ResNet depth must equal ``seg.backbone``."""
    weights = params["pretrained"] if pretrained else "none"
    from_cls = weights == FROM_CLS
    if params["style"] == "caffe" and (weights == "imagenet" or from_cls):
        raise InputError(
            "seg.style",
            f"'caffe' expects converted Caffe weights (a local file in seg.pretrained) or "
            f"none, not {weights}; use style torchvision",
        )
    sha256 = params["pretrained_sha256"] if pretrained else None  # read only when weights are loaded
    model = build_deeplab(
        num_classes,
        depth=params["backbone"],
        weights=build_weights(weights),
        sha256=sha256,
        cache_dir=cache_dir,
        norm=params["norm"],
        style=params["style"],
        rates=params["aspp_rates"],
        msc_scales=params["msc_scales"],
    )
    init_from_classifier(model.base.backbone, weights, cls_model, "seg")
    return model


def load_segmenter(
    params: dict[str, Any], num_classes: int, path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> MSC:
    """The trained DeepLab of ``path`` (a state dict, read with ``weights_only=True``) in eval mode on ``device``;
    weights that do not fit the ``seg`` settings and ``num_classes`` are an InputError naming the file."""
    model = build_segmenter(params, num_classes, pretrained=False)
    try:
        model.load_state_dict(load_state_dict_file(path))
    except RuntimeError as err:
        raise InputError(
            path,
            f"weights do not fit a ResNet-{params['backbone']} DeepLab with {num_classes} classes "
            f"({str(err).splitlines()[0]})",
        ) from None
    return model.to(device).eval()


def check_train_params(params: dict[str, Any], world_size: int = 1) -> None:
    """The global batch (``batch_size``) must split into ``accumulate`` micro-batches on each of ``world_size``
    processes."""
    check_batch_split("seg", int(params["batch_size"]), int(params["accumulate"]), world_size)


def optimizer_groups(model: MSC, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Backbone 1×, ASPP weights ``lr_mult_weight``×, ASPP biases ``lr_mult_bias``× with weight decay 0."""
    return model.param_groups(params["lr_mult_weight"], params["lr_mult_bias"])


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B×H×W integer labels → B×h×w by nearest neighbour with pixel centres (PIL's NEAREST rule)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].long()


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """CE summed over the non-ignored pixels, divided by their number (``total`` when given: the count over a
    larger batch this one is part of); 0 (not NaN) when every pixel is ignored."""
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    count = (target != IGNORE).sum() if total is None else total.to(loss.dtype)
    return loss / count.clamp(min=1)


def msc_loss(
    outputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    names: Sequence[str],
    reduction: str = "sum",
    totals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE (ignore 255) of each MSC training output against ``labels`` nearest-resized to that output's size,
    combined by ``sum`` (kazuto1011) or ``mean`` (rulixiang; docs/method.md#deeplabv2). Returns (loss, {name: value}).

    Each CE is a mean over the non-ignored pixels of this batch, or with ``totals`` (one count per output, see
    :func:`msc_label_counts`) the sum over this batch divided by the count over the global batch: this batch's
    share of the global-batch loss."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
    losses = [
        _cross_entropy(out, resize_labels(labels, out.shape[-2:]), None if totals is None else totals[i])
        for i, out in enumerate(outputs)
    ]
    total = torch.stack(losses).sum()
    if reduction == "mean":
        total = total / len(losses)
    return total, {name: float(v.detach()) for name, v in zip(names, losses)}


def output_names(model: MSC) -> list[str]:
    """Loss-part names of the MSC training outputs: loss_1, loss_<scale>…, loss_max."""
    return ["loss_1", *[f"loss_{s:g}" for s in model.scales], "loss_max"]


def output_sizes(model: MSC, height: int, width: int) -> list[tuple[int, int]]:
    """The logit sizes of the MSC training outputs for an H×W input: 1.0, each scale (input ⌊H·s⌋), max."""
    base = model.base.logit_size(height, width)
    scaled = [model.base.logit_size(max(1, int(height * s)), max(1, int(width * s))) for s in model.scales]
    return [base, *scaled, base]


def msc_label_counts(model: MSC, labels: torch.Tensor) -> torch.Tensor:
    """Non-ignored label pixels per MSC training output (labels resized as :func:`msc_loss` does), float64."""
    sizes = output_sizes(model, *labels.shape[-2:])
    return torch.tensor([float((resize_labels(labels, size) != IGNORE).sum()) for size in sizes], dtype=torch.float64)


def training_step(
    model: MSC, batch: dict[str, Any], device: torch.device, reduction: str = "sum"
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward the MSC model in training mode and return the combined loss with its per-output parts (means over
    this batch's non-ignored pixels)."""
    return SegObjective(device, reduction).loss(model, batch, None)


class SegObjective(Objective):
    """The MSC loss for :func:`wsss.engine.train.fit`: every per-output CE is normalised by the number of non-ignored
    pixels of the whole global batch (:func:`msc_label_counts`), so the shares of micro-batches and processes sum
    to exactly the loss one process computes on the whole batch, however the ignore pixels are spread."""

    def __init__(self, device: torch.device, reduction: str = "sum") -> None:
        self.device, self.reduction = device, reduction

    def counts(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return msc_label_counts(distributed.unwrap(model), batch["label"])

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], micro: MicroBatch | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        totals = None if micro is None else micro.totals
        return msc_loss(model(images), labels, output_names(distributed.unwrap(model)), self.reduction, totals)


# ---------------------------------------------------------------------------------------------------- inference
def _rounded_length(n: int, scale: float) -> int:
    """``max(1, round(n·scale))`` (Python's round, half to even). TorchScript's ``round`` returns a float, hence its
    ``int``. Elsewhere a scale p/q with q a power of two up to 2^16 (0.5, 0.75, 1.25, …: n·scale is exact in
    float64, so the result is the same) is rounded in integers, which torch.export keeps symbolic and can save."""
    if torch.jit.is_scripting():
        return max(1, int(round(n * scale)))  # noqa: RUF046
    p, q = scale.as_integer_ratio()
    if q > 1 << 16:
        return max(1, round(n * scale))
    x = n * p
    r = (x + q // 2) // q  # half up; a tie (x % q == q / 2) with an odd r goes down to the even neighbour
    m = x % q - q // 2
    return max(1, r - (1 // (m * m + 1)) * (r % 2) if q > 1 else x)


class TestTimeSegmenter(torch.nn.Module):
    """The test-time inference of a trained DeepLab: B×3×H×W normalised images → B×C×h×w logits on the stride-8
    grid (``model.base.logit_size``). One implementation for :func:`predict_logits` (eager) and the exported
    TorchScript model (``wsss.outputs.export`` scripts it), so the two cannot drift apart.

    For each test scale s the images are resized bilinearly to (round(H·s), round(W·s)) and passed (with their
    horizontal flips when ``flip``) through the MSC model in eval mode (max fusion over 1.0/0.5/0.75 inside);
    each result (the flipped one flipped back) is resized bilinearly to the grid, and the results are averaged.
    With scales [1.0] and no flip this is exactly the references' test-time output."""

    def __init__(self, model: MSC, scales: Sequence[float] = (1.0,), flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.scales = [float(s) for s in scales]
        self.flip = bool(flip)
        self.ceil_mode = bool(model.base.backbone.maxpool.ceil_mode)
        if not self.scales:
            raise ValueError("at least one test scale is needed")

    def grid_length(self, n: int) -> int:
        """The logit grid length of an input side ``n``: three stride-2 steps (``DeepLabV2.logit_size``)."""
        return _halve(_halve(_halve(n), self.ceil_mode))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        batch = images.shape[0]
        grid = [self.grid_length(height), self.grid_length(width)]
        total = torch.zeros(0)
        for k, s in enumerate(self.scales):
            # Scale 1.0 is the input itself; any other scale always resizes (to the same size only at a few pixels,
            # where bilinear with align_corners=False is the identity), so torch.export keeps H and W symbolic.
            x = images
            if s != 1.0:
                size = [_rounded_length(height, s), _rounded_length(width, s)]
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            if self.flip:
                x = torch.cat([x, x.flip(-1)])
            out = self.model(x)
            assert isinstance(out, torch.Tensor)
            out = out.float()
            if self.flip:
                out = torch.cat([out[:batch], out[batch:].flip(-1)])
            if s != 1.0:  # at scale 1.0 the output is on the grid already (grid_length is the network's)
                out = F.interpolate(out, size=grid, mode="bilinear", align_corners=False)
            out_sum = out[:batch] + out[batch:] if self.flip else out
            total = out_sum if k == 0 else total + out_sum
        return total / float(len(self.scales) * (2 if self.flip else 1))


@torch.no_grad()
def predict_logits(
    model: MSC, image: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Test-time logits (:class:`TestTimeSegmenter`) of one normalised 3×H×W image on its stride-8 grid."""
    if model.training:
        raise ValueError("predict_logits needs the model in eval mode")
    return TestTimeSegmenter(model, scales, flip)(image[None])[0]


@torch.no_grad()
def image_logits(
    model: MSC, rgb: np.ndarray, params: dict[str, Any], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Test-time logits of one uint8 RGB H×W×3 image with the ``seg`` settings ``style``, ``test_scales`` and
    ``test_flip`` (normalised as in training; :func:`predict_logits`): float32 C×h×w on the CPU."""
    image = torch.from_numpy(to_chw(normalize_image(rgb, params["style"]))).to(device)
    return predict_logits(model, image, params["test_scales"], params["test_flip"]).cpu()


# --------------------------------------------------------------------------------------------------- evaluation
def label_fit(
    model: MSC,
    data: VOCLayoutDataset,
    ids: Sequence[str],
    label_paths: dict[str, Path],
    params: dict[str, Any],
    device: torch.device | str = "cpu",
) -> ConfusionMatrix:
    """Confusion over ``ids`` between DeepLab's test-time predictions (:func:`image_logits`) and the label maps it
    trained on (``label_paths``; 255 ignored): how well it fits its own training labels, no mask read."""
    matrix = ConfusionMatrix(data.num_classes)
    for image_id in progress(ids, desc="fit", mininterval=5.0, file=sys.stderr):
        target = read_label_png(label_paths[image_id], data.num_classes)
        logits = image_logits(model, data.image(image_id), params, device)
        matrix.update(labels_from_logits(logits, target.shape), target)
    return matrix


__all__ = [
    "SegObjective",
    "TestTimeSegmenter",
    "build_segmenter",
    "check_train_params",
    "image_logits",
    "label_fit",
    "load_segmenter",
    "msc_label_counts",
    "msc_loss",
    "optimizer_groups",
    "output_names",
    "output_sizes",
    "predict_logits",
    "resize_labels",
    "training_step",
]
