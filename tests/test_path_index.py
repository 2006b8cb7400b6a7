"""IRN pair geometry: offsets, paths, path affinities from boundaries, pair labels (wsss.ops.path_index)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss.ops.path_index import PathIndex, path_pixels, search_offsets


def _segment_distance(py: int, px: int, dy: int, dx: int) -> float:
    """Euclidean distance from (py, px) to the segment (0, 0)–(dy, dx), by clamped projection."""
    t = min(1.0, max(0.0, (py * dy + px * dx) / (dy * dy + dx * dx)))
    return math.hypot(py - t * dy, px - t * dx)


def _brute_affinity(boundary: np.ndarray, radius: int) -> np.ndarray:
    """1 − max B over the path of every (source, offset), by plain loops over IRN's source window."""
    n, _, height, width = boundary.shape
    m = radius - 1
    offsets = search_offsets(radius)
    out = np.zeros((n, len(offsets), height - m, width - 2 * m), boundary.dtype)
    for k, (dy, dx) in enumerate(offsets):
        path = path_pixels(dy, dx)
        for y in range(height - m):
            for x in range(m, width - m):
                out[:, k, y, x - m] = 1 - np.max([boundary[:, 0, y + py, x + px] for py, px in path], axis=0)
    return out


def test_search_offsets_counts_and_entries() -> None:
    r10, r5 = search_offsets(10), search_offsets(5)
    assert len(r10) == 152 and len(r5) == 34
    assert r5[:6] == [(0, 1), (0, 2), (0, 3), (0, 4), (1, -4), (1, -3)]
    assert r5[-1] == (4, 2) and (4, 3) not in r5 and (3, 3) in r5  # 16 + 9 = 25 is not < 25
    assert r10[:9] == [(0, dx) for dx in range(1, 10)] and r10[9] == (1, -9)
    assert search_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]


@pytest.mark.parametrize("radius", [2, 5, 10])
def test_search_offsets_cover_each_pair_once(radius: int) -> None:
    offsets = search_offsets(radius)
    assert (0, 0) not in offsets and all(dy >= 0 for dy, _ in offsets)
    assert all(dx > 0 for dy, dx in offsets if dy == 0)
    half = set(offsets)
    assert len(half) == len(offsets)
    assert not half & {(-dy, -dx) for dy, dx in half}
    disc = {(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)}
    disc = {(dy, dx) for dy, dx in disc if 0 < dy * dy + dx * dx < radius * radius}
    assert half | {(-dy, -dx) for dy, dx in half} == disc


def test_search_offsets_rejects_bad_radius() -> None:
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError):
            search_offsets(bad)


def test_path_pixels_known_paths() -> None:
    assert path_pixels(0, 3) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert path_pixels(0, 0) == [(0, 0)]
    assert set(path_pixels(1, 1)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # (2, 3): (0, 2) is 4/√13 ≈ 1.11 from the segment, (1, 0) is 3/√13 ≈ 0.83
    assert set(path_pixels(2, 3)) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)}
    assert set(path_pixels(1, -2)) == {(0, 0), (0, -1), (0, -2), (1, 0), (1, -1), (1, -2)}  # all within 2/√5
    assert set(path_pixels(3, 2)) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 1), (3, 2)}


@pytest.mark.parametrize("offset", search_offsets(10))
def test_path_pixels_are_points_within_one_of_the_segment(offset: tuple[int, int]) -> None:
    dy, dx = offset
    box = [(y, x) for y in range(-3, dy + 4) for x in range(min(0, dx) - 3, max(0, dx) + 4)]
    expected = {p for p in box if _segment_distance(*p, dy, dx) < 1 - 1e-12}
    path = path_pixels(dy, dx)
    assert set(path) == expected and len(path) == len(expected)
    assert path[0] == (0, 0) and path[-1] == (dy, dx)
    assert {(dy - y, dx - x) for y, x in path} == expected  # same path seen from the other end: a_ij = a_ji


def test_source_window_irn_128() -> None:
    index = PathIndex(10, 128, 128)
    assert (index.out_height, index.out_width, index.num_offsets) == (119, 110, 152)
    rows, cols = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    src_rows, src_cols = index.sources(rows), index.sources(cols)
    assert src_rows[:, 0].tolist() == list(range(119))  # rows 0..127−9
    assert src_cols[0].tolist() == list(range(9, 119))  # cols 9..127−9
    dst_rows, dst_cols = index.destinations(rows), index.destinations(cols)
    assert int(dst_rows.max()) == 127 and int(dst_cols.min()) == 0 and int(dst_cols.max()) == 127


