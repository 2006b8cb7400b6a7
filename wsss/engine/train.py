"""Training machinery shared by every training stage: seeding, poly LR, resumable data order, checkpoints,
gradient accumulation, data-parallel processes and bfloat16 autocast.

Resume is exact on CPU: the data order and every augmentation draw are functions of (seed, step), not of a
running RNG, so a run killed after step s and resumed from its checkpoint sees the same batches as an
uninterrupted run.

One optimizer step sees one *global batch* of ``batch_size`` samples, however it is computed: W processes
(torchrun) each take every W-th sample (:class:`StepBatchSampler`) and run their part as ``accumulate``
micro-batches of ``batch_size / (W · accumulate)``. An :class:`Objective` returns each micro-batch's *share* of
the global-batch loss (shares sum to the loss of the whole batch: per-sample means are weighted by the
micro-batch's fraction of the samples; pixel- or pair-normalised losses divide by the count over the whole global
batch, which :func:`fit` collects from the labels before the forward passes). Gradients are summed over the
micro-batches and over processes (DDP averages, the shares are scaled by W), so the update is that of one process
on the whole batch, up to float rounding. Exceptions, by design: trained BatchNorm (``norm: batch``) normalises
each micro-batch with the statistics of that micro-batch over all processes (so W does not matter, but
``accumulate`` does), and bfloat16 autocast (CUDA only) rounds differently.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import struct
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.runtime import distributed
from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_path
from wsss.runtime.progress import progress

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); deterministic cuDNN where it is used."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present (honouring CUDA_VISIBLE_DEVICES), else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("config: device", f"{name!r} requested but no CUDA device is available")
    return torch.device(name)


AMP_DTYPE = torch.bfloat16


def autocast_enabled(device: torch.device, amp: bool, bf16_supported: Callable[[], bool] | None = None) -> bool:
    """Whether training runs under bfloat16 autocast: only with ``amp`` on a CUDA device that supports bfloat16
    (``bf16_supported`` defaults to ``torch.cuda.is_bf16_supported``); the CPU path is always full precision."""
    if not amp or device.type != "cuda":
        return False
    if not (bf16_supported or torch.cuda.is_bf16_supported)():
        log.warning("amp requested but this GPU has no bfloat16 support: training in float32")
        return False
    return True


def training_autocast(device: torch.device, enabled: bool) -> torch.autocast | nullcontext:
    """The autocast context of a training forward pass (a no-op context when disabled)."""
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPE) if enabled else nullcontext()


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """``base_lr · (1 − step/max_steps)^power`` (the poly schedule of IRN/VWL/DeepLab), step counted from 0."""
    return base_lr * (1.0 - step / max_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, max_steps: int, power: float = 0.9) -> None:
    """Set every group's lr from its ``initial_lr`` (base lr × group multiplier) for this step."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, max_steps, power)


