"""DeepLabV2 as a trainable, inferable unit (docs/method.md#deeplabv2): model, MSC loss, multi-scale + flip inference,
compact logit storage, dense-CRF post-processing, evaluation and the cross-run summary table.

The stages ``train_seg``, ``infer_seg``, ``crf``, ``eval_seg`` and ``summary`` are recipes over these functions.

Stored logits: one ``<id>.npz`` per image (``np.savez``, no pickles) with ``logits`` float16 [C, h, w] on the
output-stride-8 grid of the full image and ``size`` (H, W). Readers upsample them bilinearly (align_corners=False)
to H×W, as both references do with their saved stride-8 logits; the CRF takes the softmax of that.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.irn_data import index_label_dirs
from wsss.data.seg_data import normalize_image
from wsss.data.transforms import to_chw
from wsss.engine.metrics import ConfusionMatrix
from wsss.engine.train import MicroBatch, Objective, check_batch_split, load_state_dict_file
from wsss.models.backbone import FROM_CLS, build_weights, init_from_classifier
from wsss.models.deeplab import MSC, _halve, build_deeplab
from wsss.ops.crf import crf_labels_from_probs
from wsss.runtime import distributed
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE, atomic_path, index_shard_files, read_label_png, write_label_png
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


@dataclass(frozen=True)
class SegLogits:
    """Stored test-time logits of one image: float16 [C, h, w] on the stride-8 grid and the image size (H, W)."""

    logits: np.ndarray
    size: tuple[int, int]


def save_logits(path: str | os.PathLike[str], logits: torch.Tensor | np.ndarray, size: tuple[int, int]) -> None:
    """Write one image's logits as float16 ``.npz`` (keys ``logits``, ``size``), atomically."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    if logits.ndim != 3:
        raise ValueError(f"logits must be C×h×w, got {logits.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, logits=np.ascontiguousarray(logits, dtype=np.float16), size=np.asarray(size, np.int64))


def load_logits(path: str | os.PathLike[str]) -> SegLogits:
    """Read logits written by :func:`save_logits` (``allow_pickle=False``); bad files name themselves."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rec = SegLogits(data["logits"], tuple(int(v) for v in data["size"]))
    except FileNotFoundError:
        raise InputError(path, "logit file is missing") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"cannot read logit file ({err})") from None
    if rec.logits.ndim != 3 or len(rec.size) != 2:
        raise InputError(path, f"logits of shape {rec.logits.shape} / size {rec.size} are not C×h×w / (H, W)")
    return rec


def index_logit_dirs(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, Path]:
    """Map every id to its ``<id>.npz`` among the shard folders ``dirs``; a missing id is an InputError."""
    return index_shard_files(dirs, ids, ".npz", "logits")


def upsample_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """C×h×w logits → float32 C×H×W (bilinear, align_corners=False)."""
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32)) if not isinstance(logits, torch.Tensor) else logits
    t = t.float().cpu()
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def labels_from_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 H×W class ids: argmax of the upsampled logits (the no-CRF prediction)."""
    return upsample_logits(logits, size).argmax(0).numpy().astype(np.uint8)


def probs_from_logits(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """float32 C×H×W softmax of the upsampled logits (the CRF's unary)."""
    return torch.softmax(upsample_logits(logits, size), dim=0).numpy()


# ---------------------------------------------------------------------------------------------------------- CRF
def crf_refine(image: np.ndarray, logits: np.ndarray | torch.Tensor, crf: Mapping[str, Any]) -> np.ndarray:
    """uint8 H×W ids after a dense CRF (docs/method.md#dense-crf; the seg.crf keys, by default 10 iterations,
    Gaussian 1/3, bilateral 67/3/4) on the raw RGB uint8 ``image``, with the softmax of the logits upsampled to the
    image size as unary. Only the
    labels that can win take part (background and the classes reaching ``label_eps`` somewhere, at most
    ``max_labels`` of them; :func:`wsss.ops.crf.crf_labels_from_probs`); ``label_eps: 0`` is the all-class CRF."""
    settings = dict(crf)
    probs = probs_from_logits(logits, tuple(image.shape[:2]))
    labels = crf_labels_from_probs(
        image,
        probs,
        eps=float(settings["label_eps"]),
        top_k=settings["max_labels"],
        iters=int(settings["iters"]),
        pos_xy_std=settings["pos_xy_std"],
        pos_w=settings["pos_w"],
        bi_xy_std=settings["bi_xy_std"],
        bi_rgb_std=settings["bi_rgb_std"],
        bi_w=settings["bi_w"],
    )
    return labels.astype(np.uint8)


_CRF_WORKER: dict[str, Any] = {}


def _crf_worker_init(root: str, crf: dict[str, Any], single_thread: bool) -> None:
    if single_thread:
        torch.set_num_threads(1)
    _CRF_WORKER.update(data=VOCLayoutDataset(root), crf=crf)


def _crf_worker(task: tuple[str, str, str]) -> tuple[str, tuple[str, str] | None]:
    """Refine one image; an InputError comes back as (path, problem) (it does not survive pickling as is)."""
    image_id, logit_path, out_path = task
    try:
        rec = load_logits(logit_path)
        image = _CRF_WORKER["data"].image(image_id)
        if tuple(image.shape[:2]) != rec.size:
            raise InputError(logit_path, f"logits are for an image of size {rec.size}, the image is {image.shape[:2]}")
        write_label_png(out_path, crf_refine(image, rec.logits, _CRF_WORKER["crf"]))
    except InputError as err:
        return image_id, (err.path, err.problem)
    return image_id, None


def crf_shard(
    root: str | os.PathLike[str],
    ids: Sequence[str],
    logit_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    crf: Mapping[str, Any],
    workers: int = 1,
) -> None:
    """Write ``<out_dir>/<id>.png`` (CRF-refined ids) for ``ids``, using ``workers`` processes (spawned, one
    torch thread each); ``workers=1`` runs in this process."""
    paths = index_logit_dirs(logit_dirs, ids)
    tasks = [(i, str(paths[i]), str(Path(out_dir) / f"{i}.png")) for i in ids]
    settings = dict(crf)
    bar = dict(total=len(tasks), desc="crf", mininterval=5.0, file=sys.stderr)
    if workers <= 1:
        _crf_worker_init(str(root), settings, single_thread=False)
        results = (_crf_worker(t) for t in tasks)
        _raise_first(progress(results, **bar))
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_crf_worker_init, initargs=(str(root), settings, True)) as pool:
        _raise_first(progress(pool.imap_unordered(_crf_worker, tasks, chunksize=2), **bar))


def _raise_first(results: Any) -> None:
    for _, error in results:
        if error is not None:
            raise InputError(*error)


# --------------------------------------------------------------------------------------------------- evaluation
def evaluate_segmentation(
    data: VOCLayoutDataset,
    ids: Sequence[str],
    logit_dirs: Sequence[str | os.PathLike[str]],
    crf_dirs: Sequence[str | os.PathLike[str]],
) -> dict[str, ConfusionMatrix]:
    """Confusions over ``ids`` of the argmax of the upsampled logits (``no_crf``) and of the CRF labels (``crf``)."""
    n = data.num_classes
    logit_paths = index_logit_dirs(logit_dirs, ids)
    crf_paths = index_label_dirs(crf_dirs, ids)
    result = {"no_crf": ConfusionMatrix(n), "crf": ConfusionMatrix(n)}
    for image_id in progress(ids, desc="eval", mininterval=5.0, file=sys.stderr):
        gt = data.mask(image_id)
        rec = load_logits(logit_paths[image_id])
        if rec.size != gt.shape:
            raise InputError(logit_paths[image_id], f"logits of image size {rec.size} but the mask is {gt.shape}")
        if rec.logits.shape[0] != n:
            raise InputError(logit_paths[image_id], f"{rec.logits.shape[0]} classes, the dataset has {n}")
        result["no_crf"].update(labels_from_logits(rec.logits, rec.size), gt)
        refined = read_label_png(crf_paths[image_id], n)
        if refined.shape != gt.shape:
            raise InputError(crf_paths[image_id], f"CRF labels of size {refined.shape} but the mask is {gt.shape}")
        result["crf"].update(refined, gt)
    return result


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


def segmentation_report(cms: dict[str, ConfusionMatrix], class_names: Sequence[str], split: str) -> dict[str, Any]:
    """The ``deeplab_<split>_metrics.json`` content: mIoU (%) with and without CRF and both full score sets."""
    out: dict[str, Any] = {"split": split}
    for key, cm in cms.items():
        out[f"miou_{key}"] = round(100 * cm.scores()["miou_present"], 4)
    for key, cm in cms.items():
        out[key] = cm.to_json_dict(class_names)
    return out


# ------------------------------------------------------------------------------------------------------ summary
@dataclass(frozen=True)
class SummaryRow:
    """One run's numbers for the summary table (mIoU in %, None where the run has no such stage)."""

    run: str
    dataset: str
    method: str
    labels: str
    cam: float | None
    pseudo: float | None
    deeplab: float | None
    deeplab_crf: float | None


def read_miou_file(path: str | os.PathLike[str]) -> float:
    """The single number of a ``*_miou.txt`` file."""
    try:
        text = Path(path).read_text().strip()
        return float(text)
    except FileNotFoundError:
        raise InputError(path, "mIoU file is missing") from None
    except ValueError:
        raise InputError(path, f"expected one number, got {text[:40]!r}") from None


def read_deeplab_metrics(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(mIoU without CRF, with CRF) in % from a ``deeplab_<split>_metrics.json``."""
    try:
        data = json.loads(Path(path).read_text())
        return float(data["miou_no_crf"]), float(data["miou_crf"])
    except FileNotFoundError:
        raise InputError(path, "DeepLab metrics file is missing") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a DeepLab metrics file ({type(err).__name__}: {err})") from None


def _cell(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


STAGE_NAMES = ("CAM", "pseudo labels", "DeepLab", "DeepLab+CRF")


def stage_drops(row: SummaryRow) -> list[tuple[int, int]]:
    """(stage, previous stage) index pairs (into :data:`STAGE_NAMES`) where a stage's mIoU is below the previous
    present stage's, along CAM → pseudo → DeepLab → DeepLab+CRF (absent stages are skipped)."""
    values = [row.cam, row.pseudo, row.deeplab, row.deeplab_crf]
    drops, prev = [], None
    for k, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        if prev is not None and v < values[prev]:
            drops.append((k, prev))
        prev = k
    return drops


def _mean_std(values: Sequence[float | None]) -> str:
    """``mean ± sample std (n−1)`` of the finite values, two decimals; ± – for a single value; – for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return f"{mean:.2f} ± –"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def summary_table(
    rows: Sequence[SummaryRow],
    cam_split: str = "val",
    pseudo_split: str = "val",
    seg_split: str = "val",
    seed_groups: dict[str, Sequence[str]] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """Markdown: a title, one note line and a table with one row per run (mIoU in %, two decimals, – if absent,
    ↓ after a stage below the previous one); with ``seed_groups`` (base run -> its per-seed runs) a table of
    mean ± sample std over the seeds; then a Warnings list: every stage drop and ``warnings`` (pre-formatted)."""
    header = [
        "Run",
        "Dataset",
        "Method",
        "Training labels",
        f"CAM ({cam_split})",
        f"Pseudo ({pseudo_split})",
        f"DeepLab ({seg_split})",
        f"DeepLab+CRF ({seg_split})",
    ]
    lines = [
        "# Results",
        "",
        "mIoU in % over the classes present in the ground truth; ↓ marks a stage below the "
        "previous one (CAM → pseudo → DeepLab → DeepLab+CRF).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * 4) + "|",
    ]
    notes = []
    for r in rows:
        values = [r.cam, r.pseudo, r.deeplab, r.deeplab_crf]
        cells = [_cell(v) for v in values]
        for k, prev in stage_drops(r):
            cells[k] += " ↓"
            notes.append(f"{r.run}: {STAGE_NAMES[k]} ({values[k]:.2f}) below {STAGE_NAMES[prev]} ({values[prev]:.2f})")
        lines.append("| " + " | ".join([r.run, r.dataset, r.method, r.labels, *cells]) + " |")
    if seed_groups:
        by_run = {r.run: r for r in rows}
        lines += [
            "",
            "## Seeds",
            "",
            "mean ± sample standard deviation (n − 1) over the per-seed runs {run}_s{seed}.",
            "",
            "| " + " | ".join(["Run", "Seeds", *header[4:]]) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|",
        ]
        for base, members in seed_groups.items():
            group = [by_run[m] for m in members if m in by_run]
            cells = [_mean_std([getattr(r, f) for r in group]) for f in ("cam", "pseudo", "deeplab", "deeplab_crf")]
            seeds = ", ".join(m.rsplit("_s", 1)[-1] for m in members)
            lines.append("| " + " | ".join([base, seeds, *cells]) + " |")
    notes += list(warnings)
    if notes:
        lines += ["", "## Warnings", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


__all__ = [
    "SegLogits",
    "SegObjective",
    "SummaryRow",
    "TestTimeSegmenter",
    "build_segmenter",
    "check_train_params",
    "crf_refine",
    "crf_shard",
    "evaluate_segmentation",
    "image_logits",
    "index_logit_dirs",
    "label_fit",
    "labels_from_logits",
    "load_logits",
    "load_segmenter",
    "msc_label_counts",
    "msc_loss",
    "optimizer_groups",
    "output_names",
    "output_sizes",
    "predict_logits",
    "probs_from_logits",
    "read_deeplab_metrics",
    "read_miou_file",
    "resize_labels",
    "save_logits",
    "segmentation_report",
    "stage_drops",
    "summary_table",
    "training_step",
    "upsample_logits",
]