def test_pair_difference_is_minus_offset_on_coordinates() -> None:
    index = PathIndex(4, 11, 13)
    rows, cols = torch.meshgrid(torch.arange(11.0), torch.arange(13.0), indexing="ij")
    coords = torch.stack([rows, cols])[None].repeat(2, 1, 1, 1)  # N×2×H×W: (y, x)
    diff = index.pair_difference(coords)
    assert diff.shape == (2, 2, index.num_offsets, 8, 7)
    expected = -index.offsets_tensor.T.float()[None, :, :, None, None].expand_as(diff)
    assert torch.equal(diff, expected)


@pytest.mark.parametrize(("radius", "height", "width"), [(2, 5, 6), (4, 9, 11), (5, 10, 12)])
def test_path_affinity_matches_brute_force(radius: int, height: int, width: int) -> None:
    rng = np.random.default_rng(radius)
    boundary = rng.random((2, 1, height, width)).astype(np.float32)
    got = PathIndex(radius, height, width).path_affinity(torch.from_numpy(boundary))
    np.testing.assert_array_equal(got.numpy(), _brute_affinity(boundary, radius))


@pytest.mark.parametrize("radius", [5, 10])
def test_path_affinity_vertical_wall(radius: int) -> None:
    height, width, wall = 24, 31, 15
    boundary = torch.zeros(1, 1, height, width)
    boundary[..., wall] = 1.0
    index = PathIndex(radius, height, width)
    aff = index.path_affinity(boundary)[0]
    src_x = torch.arange(index.out_width) + index.margin
    for k, (_, dx) in enumerate(index.offsets):
        crosses = (torch.minimum(src_x, src_x + dx) <= wall) & (wall <= torch.maximum(src_x, src_x + dx))
        expected = torch.where(crosses, 0.0, 1.0).expand(index.out_height, -1)
        assert torch.equal(aff[k], expected), index.offsets[k]


def test_path_affinity_partial_boundary_values() -> None:
    boundary = torch.zeros(1, 1, 8, 12)
    boundary[0, 0, 3, 6] = 0.7
    boundary[0, 0, 3, 4] = 0.25
    index = PathIndex(3, 8, 12)  # margin 2: source (y, x) is at [y, x − 2]
    aff = index.path_affinity(boundary)[0]
    k = {offset: i for i, offset in enumerate(index.offsets)}
    assert aff[k[(0, 1)], 3, 5 - 2] == pytest.approx(0.3)  # (3,5)→(3,6)
    assert aff[k[(1, 1)], 2, 5 - 2] == pytest.approx(0.3)  # the square (2,5),(2,6),(3,5),(3,6)
    assert aff[k[(1, 0)], 2, 6 - 2] == pytest.approx(0.3)  # (2,6)→(3,6)
    assert aff[k[(0, 1)], 3, 3 - 2] == pytest.approx(0.75)  # (3,3)→(3,4)
    assert aff[k[(0, 2)], 3, 4 - 2] == pytest.approx(0.3)  # (3,4),(3,5),(3,6): max of 0.25 and 0.7
    assert aff[k[(1, -1)], 2, 5 - 2] == pytest.approx(0.75)  # (2,5),(2,4),(3,5),(3,4)
    assert aff[k[(2, 2)], 1, 4 - 2] == pytest.approx(0.3)  # the diagonal band |y − x| ≤ 1 reaches (3,6)
    assert aff[k[(0, 2)], 4, 4 - 2] == pytest.approx(1.0)
    assert aff[k[(2, 1)], 0, 5 - 2] == pytest.approx(1.0)  # (0,5)→(2,6) stays above row 3


def test_path_affinity_gradient_goes_to_the_path_max() -> None:
    boundary = torch.full((1, 1, 6, 7), 0.1)
    boundary[0, 0, 2, 3] = 0.9
    boundary.requires_grad_(True)
    index = PathIndex(2, 6, 7)
    index.path_affinity(boundary).sum().backward()
    m = index.margin
    through_peak = sum(
        (2 - y, 3 - x) in index.paths[k]
        for k in range(index.num_offsets)
        for y in range(index.out_height)
        for x in range(m, m + index.out_width)
    )
    grad = boundary.grad[0, 0]
    assert float(grad[2, 3]) == pytest.approx(-through_peak)  # d(1 − max)/dB = −1 at each path's unique max
    assert float(grad.sum()) == pytest.approx(-index.num_offsets * index.out_height * index.out_width)


def test_path_affinity_rejects_wrong_shapes() -> None:
    index = PathIndex(3, 8, 9)
    with pytest.raises(ValueError):
        index.path_affinity(torch.zeros(1, 1, 8, 10))
    with pytest.raises(ValueError):
        index.path_affinity(torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError):
        PathIndex(5, 4, 20)


