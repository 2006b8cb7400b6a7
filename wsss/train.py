"""Training machinery shared by every training stage: seeding, poly LR, resumable data order, checkpoints.

Resume is exact on CPU: the data order and every augmentation draw are functions of (seed, step), not of a
running RNG, so a run killed after step s and resumed from its checkpoint sees the same batches as an
uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
import sys
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from wsss.errors import InputError
from wsss.io import atomic_path

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); deterministic cuDNN where it is used."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
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


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """``base_lr · (1 − step/max_steps)^power`` (the poly schedule of IRN/VWL/DeepLab), step counted from 0."""
    return base_lr * (1.0 - step / max_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, max_steps: int, power: float = 0.9) -> None:
    """Set every group's lr from its ``initial_lr`` (base lr × group multiplier) for this step."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, max_steps, power)


def build_optimizer(groups: Sequence[dict[str, Any]], name: str, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    """SGD or AdamW over param groups ``{"params", "lr_mult", optional "weight_decay"}``.

    Each group's ``initial_lr`` is ``lr · lr_mult``; :func:`set_poly_lr` decays from it. Empty groups are dropped.
    """
    torch_groups = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        base = lr * g.get("lr_mult", 1.0)
        torch_groups.append({"params": params, "lr": base, "initial_lr": base,
                             "weight_decay": g.get("weight_decay", weight_decay)})
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

    def __init__(self, num_items: int, batch_size: int, seed: int, max_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
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
        order = epoch_permutation(self.num_items, self.seed, epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        return [(int(i), int(self.seed * 1_000_003 + step * self.batch_size + j)) for j, i in enumerate(order)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.max_steps):
            yield self.global_batch(step)[self.rank::self.world_size]


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
    def load(path: str | os.PathLike[str]) -> "Checkpoint":
        """Load with ``weights_only=True``; an unreadable file is an InputError naming it."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return Checkpoint(data["model"], data["optimizer"], int(data["step"]), dict(data.get("extra", {})))
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as err:
            raise InputError(path, f"cannot load checkpoint ({str(err).splitlines()[0]})") from None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict saved by a stage (``{"model": ...}`` checkpoints or bare state dicts), weights only."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        raise InputError(path, f"cannot load weights ({str(err).splitlines()[0]})") from None
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
    return lines[:1] + [ln for ln in lines[1:] if ln and int(ln.split(",", 1)[0]) < before_step]


def fit(model: torch.nn.Module, dataset: torch.utils.data.Dataset, step_fn: Callable[..., tuple[torch.Tensor, dict]],
        optimizer: torch.optim.Optimizer, *, batch_size: int, max_steps: int, seed: int, checkpoint: Path,
        checkpoint_every: int, final_weights: Path, log_csv: Path, device: torch.device, fingerprint: str, poly_power: float = 0.9,
        num_workers: int = 0, amp: bool = True) -> None:
    """Train ``model`` for ``max_steps`` steps with poly LR, resuming from ``checkpoint`` if it matches.

    ``step_fn(model, batch, step) -> (loss, {name: float})`` does the forward pass and the loss (and any
    per-step model-side updates such as a memory bank). A checkpoint is written every ``checkpoint_every`` steps;
    a checkpoint with another ``fingerprint`` (other hyper-parameters) is ignored, and the checkpoint is deleted
    once ``final_weights`` (the state dict) is written, so a forced rerun trains from scratch. The loss log is ``log_csv`` (step, lr of the
    first group, loss parts), written as ``<log_csv>.partial`` until the end.
    """
    start_step = 0
    for folder in {checkpoint.parent, log_csv.parent, final_weights.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    if checkpoint.exists():
        ckpt = Checkpoint.load(checkpoint)
        if ckpt.extra.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt.model)
            optimizer.load_state_dict(ckpt.optimizer)
            start_step = ckpt.step
            log.info("resuming from %s at step %d", checkpoint, start_step)
        else:
            log.warning("ignoring %s: it was written with other hyper-parameters", checkpoint)
    partial = log_csv.with_name(log_csv.name + ".partial")
    rows = _read_log_rows(partial, start_step)
    sampler = StepBatchSampler(len(dataset), batch_size, seed, max_steps, start_step)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    use_amp = amp and device.type == "cuda"
    model.to(device).train()
    step = start_step
    with open(partial, "w") as fh:
        fh.write("\n".join(rows) + ("\n" if rows else ""))
        header_written = bool(rows)
        for batch in tqdm(loader, total=len(sampler), initial=0, desc="train", mininterval=5.0, file=sys.stderr):
            set_poly_lr(optimizer, step, max_steps, poly_power)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = step_fn(model, batch, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not header_written:
                fh.write(",".join(["step", "lr", "loss", *parts]) + "\n")
                header_written = True
            values = [optimizer.param_groups[0]["lr"], loss.item(), *parts.values()]
            fh.write(f"{step}," + ",".join(f"{v:.6g}" for v in values) + "\n")
            fh.flush()
            step += 1
            if step % checkpoint_every == 0 and step < max_steps:
                Checkpoint(model.state_dict(), optimizer.state_dict(), step, {"fingerprint": fingerprint}).save(checkpoint)
    save_state_dict(final_weights, model.state_dict())
    os.replace(partial, log_csv)
    checkpoint.unlink(missing_ok=True)


__all__ = ["fit", "Checkpoint", "StepBatchSampler", "build_optimizer", "epoch_permutation", "load_state_dict_file",
           "poly_lr", "resolve_device", "save_state_dict", "seed_everything", "set_poly_lr"]
