"""IRN's random walk on boundary-derived affinities (docs/method.md#random-walk), as a sparse neighbourhood operator.

IRN builds a dense (hw)×(hw) affinity matrix A over the stride-4 pixels of one image: A_ii = 1; for every pair (i, j)
whose offset is in the radius-r half-disc (either direction), A_ij = A_ji = 1 − max B over the path; all other
entries 0. Pairs that leave the image get 0 because IRN pads B with 1.0 on the left, right and bottom. Then
T = A^∘β / colsum(A^∘β) (column-stochastic), T is squared ``exp_times`` times, and rw_c = vec(x_c)ᵀ·T^(2^exp_times)
with x_c = seed_c ⊙ (1 − B).

Here T is kept as its 2K+1 non-zero diagonals: ``weights[..., n, y, x] = T[(y, x) + nb_n, (y, x)]`` for the
neighbour offsets nb = (0, 0), +o_1..+o_K, −o_1..−o_K, so one step (xᵀT)_j = Σ_n weights[n, j]·x[j + nb_n] is
2K+1 shifted multiply-adds over zero-padded buffers, and ``steps = 2^exp_times`` steps give xᵀT^(2^exp_times).
Because T's columns sum to 1, xᵀT averages x over each pixel's neighbourhood: constants are fixed points and values
stay within [min x, max x] (it is T·x, not xᵀT, that would conserve the total mass).

The dense reference (``dense_transition_matrix``, ``random_walk_dense``) follows IRN literally and is meant for
tests and benchmarks only: at VOC size (125×94 = 11750 nodes) each matrix is 0.55 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss.ops.path_index import Offset, PathIndex

RADIUS = 5
BETA = 10.0
EXP_TIMES = 8
STEPS = 2**EXP_TIMES
WALK_DTYPE = torch.float64


@dataclass(frozen=True)
class NeighbourAffinity:
    """Affinities of every pixel to its half-disc neighbours: ``values[..., k, y, x] = a((y, x), (y, x) + offsets[k])``.

    ``values`` is ...×K×H×W, 0 where the neighbour lies outside the image. The reverse pair uses the same number.
    """

    offsets: tuple[Offset, ...]
    values: torch.Tensor


@dataclass(frozen=True)
class TransitionOperator:
    """Column-stochastic transition matrix T as neighbourhood planes: ``weights[..., n, j] = T[j + offsets[n], j]``.

    ``weights`` is ...×(2K+1)×H×W; ``offsets`` lists (0, 0), then the K half-disc offsets, then their negatives.
    """

    offsets: tuple[Offset, ...]
    weights: torch.Tensor

    @property
    def margin(self) -> int:
        return max(max(abs(dy), abs(dx)) for dy, dx in self.offsets)

    def apply(self, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """xᵀ·T^steps for maps x of shape ...×C×H×W (every channel with the same T), by ``steps`` sparse steps."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        height, width = self.weights.shape[-2:]
        if tuple(x.shape[-2:]) != (height, width):
            raise ValueError(f"maps are {tuple(x.shape)}, operator is for {height}x{width}")
        m = self.margin
        planes = self.weights.to(x.dtype).unsqueeze(-4)  # ...×1×(2K+1)×H×W, broadcasts over channels
        planes = [planes[..., n, :, :] for n in range(len(self.offsets))]
        current = x.new_zeros(*x.shape[:-2], height + 2 * m, width + 2 * m)
        current[..., m : m + height, m : m + width] = x
        following = torch.zeros_like(current)  # its border stays 0: only the interior is ever written
        for _ in range(steps):
            out = following[..., m : m + height, m : m + width]
            torch.mul(planes[0], current[..., m : m + height, m : m + width], out=out)
            for plane, (dy, dx) in zip(planes[1:], self.offsets[1:]):
                out.addcmul_(plane, current[..., m + dy : m + dy + height, m + dx : m + dx + width])
            current, following = following, current
        return current[..., m : m + height, m : m + width].clone()