def test_pair_labels_hand_map() -> None:
    label = np.array([[0, 0, 1, 1], [0, 255, 1, 2], [0, 0, 2, 2]], np.uint8)
    index = PathIndex(2, 3, 4)  # offsets (0,1), (1,−1), (1,0), (1,1); sources rows 0..1, cols 1..2
    got = {name: value[0].int().tolist() for name, value in index.pair_labels(label[None]).items()}
    zero = [[0, 0], [0, 0]]
    assert got["bg_pos"] == [zero, [[1, 0], [0, 0]], zero, zero]
    assert got["fg_pos"] == [[[0, 1], [0, 0]], zero, [[0, 1], [0, 0]], zero]
    assert got["neg"] == [[[1, 0], [0, 1]], [[0, 0], [0, 1]], [[0, 0], [0, 1]], [[1, 1], [0, 1]]]
    unbatched = index.pair_labels(torch.from_numpy(label))
    assert unbatched["neg"].shape == (4, 2, 2) and unbatched["neg"].dtype == torch.bool


def test_pair_labels_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    label = rng.choice([0, 0, 1, 2, 7, 255], size=(2, 12, 14)).astype(np.int64)
    index = PathIndex(4, 12, 14)
    got = index.pair_labels(torch.from_numpy(label))
    m = index.margin
    for k, (dy, dx) in enumerate(index.offsets):
        src = label[:, : index.out_height, m : m + index.out_width]
        dst = label[:, dy : dy + index.out_height, m + dx : m + dx + index.out_width]
        valid = (src != 255) & (dst != 255)
        np.testing.assert_array_equal(got["bg_pos"][:, k].numpy(), valid & (src == dst) & (src == 0))
        np.testing.assert_array_equal(got["fg_pos"][:, k].numpy(), valid & (src == dst) & (src != 0))
        np.testing.assert_array_equal(got["neg"][:, k].numpy(), valid & (src != dst))
    total = got["bg_pos"].int() + got["fg_pos"].int() + got["neg"].int()
    assert int(total.max()) == 1  # the three labels are disjoint
    with pytest.raises(ValueError):
        index.pair_labels(torch.zeros(12, 14))


