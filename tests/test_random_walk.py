"""IRN's random walk as a sparse operator vs the dense (hw)² reference (wsss.ops.random_walk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.ops.path_index import path_pixels, search_offsets
from wsss.ops.random_walk import (
    NeighbourAffinity,
    TransitionOperator,
    affinity_from_boundary,
    dense_transition_matrix,
    random_walk,
    random_walk_dense,
    transition_operator,
)

# (height, width, radius): odd sizes, maps smaller than the radius, and a 1-pixel image
GRIDS = [(7, 9, 5), (12, 10, 5), (12, 10, 3), (5, 13, 2), (3, 4, 5), (1, 1, 5)]


def _boundary(height: int, width: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random boundary probabilities with a full edge along the top row and the right column (touching borders)."""
    g = torch.Generator().manual_seed(seed)
    boundary = torch.rand(height, width, generator=g, dtype=dtype) ** 3
    boundary[0, :] = torch.maximum(boundary[0, :], torch.tensor(0.8, dtype=dtype))
    boundary[:, -1] = 0.95
    return boundary


def _seeds(classes: int, height: int, width: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    return torch.rand(classes, height, width, generator=g, dtype=dtype)


def _to_dense(operator: TransitionOperator) -> torch.Tensor:
    """The (hw)² matrix of a neighbourhood operator: T[j + offset_n, j] = weights[n, j]."""
    height, width = operator.weights.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    dense = torch.zeros(height * width, height * width, dtype=operator.weights.dtype)
    for n, (dy, dx) in enumerate(operator.offsets):
        inside = (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        dense[((ys + dy) * width + xs + dx)[inside], (ys * width + xs)[inside]] = operator.weights[n][inside]
        assert torch.all(operator.weights[n][~inside] == 0), "weight on a neighbour outside the image"
    return dense


def _brute_dense(boundary: np.ndarray, radius: int, beta: float) -> np.ndarray:
    """T by definition: pixel pairs with offset in the disc get (1 − max B on the path)^β, then column sums."""
    height, width = boundary.shape
    disc = set(search_offsets(radius))
    affinity = np.eye(height * width)
    for i in range(height * width):
        for j in range(height * width):
            dy, dx = j // width - i // width, j % width - i % width
            if (dy, dx) in disc:
                y, x = divmod(i, width)
                value = 1 - max(boundary[y + py, x + px] for py, px in path_pixels(dy, dx))
                affinity[i, j] = affinity[j, i] = value
    affinity = affinity**beta
    return affinity / affinity.sum(axis=0, keepdims=True)


def test_dense_reference_matches_definition() -> None:
    boundary = _boundary(5, 6, seed=1)
    for radius in (2, 3):
        got = dense_transition_matrix(boundary, radius=radius, beta=3.0)
        np.testing.assert_allclose(got.numpy(), _brute_dense(boundary.numpy(), radius, 3.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("height", "width", "radius"), GRIDS)
def test_operator_equals_dense_transition(height: int, width: int, radius: int) -> None:
    boundary = _boundary(height, width, seed=height * width)
    operator = transition_operator(affinity_from_boundary(boundary, radius), beta=10)
    assert len(operator.offsets) == 2 * len(search_offsets(radius)) + 1
    dense = dense_transition_matrix(boundary, radius=radius, beta=10)
    torch.testing.assert_close(_to_dense(operator), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("height", "width", "radius"), GRIDS[:4])
def test_affinities_symmetric_with_unit_diagonal(height: int, width: int, radius: int) -> None:
    dense = dense_transition_matrix(_boundary(height, width, seed=7), radius=radius, beta=1.0)
    affinity = dense / torch.diagonal(dense)[None, :]  # T_ij = A_ij / d_j and A_jj = 1 give back A
    torch.testing.assert_close(affinity, affinity.T, rtol=0, atol=1e-12)
    assert torch.all(affinity <= 1) and torch.all(affinity >= 0)


def test_affinity_zero_for_pairs_leaving_the_image() -> None:
    height, width, radius = 9, 11, 5
    aff = affinity_from_boundary(torch.zeros(height, width), radius)
    assert aff.values.shape == (34, height, width) and aff.offsets == tuple(search_offsets(radius))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    for k, (dy, dx) in enumerate(aff.offsets):
        inside = (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        assert torch.equal(aff.values[k], inside.float()), (dy, dx)


def test_affinity_batch_matches_single_images() -> None:
    boundaries = torch.stack([_boundary(8, 11, seed=s, dtype=torch.float32) for s in range(3)])
    batched = affinity_from_boundary(boundaries[:, None], radius=4).values
    assert batched.shape == (3, len(search_offsets(4)), 8, 11)
    operator = transition_operator(affinity_from_boundary(boundaries[:, None], radius=4))
    x = _seeds(2, 8, 11, seed=0, dtype=torch.float32)[None].repeat(3, 1, 1, 1)
    walked = operator.apply(x, steps=5)
    for n in range(3):
        single = affinity_from_boundary(boundaries[n], radius=4)
        assert torch.equal(batched[n], single.values)
        torch.testing.assert_close(walked[n], transition_operator(single).apply(x[n], steps=5))


def test_operator_is_column_stochastic_and_averages() -> None:
    boundary = _boundary(12, 10, seed=5)
    operator = transition_operator(affinity_from_boundary(boundary, 5), beta=10)
    torch.testing.assert_close(operator.weights.sum(dim=0), torch.ones(12, 10, dtype=torch.float64))
    ones = torch.ones(2, 12, 10, dtype=torch.float64)
    torch.testing.assert_close(operator.apply(ones, steps=37), ones)  # 1ᵀT = 1ᵀ: constants are fixed points
    x = _seeds(3, 12, 10, seed=5)
    walked = operator.apply(x, steps=64)
    low, high = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    assert torch.all(walked >= low - 1e-12) and torch.all(walked <= high + 1e-12)
    # the dense T conserves mass when applied as T·x (its columns sum to 1); IRN applies xᵀ·T
    dense = dense_transition_matrix(boundary, 5, 10)
    flat = x.reshape(3, -1)
    torch.testing.assert_close((dense @ flat.T).sum(dim=0), flat.sum(dim=1))


@pytest.mark.parametrize(("height", "width", "radius"), GRIDS)
@pytest.mark.parametrize("classes", [1, 3])
def test_random_walk_equals_dense_reference(height: int, width: int, radius: int, classes: int) -> None:
    boundary = _boundary(height, width, seed=height + width)
    seeds = _seeds(classes, height, width, seed=height + width)
    reference = random_walk_dense(seeds, boundary, radius=radius, beta=10, exp_times=8)
    got = random_walk(seeds.float(), boundary.float(), radius=radius, beta=10, steps=256)
    assert got.dtype == torch.float32 and got.shape == (classes, height, width)
    assert float((got.double() - reference).abs().max()) <= 1e-4
    scale = reference.max()
    if scale > 0:  # IRN divides by the global max before thresholding
        assert float((got.double() / got.double().max() - reference / scale).abs().max()) <= 1e-4
    got64 = random_walk(seeds, boundary, radius=radius, beta=10, steps=256)
    torch.testing.assert_close(got64, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("height", "width"), [(7, 9), (12, 10)])
def test_random_walk_matches_irn_float32_reference(height: int, width: int) -> None:
    boundary = _boundary(height, width, seed=11, dtype=torch.float32)
    seeds = _seeds(2, height, width, seed=11, dtype=torch.float32)
    reference = random_walk_dense(seeds, boundary, radius=5, beta=10, exp_times=8)  # float32, as IRN runs it
    assert reference.dtype == torch.float32
    assert float((random_walk(seeds, boundary) - reference).abs().max()) <= 1e-4


@pytest.mark.parametrize("exp_times", [0, 1, 3])
def test_steps_are_powers_of_the_squared_matrix(exp_times: int) -> None:
    boundary = _boundary(8, 7, seed=exp_times)
    seeds = _seeds(2, 8, 7, seed=exp_times)
    reference = random_walk_dense(seeds, boundary, radius=3, beta=2.0, exp_times=exp_times)
    got = random_walk(seeds, boundary, radius=3, beta=2.0, steps=2**exp_times)
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-12)


def test_walk_does_not_cross_a_closed_boundary() -> None:
    height, width = 10, 14
    boundary = torch.full((height, width), 0.05)
    boundary[:, 6] = 1.0
    seeds = torch.zeros(2, height, width)
    seeds[0, 2:5, 1:3] = 1.0
    seeds[1, 6:8, 10:12] = 1.0
    walked = random_walk(seeds, boundary)
    assert torch.all(walked[0, :, 6:] == 0) and torch.all(walked[1, :, :7] == 0)
    assert torch.all(walked[0, :, :6] > 0) and torch.all(walked[1, :, 7:] > 0)  # spreads within its own region
    assert float(walked[0, :, :6].std()) < 0.1 * float(seeds[0, :, :6].std())  # and smooths it


def test_random_walk_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        random_walk(torch.zeros(2, 5, 6), torch.zeros(5, 7))
    with pytest.raises(ValueError):
        random_walk(torch.zeros(5, 6), torch.zeros(5, 6))
    with pytest.raises(ValueError):
        affinity_from_boundary(torch.zeros(2, 5, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_walk_cuda_matches_cpu() -> None:
    boundary = _boundary(31, 23, seed=2, dtype=torch.float32)
    seeds = _seeds(3, 31, 23, seed=2, dtype=torch.float32)
    cpu = random_walk(seeds, boundary)
    cuda = random_walk(seeds.cuda(), boundary.cuda())
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-6)


def test_mixed_dtypes_compute_in_float64_and_return_the_wider_type() -> None:
    """float32 inputs are walked in float64 and rounded once at the end: bit-identical to the float64 walk cast to
    float32; a float64 seed or boundary makes the result float64, for the sparse walk and the dense reference alike.
    Planted bugs caught: the boundary (or the dense reference's 1 − B) left in float32, the output type taken from
    one input only, the dense reference's float type from one input or none."""
    boundary = _boundary(6, 7, seed=3)
    seeds = _seeds(2, 6, 7, seed=3)
    b32, s32 = boundary.float(), seeds.float()
    want = random_walk(s32.double(), b32.double(), radius=3, steps=16)
    assert torch.equal(random_walk(s32, b32, radius=3, steps=16), want.float())
    for s, b in [(s32.double(), b32), (s32, b32.double())]:
        got = random_walk(s, b, radius=3, steps=16)
        assert got.dtype == torch.float64 and torch.equal(got, want)
        dense = random_walk_dense(s, b, radius=3, exp_times=4)
        assert dense.dtype == torch.float64
        assert torch.equal(dense, random_walk_dense(s32.double(), b32.double(), radius=3, exp_times=4))


def test_apply_steps_and_dtypes() -> None:
    """One step by default, 0 steps is the identity, negative steps are refused; a float64 operator walks float32
    maps in float32 (exactly as its float32 copy does). Planted bugs caught: a default of 2 steps, refusing 0 steps, the operator's weights not cast
    to the maps' type, messages replaced by None."""
    operator = transition_operator(affinity_from_boundary(_boundary(6, 7, seed=1), 3))
    x = _seeds(2, 6, 7, seed=1)
    assert torch.equal(operator.apply(x), operator.apply(x, steps=1)) and not torch.equal(operator.apply(x), x)
    assert torch.equal(operator.apply(x, steps=0), x)
    walked32 = operator.apply(x.float(), steps=3)
    as32 = TransitionOperator(operator.offsets, operator.weights.float())
    assert walked32.dtype == torch.float32 and torch.equal(walked32, as32.apply(x.float(), steps=3))
    torch.testing.assert_close(walked32, operator.apply(x, steps=3).float(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"^steps must be >= 0, got -1$"):
        operator.apply(x, steps=-1)
    with pytest.raises(ValueError, match=r"^maps are \(2, 6, 8\), operator is for 6x7$"):
        operator.apply(torch.zeros(2, 6, 8))


def test_shape_errors_name_the_shapes() -> None:
    """Planted bugs caught: ``ValueError(None)`` or an unformatted shape in the messages."""
    with pytest.raises(ValueError, match=r"^seeds must be C×H×W and boundary H×W, got \(2, 5, 6\) and \(5, 7\)$"):
        random_walk(torch.zeros(2, 5, 6), torch.zeros(5, 7))
    with pytest.raises(ValueError, match=r"^boundary must be H×W, got \(1, 5, 6\)$"):
        dense_transition_matrix(torch.zeros(1, 5, 6))
    for shape in [(2, 5, 6), (1, 2, 5, 6)]:  # planted bug caught: ``dim() == 4 or shape[1] == 1`` takes N×2×H×W
        with pytest.raises(
            ValueError, match=rf"^boundary must be H×W or N×1×H×W, got \({', '.join(map(str, shape))}\)$"
        ):
            affinity_from_boundary(torch.zeros(shape))


def test_operator_from_a_single_offset_chain() -> None:
    """A hand-made one-offset affinity (a horizontal chain, a = 1 inside the row): T's columns sum to 1 and its
    planes are self, right and left neighbour. Planted bug caught: the self plane shaped after ``forward[1]``."""
    values = torch.ones(1, 2, 4)
    values[0, :, -1] = 0  # the right neighbour of the last column is outside
    operator = transition_operator(NeighbourAffinity(((0, 1),), values), beta=1.0)
    assert operator.offsets == ((0, 0), (0, 1), (0, -1))
    # column sums: 1 + a(right) + a(left): 2 at the row ends, 3 inside
    torch.testing.assert_close(operator.weights[0], torch.tensor([[0.5, 1 / 3, 1 / 3, 0.5]] * 2))
    torch.testing.assert_close(operator.weights.sum(dim=0), torch.ones(2, 4))


def test_half_precision_boundaries_are_computed_in_float32() -> None:
    """A float16 boundary (as stored CAM-derived maps may be) gives the float32 results of its float32 copy, in the
    dense reference too. Planted bugs caught: path affinities computed in float16 (``batch.to(None)``, or the dense
    reference's ``boundary.to(None)``)."""
    boundary = _boundary(5, 6, seed=2, dtype=torch.float32).half()
    values = affinity_from_boundary(boundary, radius=3).values
    assert values.dtype == torch.float32 and torch.equal(values, affinity_from_boundary(boundary.float(), 3).values)
    dense = dense_transition_matrix(boundary, radius=3, beta=2.0)
    assert dense.dtype == torch.float32 and torch.equal(dense, dense_transition_matrix(boundary.float(), 3, 2.0))
    seeds = _seeds(2, 5, 6, seed=2, dtype=torch.float32).half()
    walked = random_walk(seeds, boundary, radius=3, steps=4)
    assert walked.dtype == torch.float32 and torch.equal(
        walked, random_walk(seeds.float(), boundary.float(), 3, steps=4)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dense_reference_cuda_matches_cpu() -> None:
    """Planted bugs caught (on a CUDA machine only): index or matrix tensors made on the CPU (``device=None``)."""
    boundary = _boundary(6, 7, seed=5)
    cpu = dense_transition_matrix(boundary, radius=3)
    cuda = dense_transition_matrix(boundary.cuda(), radius=3)
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-12)