def _as_batch(boundary: torch.Tensor) -> torch.Tensor:
    """H×W or N×1×H×W → N×1×H×W."""
    if boundary.dim() == 2:
        return boundary[None, None]
    if boundary.dim() == 4 and boundary.shape[1] == 1:
        return boundary
    raise ValueError(f"boundary must be H×W or N×1×H×W, got {tuple(boundary.shape)}")


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (float16 CAMs are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def affinity_from_boundary(boundary: torch.Tensor, radius: int = RADIUS) -> NeighbourAffinity:
    """Path affinities a = 1 − max B of every pixel to its ``search_offsets(radius)`` neighbours.

    ``boundary`` (probabilities in [0, 1]) is H×W (→ values K×H×W) or N×1×H×W (→ N×K×H×W). As in IRN, B is padded
    with 1.0 by ``radius`` px on the left, right and bottom, so pairs leaving the image get affinity 0 (any pad
    ≥ radius − 1 gives the same values).
    """
    batch = _as_batch(boundary)
    batch = batch.to(_float_dtype(batch))
    height, width = batch.shape[-2:]
    index = PathIndex(radius, height + radius, width + 2 * radius)
    padded = F.pad(batch, (radius, radius, 0, radius), mode="constant", value=1.0)
    first_col = radius - index.margin  # source window column of image column 0
    values = index.path_affinity(padded)[..., :height, first_col : first_col + width]
    if boundary.dim() == 2:
        values = values[0]
    return NeighbourAffinity(tuple(index.offsets), values.contiguous())


def _shift(planes: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., y, x] = planes[..., y − dy, x − dx], 0 where that falls outside (padded slicing, no wrap-around)."""
    height, width = planes.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(planes, (p, p, p, p))
    return padded[..., p - dy : p - dy + height, p - dx : p - dx + width]


def transition_operator(affinity: NeighbourAffinity, beta: float = BETA) -> TransitionOperator:
    """T = A^∘β normalised by column sums, as neighbourhood planes (self, +offsets, −offsets).

    At pixel j the plane for +o holds A_{j+o, j} = values[o, j]; the plane for −o holds
    A_{j−o, j} = values[o, j − o] (the pair stored at its source j − o).
    """
    powered = affinity.values.pow(beta)
    forward = [powered[..., k, :, :] for k in range(len(affinity.offsets))]
    backward = [_shift(plane, dy, dx) for plane, (dy, dx) in zip(forward, affinity.offsets)]
    self_plane = torch.ones_like(forward[0])
    planes = torch.stack([self_plane, *forward, *backward], dim=-3)
    weights = planes / planes.sum(dim=-3, keepdim=True)
    offsets = ((0, 0), *affinity.offsets, *((-dy, -dx) for dy, dx in affinity.offsets))
    return TransitionOperator(offsets, weights)


def _check_inputs(seeds: torch.Tensor, boundary: torch.Tensor) -> None:
    if seeds.dim() != 3 or boundary.dim() != 2 or tuple(seeds.shape[-2:]) != tuple(boundary.shape):
        raise ValueError(f"seeds must be C×H×W and boundary H×W, got {tuple(seeds.shape)} and {tuple(boundary.shape)}")


def random_walk(
    seeds: torch.Tensor,
    boundary: torch.Tensor,
    radius: int = RADIUS,
    beta: float = BETA,
    steps: int = STEPS,
) -> torch.Tensor:
    """IRN's ``propagate_to_edge`` without the dense matrix: C×H×W seeds, H×W boundary → C×H×W (unnormalised).

    x_c = seed_c ⊙ (1 − B), then ``steps`` sparse steps xᵀT (``steps = 2**exp_times``; IRN: 256). Any H, W, on the
    inputs' device (CPU or CUDA). The operator and the walk are computed in float64 and the result is returned as
    float32 (float64 if an input is float64): a float32 walk drifts by ~1e-4 over 256 steps (rounding of the
    69-term sums is applied 256 times), float64 costs little here (the state is only C×H×W).
    """
    _check_inputs(seeds, boundary)
    out_dtype = _float_dtype(seeds, boundary)
    boundary = boundary.to(WALK_DTYPE)
    operator = transition_operator(affinity_from_boundary(boundary, radius), beta)
    return operator.apply(seeds.to(WALK_DTYPE) * (1.0 - boundary), steps).to(out_dtype)


def dense_transition_matrix(boundary: torch.Tensor, radius: int = RADIUS, beta: float = BETA) -> torch.Tensor:
    """IRN's dense T (hw×hw, row/column index = y·W + x) for an H×W boundary map. Reference only: O((hw)²) memory.

    Built IRN's way: pad B with 1.0 (left, right, bottom), path affinities on the padded grid, scatter pair values
    and their transposes plus a unit diagonal, keep the image pixels, then A^∘β / colsum.
    """
    if boundary.dim() != 2:
        raise ValueError(f"boundary must be H×W, got {tuple(boundary.shape)}")
    dtype = _float_dtype(boundary)
    height, width = boundary.shape
    padded_h, padded_w = height + radius, width + 2 * radius
    index = PathIndex(radius, padded_h, padded_w)
    padded = F.pad(boundary.to(dtype)[None, None], (radius, radius, 0, radius), mode="constant", value=1.0)
    values = index.path_affinity(padded)[0].reshape(index.num_offsets, -1)  # K × h'w'
    rows = torch.arange(index.out_height, device=boundary.device)
    cols = torch.arange(index.out_width, device=boundary.device) + index.margin
    src_y, src_x = (t.reshape(-1) for t in torch.meshgrid(rows, cols, indexing="ij"))
    offsets = index.offsets_tensor.to(boundary.device)
    dst_y, dst_x = src_y[None] + offsets[:, :1], src_x[None] + offsets[:, 1:]  # K × h'w' (padded grid)
    src_y, src_x = src_y[None].expand_as(dst_y), src_x[None].expand_as(dst_x)
    inside = (src_y < height) & (dst_y < height)
    inside &= (src_x >= radius) & (src_x < radius + width) & (dst_x >= radius) & (dst_x < radius + width)
    src = (src_y * width + src_x - radius)[inside]
    dst = (dst_y * width + dst_x - radius)[inside]
    nodes = height * width
    affinity = torch.zeros(nodes, nodes, dtype=dtype, device=boundary.device)
    affinity[src, dst] = values[inside]
    affinity[dst, src] = values[inside]
    affinity.fill_diagonal_(1.0)
    affinity.pow_(beta)
    affinity /= affinity.sum(dim=0, keepdim=True)
    return affinity


def random_walk_dense(
    seeds: torch.Tensor,
    boundary: torch.Tensor,
    radius: int = RADIUS,
    beta: float = BETA,
    exp_times: int = EXP_TIMES,
) -> torch.Tensor:
    """IRN's ``propagate_to_edge`` literally: T squared ``exp_times`` times, then vec(x)ᵀ·T. Reference only."""
    _check_inputs(seeds, boundary)
    dtype = _float_dtype(seeds, boundary)
    transition = dense_transition_matrix(boundary.to(dtype), radius, beta)
    for _ in range(exp_times):
        transition = transition @ transition
    x = seeds.to(dtype) * (1.0 - boundary.to(dtype))
    return (x.reshape(x.shape[0], -1) @ transition).view_as(x)