def _counts_from_pair_labels(index: PathIndex, label: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The previous way (``wsss.pipeline.pseudo_labels.pair_label_counts`` of the full N×K×h'×w' pair labels): the reference."""
    pairs = index.pair_labels(label, ignore_index)
    return torch.stack([pairs[k].sum() for k in ("bg_pos", "fg_pos", "neg")]).to(torch.float64)


@pytest.mark.parametrize(
    "radius, shape, dtype, ignore_index",
    [
        (10, (3, 40, 44), torch.uint8, 255),
        (5, (2, 17, 23), torch.int64, 255),
        (5, (19, 21), torch.int32, 4),
        (3, (4, 9, 12), torch.int16, 255),
    ],
)
def test_pair_label_counts_equal_those_of_the_pair_labels(radius, shape, dtype, ignore_index) -> None:
    """Bit-identical to counting the pair labels, on random maps with background, classes, 255 and (signed types)
    negative values, with few classes so that every kind of pair occurs. Planted bug caught: counting a pair
    whose destination is ignored as negative (dropping ``dst_valid``) breaks the ``neg`` count."""
    g = torch.Generator().manual_seed(radius)
    for trial in range(3):
        label = torch.randint(0, 4, shape, generator=g)
        label[torch.rand(shape, generator=g) < 0.2] = 255
        if dtype.is_signed:
            label[torch.rand(shape, generator=g) < 0.1] = -1
        if trial == 2:  # large regions, as real labels: many positive pairs
            label = (
                label[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1)[..., : shape[-2], : shape[-1]]
            )
        label = label.to(dtype) if dtype != torch.uint8 else label.clamp(0, 255).to(dtype)
        index = PathIndex(radius, *shape[-2:])
        got = index.pair_label_counts(label, ignore_index)
        want = _counts_from_pair_labels(index, label, ignore_index)
        assert got.dtype == torch.float64 and torch.equal(got, want), (got, want)
        assert got.min() > 0


def test_pair_label_counts_rejects_maps_of_another_size() -> None:
    with pytest.raises(ValueError, match="expected spatial size 20x30"):
        PathIndex(5, 20, 30).pair_label_counts(torch.zeros(2, 20, 31, dtype=torch.uint8))


def test_errors_name_the_argument_and_the_limit() -> None:
    """The one-line messages a user sees. Planted bug caught: ``ValueError(None)``, or the wrong name in a message."""
    with pytest.raises(ValueError, match=r"^radius must be an integer >= 2, got 1$"):
        search_offsets(1)
    with pytest.raises(ValueError, match=r"^map 10x8 too small for radius 5: need H > 4 and W > 8$"):
        PathIndex(5, 10, 8)  # W == 2·margin leaves no source column; W = 9 leaves one
    assert PathIndex(5, 5, 9).out_width == 1 and PathIndex(5, 5, 9).out_height == 1
    index = PathIndex(3, 8, 9)
    with pytest.raises(ValueError, match=r"^boundary must be N×1×H×W, got \(1, 2, 8, 9\)$"):
        index.path_affinity(torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match=r"^boundary is \(1, 1, 8, 10\), expected spatial size 8x9$"):
        index.path_affinity(torch.zeros(1, 1, 8, 10))
    for method in (index.sources, index.destinations):
        with pytest.raises(ValueError, match=r"^map is \(8, 10\), expected spatial size 8x9$"):
            method(torch.zeros(8, 10))
    with pytest.raises(ValueError, match=r"^label is \(8, 10\), expected spatial size 8x9$"):
        index.pair_label_counts(torch.zeros(8, 10, dtype=torch.int64))


@pytest.mark.parametrize("method", ["pair_labels", "pair_label_counts"])
def test_pair_label_methods_reject_float_bool_and_4d_maps(method: str) -> None:
    """Planted bugs caught: ``or`` → ``and`` between the dtype checks (a bool map accepted) or before them (a 4-D map
    accepted), and a message that fails to format."""
    call = getattr(PathIndex(3, 8, 9), method)
    for bad, text in [
        (torch.zeros(8, 9), r"torch\.float32 \(8, 9\)"),
        (torch.zeros(8, 9, dtype=torch.bool), r"torch\.bool \(8, 9\)"),
        (torch.zeros(1, 1, 8, 9, dtype=torch.int64), r"torch\.int64 \(1, 1, 8, 9\)"),
    ]:
        with pytest.raises(ValueError, match=rf"^label must be an integer N×H×W or H×W map, got {text}$"):
            call(bad)


def test_pair_labels_compare_uint8_labels_as_integers() -> None:
    """An ``ignore_index`` above 255 on uint8 labels: every label is valid (torch would compare a uint8 map with 300
    modulo 256, i.e. with 44). Planted bug caught: dropping the cast to int64 marks labels 44..255 invalid."""
    label = torch.tensor([[0, 0, 50, 50], [0, 200, 200, 50], [0, 0, 200, 200]], dtype=torch.uint8)
    index = PathIndex(2, 3, 4)
    wide = index.pair_labels(label, ignore_index=300)
    as_int = index.pair_labels(label.to(torch.int64), ignore_index=300)
    assert all(torch.equal(wide[k], as_int[k]) for k in wide)
    total = sum(int(wide[k].sum()) for k in wide)
    assert int(wide["fg_pos"].sum()) > 0 and total == index.num_offsets * 2 * 2  # all valid: every pair counted once
    counts = index.pair_label_counts(label, ignore_index=300)
    assert counts.tolist() == [float(wide[k].sum()) for k in ("bg_pos", "fg_pos", "neg")]


def test_pair_label_counts_exact_above_float32_range() -> None:
    """More than 2**24 pairs (a batch of IRN-size labels has ~2e6 per image): the counts stay exact integers.
    All background, radius 10, 341×341 sources: 152·341² = 17674712 background pairs, 0 others. Planted bug caught:
    accumulating in float32 (``torch.zeros(())`` without ``dtype=torch.int64``) rounds the count."""
    label = torch.zeros(341 + 9, 341 + 18, dtype=torch.uint8)
    counts = PathIndex(10, *label.shape).pair_label_counts(label)
    assert counts.tolist() == [152.0 * 341 * 341, 0.0, 0.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pair_label_counts_on_cuda_equal_cpu() -> None:
    """The counters live on the label's device. Planted bug caught (on a CUDA machine only): ``torch.zeros((),
    device=None)`` puts them on the CPU, and adding CUDA sums into them fails."""
    label = torch.randint(0, 3, (2, 12, 14), generator=torch.Generator().manual_seed(0))
    index = PathIndex(4, 12, 14)
    counts = index.pair_label_counts(label.cuda())
    assert counts.is_cuda and torch.equal(counts.cpu(), index.pair_label_counts(label))


def test_path_pixels_in_every_quadrant() -> None:
    """Offsets with dy < 0 (not in the half-disc, but ``path_pixels`` is defined for any segment): the brute-force
    distance set, and the mirror image of the opposite offset. Planted bugs caught: the row range starting at 0
    instead of min(0, dy), or ending at max(1, dy)."""
    for dy, dx in [(-2, 3), (-3, -1), (-1, 0), (-4, 2), (2, -3)]:
        box = [(y, x) for y in range(-6, 7) for x in range(-6, 7)]
        expected = {p for p in box if _segment_distance(*p, dy, dx) < 1 - 1e-12}
        path = path_pixels(dy, dx)
        assert set(path) == expected and len(path) == len(expected), (dy, dx)
        assert {(-y, -x) for y, x in path_pixels(-dy, -dx)} == expected
