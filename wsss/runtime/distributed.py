"""Data-parallel training plumbing: the process group under torchrun, DDP wrapping, synchronised BatchNorm and the
few collectives the trainer needs. Outside torchrun (``WORLD_SIZE`` unset or 1) every helper is a no-op.

Equivalence contract (see :func:`wsss.engine.train.fit`): with W processes each rank runs its slice of the same global
batch, its loss is its *share* of the global-batch loss, and the gradients DDP averages are scaled by W, so the
update equals the single-process one. What keeps ranks identical beyond the gradients:

* ``norm: batch`` BatchNorm layers become :class:`SyncBatchNorm2d` (statistics over the samples of all ranks), so
  the normalisation and the running statistics are those of one process seeing the whole (micro-)batch;
  frozen BatchNorm (:class:`~wsss.models.backbone.FixedBatchNorm`) is left alone.
* Other step-level state (the VWL-M memory bank) is updated from all-reduced statistics (:func:`all_reduce_sum`).
* DDP copies rank 0's buffers once, not before every forward pass: they stay identical by construction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: rank, number of processes, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and final weights."""
        return self.rank == 0


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables; (0, 1, 0) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))  # noqa: PLW1508


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def session(device: torch.device) -> Iterator[DistEnv]:
    """Join the process group when started by torchrun with ``WORLD_SIZE > 1`` and leave it on exit.

    Under torchrun a CUDA ``device`` becomes ``cuda:<LOCAL_RANK>`` (one GPU per process). A single process yields
    its device unchanged."""
    rank, world, local = launch_env()
    if world <= 1:
        yield DistEnv(0, 1, 0, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device))
    log.info("process group: %d processes (%s), this is rank %d on %s", world, backend_for(device), rank, device)
    try:
        yield DistEnv(rank, world, local, device)
    finally:
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no autograd) and return it; identity for one process."""
    if rank_world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def check_same(value: int, what: str) -> None:
    """Raise unless every process holds the same integer ``value`` (e.g. the step a resumed run starts at)."""
    if rank_world()[1] <= 1:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(f"processes disagree on {what}: from {-int(t[1])} to {int(t[0])}")


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of an N×C×H×W tensor, accumulated in float64."""
    return t.sum(dim=(0, 2, 3), dtype=torch.float64)


def _expand(v: torch.Tensor) -> torch.Tensor:
    return v[None, :, None, None]


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = (x − mean)·invstd·w + b with mean/invstd over all processes; the backward all-reduces Σdy and
    Σdy·(x − mean) (float64), giving each process the input gradient of the global normalisation and its local
    share of the weight and bias gradients (DDP sums those)."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        mean: torch.Tensor,
        invstd: torch.Tensor,
        count: float,
    ) -> torch.Tensor:
        out = (x.float() - _expand(mean)) * _expand(invstd)
        if weight is not None:
            out = out * _expand(weight.float()) + _expand(bias.float())
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count = count
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        dy = grad.float()
        xmu = x.float() - _expand(mean)
        local = torch.cat([_channel_sum(dy), _channel_sum(dy * xmu)])
        c = x.shape[1]
        grad_weight = (local[c:] * invstd.double()).to(weight.dtype) if weight is not None else None
        grad_bias = local[:c].to(weight.dtype) if weight is not None else None
        total = local.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        mean_dy = (total[:c] / ctx.count).float()
        mean_dy_xmu = (total[c:] / ctx.count).float()
        scale = invstd * (weight.float() if weight is not None else 1.0)
        grad_x = (dy - _expand(mean_dy) - xmu * _expand(invstd * invstd * mean_dy_xmu)) * _expand(scale)
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the batch of every process (any backend, CPU or CUDA).

    Per channel each process's pixel sum, its sum of squared deviations from its own mean and n·mean² (float64)
    are all-reduced in one collective and combined (Chan et al.) into the mean and the biased variance for
    normalisation (the unbiased one for the running estimate), as :class:`torch.nn.BatchNorm2d` does for one
    process with the whole batch; the backward is that of the global normalisation (one more collective).
    Eval mode, or a single process, is plain BatchNorm. The state dict is that of BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or rank_world()[1] <= 1:
            return super().forward(x)
        with torch.no_grad():
            c = x.shape[1]
            xf = x.float()
            n_local = xf.numel() // c
            local_sum = _channel_sum(xf)
            local_mean = local_sum / max(n_local, 1)
            m2 = _channel_sum((xf - _expand(local_mean.float())).square())
            count = torch.full((1,), float(n_local), dtype=torch.float64, device=x.device)
            stats = torch.cat([local_sum, m2, local_sum * local_mean, count])
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            n = float(stats[-1])
            mean = stats[:c] / n
            # Σ_r M2_r + Σ_r n_r·mean_r² − n·mean²: the cancellation happens only between the process means
            var = ((stats[c : 2 * c] + stats[2 * c : 3 * c] - n * mean * mean) / n).clamp(min=0)
            if self.track_running_stats and self.running_mean is not None:
                self._update_running(mean, var, n)
            invstd = torch.rsqrt(var + self.eps).float()
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, mean.float(), invstd, n)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_batchnorm(model: nn.Module) -> int:
    """Replace every plain :class:`torch.nn.BatchNorm2d` (exactly that class: frozen subclasses stay) by a
    :class:`SyncBatchNorm2d` sharing its parameters and buffers, so an optimizer built before keeps working.
    Returns how many layers were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.BatchNorm2d:
                continue
            sync = SyncBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            sync.weight, sync.bias = child.weight, child.bias
            if child.track_running_stats:
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(parent, name, sync)
            replaced += 1
    return replaced


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP around ``model`` (already on ``device``) when a process group is joined, after :func:`convert_batchnorm`;
    the model itself otherwise. Buffers are synchronised from rank 0 once, not at every forward pass (they stay
    identical by construction)."""
    if rank_world()[1] <= 1:
        return model
    replaced = convert_batchnorm(model)
    if replaced:
        log.info("synchronised %d BatchNorm layers across processes", replaced)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (step functions read its attributes), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


__all__ = [
    "DistEnv",
    "SyncBatchNorm2d",
    "all_reduce_sum",
    "backend_for",
    "check_same",
    "convert_batchnorm",
    "launch_env",
    "rank_world",
    "session",
    "unwrap",
    "wrap",
]