def build_optimizer(
    groups: Sequence[dict[str, Any]], name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """SGD or AdamW over param groups ``{"params", "lr_mult", optional "weight_decay"}``.

    Each group's ``initial_lr`` is ``lr · lr_mult``; :func:`set_poly_lr` decays from it. Empty groups are dropped.
    """
    torch_groups = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        base = lr * g.get("lr_mult", 1.0)
        torch_groups.append(
            {"params": params, "lr": base, "initial_lr": base, "weight_decay": g.get("weight_decay", weight_decay)}
        )
    if name == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(torch_groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_items)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the batches of global steps ``start_step .. max_steps-1`` as lists of ``(index, aug_seed)``.

    Batch ``t`` is slice ``t mod steps_per_epoch`` of the permutation of epoch ``t // steps_per_epoch``
    (drop_last). With ``world_size > 1`` rank ``r`` takes every ``world_size``-th item of each global batch,
    so the global batch is the same whatever the number of processes. ``aug_seed`` is unique per (step, slot).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        max_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < batch_size:
            raise ValueError(f"{num_items} training items are fewer than one batch of {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.max_steps, self.start_step, self.rank, self.world_size = max_steps, start_step, rank, world_size
        self.steps_per_epoch = num_items // batch_size

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = epoch_permutation(self.num_items, self.seed, epoch)[k * self.batch_size : (k + 1) * self.batch_size]
        return [(int(i), int(self.seed * 1_000_003 + step * self.batch_size + j)) for j, i in enumerate(order)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.max_steps):
            yield self.global_batch(step)[self.rank :: self.world_size]


def check_batch_split(section: str, batch_size: int, accumulate: int, world_size: int) -> None:
    """The global batch must split evenly into ``accumulate`` micro-batches on each of ``world_size`` processes."""
    if accumulate < 1 or batch_size % (accumulate * world_size):
        raise InputError(
            f"config: {section}.batch_size",
            f"{batch_size} does not split into {accumulate} micro-batch(es) on each of {world_size} process(es)",
        )


@dataclass(frozen=True)
class MicroBatch:
    """Where a micro-batch sits in its step's global batch: what a loss needs to return its exact share."""

    step: int
    positions: tuple[int, ...]  # positions of its samples in the global batch (0 .. global_size-1)
    global_size: int
    totals: torch.Tensor | None  # Objective.counts summed over the whole global batch (float64), if any

    @property
    def fraction(self) -> float:
        """Its share of the global batch's samples."""
        return len(self.positions) / self.global_size


class Objective(ABC):
    """How :func:`fit` turns a micro-batch into its share of the global-batch loss (see the module doc).

    ``loss`` returns ``(share, parts)``: summed over all micro-batches of all processes, the shares give the loss
    of the whole global batch and each part's shares give that part. A loss normalised by label counts (pixels
    that are not ignored, pixel pairs) defines ``counts``: a 1-D tensor of those counts for a batch, computed from
    the batch alone; fit sums it over the global batch before the first forward pass and hands the totals over
    as ``MicroBatch.totals``. ``end_step`` runs after the last micro-batch's backward, before the optimizer step
    (step-level state such as a memory bank). ``model`` may be a DDP wrapper: call it for the forward pass and
    read attributes from :func:`wsss.runtime.distributed.unwrap`."""

    def counts(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
        """Label counts that normalise the loss, for ``batch``; None when the loss is a per-sample mean."""
        return None

    @abstractmethod
    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], micro: MicroBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This micro-batch's share of the loss and of each logged part."""

    def end_step(self, model: torch.nn.Module, step: int) -> None:  # noqa: B027
        """Step-level updates after all micro-batches (none by default)."""


class MeanLoss(Objective):
    """Adapter for ``step_fn(model, batch, step) -> (loss, parts)`` whose loss and parts are means over the batch's
    samples: the share of a micro-batch is its sample fraction times them."""

    def __init__(self, step_fn: Callable[..., tuple[torch.Tensor, dict]]) -> None:
        self.step_fn = step_fn

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], micro: MicroBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = self.step_fn(model, batch, micro.step)
        return loss * micro.fraction, {k: float(v) * micro.fraction for k, v in parts.items()}


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """Split a collated batch (tensors and lists, same length) into ``parts`` consecutive equal micro-batches."""
    if parts == 1:
        return [batch]
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1 or next(iter(sizes)) % parts:
        raise ValueError(f"cannot split a batch with entry lengths {sorted(sizes)} into {parts} equal parts")
    size = next(iter(sizes)) // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]


# what torch.load raises on a file that is not a torch save: empty or cut short (EOFError, struct.error), not a
# zip archive (RuntimeError), a pickle of something else (UnpicklingError), unreadable (OSError)
_UNREADABLE = (OSError, RuntimeError, ValueError, EOFError, struct.error, pickle.UnpicklingError)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


@dataclass
class Checkpoint:
    """What a resumable training run saves: weights, optimizer state and the next step to run."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    step: int
    extra: dict[str, Any]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a kill during the write keeps the previous checkpoint)."""
        with atomic_path(path) as tmp:
            torch.save({"model": self.model, "optimizer": self.optimizer, "step": self.step, "extra": self.extra}, tmp)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Checkpoint:
        """Load with ``weights_only=True``; an unreadable file is an InputError naming it."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return Checkpoint(data["model"], data["optimizer"], int(data["step"]), dict(data.get("extra", {})))
        except (*_UNREADABLE, KeyError, TypeError) as err:
            raise InputError(path, f"cannot load checkpoint ({_first_line(err)})") from None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict saved by a stage (``{"model": ...}`` checkpoints or bare state dicts), weights only."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise InputError(path, f"cannot load weights ({_first_line(err)})") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise InputError(path, "not a state dict")
    return data


def save_state_dict(path: str | os.PathLike[str], state: dict[str, torch.Tensor]) -> None:
    """Save final weights atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_log_rows(path: Path, before_step: int) -> list[str]:
    """Rows of a partial loss log for steps < ``before_step`` (a resumed run rewrites the later ones)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return lines[:1] + [ln for ln in lines[1:] if ln and int(ln.partition(",")[0]) < before_step]


def _train_step(
    net: torch.nn.Module,
    objective: Objective,
    batch: dict[str, Any],
    step: int,
    *,
    batch_size: int,
    accumulate: int,
    device: torch.device,
    use_amp: bool,
) -> tuple[float, dict[str, float]]:
    """Forward/backward of this process's micro-batches of one step (gradients left in ``.grad``), then
    ``end_step``; returns the global-batch loss and parts (summed over micro-batches and processes)."""
    rank, world = distributed.rank_world()
    model = distributed.unwrap(net)
    counts = objective.counts(model, batch)
    totals = None if counts is None else distributed.all_reduce_sum(counts.to(device, torch.float64))
    micro_batches = split_batch(batch, accumulate)
    micro_size = batch_size // (world * accumulate)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    parts_sum: dict[str, float] = {}
    for m, micro_batch in enumerate(micro_batches):
        positions = tuple(rank + (m * micro_size + i) * world for i in range(micro_size))
        micro = MicroBatch(step, positions, batch_size, totals)
        last = m == len(micro_batches) - 1
        no_sync = (
            net.no_sync() if not last and isinstance(net, torch.nn.parallel.DistributedDataParallel) else nullcontext()
        )
        with no_sync:
            with training_autocast(device, use_amp):
                share, parts = objective.loss(net, micro_batch, micro)
            (share * world).backward()  # DDP averages the gradients over the W processes: their sum remains
        loss_sum += share.detach().to(torch.float64)
        for name, value in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + float(value)
    objective.end_step(net, step)
    values = torch.cat(
        [loss_sum.reshape(1), torch.tensor(list(parts_sum.values()), dtype=torch.float64, device=device)]
    )
    values = distributed.all_reduce_sum(values).tolist()
    return values[0], dict(zip(parts_sum, values[1:]))


def fit(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    objective: Objective | Callable[..., tuple[torch.Tensor, dict]],
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    max_steps: int,
    seed: int,
    checkpoint: Path,
    checkpoint_every: int,
    final_weights: Path,
    log_csv: Path,
    device: torch.device,
    fingerprint: str,
    poly_power: float = 0.9,
    num_workers: int = 0,
    amp: bool = False,
    accumulate: int = 1,
    find_unused_parameters: bool = False,
    evaluator: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
    tracker: Any = None,
) -> dict[str, Any]:
    """Train ``model`` for ``max_steps`` steps of ``batch_size`` samples with poly LR, resuming from ``checkpoint``
    if it matches.

    ``objective`` is an :class:`Objective`, or a ``step_fn(model, batch, step) -> (loss, {name: float})`` whose
    loss and parts are means over the batch's samples (see :class:`MeanLoss`). Each step runs as ``accumulate``
    micro-batches per process; under torchrun (a joined process group, :mod:`wsss.runtime.distributed`) the model is
    wrapped in DDP (``find_unused_parameters`` for models with parameters that get no gradient) and each process
    takes its slice of the global batch; the module doc states the equivalence guaranteed. bfloat16 autocast
    wraps the forward passes when ``amp`` (the config's ``cls.amp``, ``irn.amp``, ``seg.amp``; off unless asked)
    and the device is CUDA (:func:`autocast_enabled`).

    Rank 0 alone writes: a checkpoint every ``checkpoint_every`` steps, the loss log ``log_csv`` (step, lr of the
    first group, global-batch loss and parts; ``<log_csv>.partial`` until the end) and ``final_weights`` (the
    state dict). Every process resumes from the same checkpoint; one with another ``fingerprint`` (other
    hyper-parameters) is ignored, and the checkpoint is deleted once the final weights are written, so a forced
    rerun trains from scratch. A non-finite loss stops training before the optimizer step.

    Held-out evaluation (optional): ``evaluator(model) -> {column: value}`` (an object with a ``columns`` tuple,
    e.g. :class:`wsss.pipeline.heldout.HeldoutEvaluator`) runs on rank 0 after every ``eval_every``-th step and after the
    last one; its values fill extra columns of the log (empty on the other rows) and go to ``tracker``
    (:class:`wsss.pipeline.heldout.HeldoutTracker`), whose state is part of the checkpoint. When the tracker says
    ``should_stop`` (patience used up) training ends at that step; when it keeps the best weights, those are the
    ``final_weights``. Returns ``{"steps": steps trained, "max_steps", "stopped_early"}``.
    """
    rank, world = distributed.rank_world()
    main = rank == 0
    if accumulate < 1 or batch_size % (accumulate * world):
        raise ValueError(
            f"batch size {batch_size} does not split into {accumulate} micro-batch(es) on each of {world} process(es)"
        )
    objective = objective if isinstance(objective, Objective) else MeanLoss(objective)
    start_step = 0
    if main:
        for folder in {checkpoint.parent, log_csv.parent, final_weights.parent}:
            folder.mkdir(parents=True, exist_ok=True)
    # the model moves before the optimizer state is loaded: load_state_dict puts each state tensor on its
    # parameter's device (Module.to keeps the Parameter objects, so state loaded earlier would stay on the CPU)
    model.to(device).train()
    if checkpoint.exists():
        ckpt = Checkpoint.load(checkpoint)
        if ckpt.extra.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt.model)
            optimizer.load_state_dict(ckpt.optimizer)
            start_step = ckpt.step
            if tracker is not None and "evaluation" in ckpt.extra:
                tracker.load_state_dict(ckpt.extra["evaluation"])
            log.info("resuming from %s at step %d", checkpoint, start_step)
        else:
            log.warning("ignoring %s: it was written with other hyper-parameters", checkpoint)
    distributed.check_same(start_step, "the step to resume from")
    partial = log_csv.with_name(log_csv.name + ".partial")
    rows = _read_log_rows(partial, start_step) if main else []
    sampler = StepBatchSampler(len(dataset), batch_size, seed, max_steps, start_step, rank, world)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    use_amp = autocast_enabled(device, amp)
    log.info(
        "%d process(es) × %d micro-batch(es) of %d per step; bfloat16 autocast %s",
        world,
        accumulate,
        batch_size // (world * accumulate),
        "on" if use_amp else "off",
    )
    net = distributed.wrap(model, device, find_unused_parameters)
    step = start_step
    eval_columns = tuple(getattr(evaluator, "columns", ()))  # () without an evaluator
    stopped_early = False
    with open(partial, "w") if main else nullcontext() as fh:
        if fh is not None:
            fh.write("\n".join(rows) + ("\n" if rows else ""))
        header_written = bool(rows)
        for batch in progress(
            loader, total=len(sampler), initial=0, desc="train", mininterval=5.0, file=sys.stderr, disable=not main
        ):
            set_poly_lr(optimizer, step, max_steps, poly_power)
            optimizer.zero_grad(set_to_none=True)
            loss, parts = _train_step(
                net,
                objective,
                batch,
                step,
                batch_size=batch_size,
                accumulate=accumulate,
                device=device,
                use_amp=use_amp,
            )
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}")
            optimizer.step()
            metrics: dict[str, float] = {}
            if evaluator is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == max_steps):
                stop = 0.0
                if main:
                    metrics = evaluator(model)
                    if tracker is not None:
                        best = tracker.record(step, metrics, model)
                        stop = float(tracker.should_stop)
                    log.info(
                        "step %d: %s%s",
                        step,
                        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                        " (best so far)" if tracker is not None and best else "",
                    )
                stopped_early = bool(distributed.all_reduce_sum(torch.tensor([stop], device=device)).item())
            if fh is not None:
                if not header_written:
                    fh.write(",".join(["step", "lr", "loss", *parts, *eval_columns]) + "\n")
                    header_written = True
                values = [optimizer.param_groups[0]["lr"], loss, *parts.values()]
                cells = [f"{metrics[c]:.6g}" if c in metrics else "" for c in eval_columns]
                fh.write(f"{step}," + ",".join([*(f"{v:.6g}" for v in values), *cells]) + "\n")
                fh.flush()
            step += 1
            if stopped_early:
                break
            if main and step % checkpoint_every == 0 and step < max_steps:
                extra: dict[str, Any] = {"fingerprint": fingerprint}
                if tracker is not None:
                    extra["evaluation"] = tracker.state_dict()
                Checkpoint(model.state_dict(), optimizer.state_dict(), step, extra).save(checkpoint)
    if main:
        best_state = getattr(tracker, "best_state", None)  # None without a tracker
        save_state_dict(final_weights, best_state if best_state else model.state_dict())
        os.replace(partial, log_csv)
        checkpoint.unlink(missing_ok=True)
    return {"steps": step, "max_steps": max_steps, "stopped_early": stopped_early}


__all__ = [
    "AMP_DTYPE",
    "Checkpoint",
    "MeanLoss",
    "MicroBatch",
    "Objective",
    "StepBatchSampler",
    "autocast_enabled",
    "build_optimizer",
    "check_batch_split",
    "epoch_permutation",
    "fit",
    "load_state_dict_file",
    "poly_lr",
    "resolve_device",
    "save_state_dict",
    "seed_everything",
    "set_poly_lr",
    "split_batch",
    "training_autocast",
]
