"""Pixel-pair geometry of IRNet (docs/method.md#irnet-training): offsets, the path between pixels, boundary → affinity.

Conventions (IRN's ``PathIndex``; all coordinates are (row, col) = (y, x), rows grow downwards):

* ``search_offsets(r)``: the half-disc of offsets (0, 1..r−1), then every (dy, dx) with dy in 1..r−1,
  dx in −(r−1)..r−1 and dy² + dx² < r². Each unordered pixel pair within the disc appears once; r = 10 gives 152
  offsets, r = 5 gives 34.
* ``path_pixels(dy, dx)``: the integer points p with Euclidean distance < 1 to the segment from (0, 0) to (dy, dx),
  both end points included. IRN searches the bounding box of the segment and keeps points whose distance to the
  *line* is < 1, i.e. (dy·x − dx·y)² < dy² + dx²; the two sets agree: integer points outside the box are ≥ 1 away
  from it, and inside the box the orthogonal projection falls within the segment.
* Source window: with margin m = r − 1, a ``PathIndex`` for an H×W map uses as sources the pixels
  rows 0..H−1−m, cols m..W−1−m, so every destination (y+dy, x+dx) is inside the map. Outputs therefore have shape
  h'×w' = (H − m)×(W − 2m); for IRN's 128×128 labels and r = 10: rows 0..118, cols 9..118 (119×110).
* The affinity of a pair is a = 1 − max of the boundary probability B over the pair's path.
"""

from __future__ import annotations

import numpy as np
import torch

from wsss.runtime.io import IGNORE

Offset = tuple[int, int]


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or int(radius) != radius or radius < 2:
        raise ValueError(f"radius must be an integer >= 2, got {radius!r}")
    return int(radius)


def search_offsets(radius: int) -> list[Offset]:
    """IRN's half-disc of pair offsets (dy, dx) for ``radius`` (see the module docstring for the exact set)."""
    r = _check_radius(radius)
    offsets = [(0, dx) for dx in range(1, r)]
    offsets += [(dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dy * dy + dx * dx < r * r]
    return offsets


def path_pixels(dy: int, dx: int) -> list[Offset]:
    """Integer points within distance < 1 of the segment (0, 0)–(dy, dx), ordered from the source to the destination.

    Exact integer test inside the segment's bounding box: (dy·x − dx·y)² < dy² + dx². Ties in the order (points with
    the same projection on the segment) are broken by (y, x).
    """
    dy, dx = int(dy), int(dx)
    length_sq = dy * dy + dx * dx
    if length_sq == 0:
        return [(0, 0)]
    points = [
        (y, x)
        for y in range(min(0, dy), max(0, dy) + 1)
        for x in range(min(0, dx), max(0, dx) + 1)
        if (dy * x - dx * y) ** 2 < length_sq
    ]
    points.sort(key=lambda p: (p[0] * dy + p[1] * dx, p))
    return points


class PathIndex:
    """IRN's pair geometry for an H×W map: offsets, paths, the source window, and the per-pair operations.

    IRN gathers path pixels with precomputed flat index tensors (one index per path pixel per source). Every such
    index is a fixed shift of the source window, so here a path pixel (py, px) is the strided view
    ``x[..., py : py + h', m + px : m + px + w']`` and the path max is a running ``torch.maximum`` over the views of
    the path: the same values with no index tensors in memory and no gathered copies (vectorised over batch and
    sources; a loop over the Σ path lengths: 2134 views for r = 10, 242 for r = 5).
    """

    def __init__(self, radius: int, height: int, width: int) -> None:
        self.radius = _check_radius(radius)
        self.margin = self.radius - 1
        m = self.margin
        if height <= m or width <= 2 * m:
            raise ValueError(f"map {height}x{width} too small for radius {radius}: need H > {m} and W > {2 * m}")
        self.height, self.width = int(height), int(width)
        self.out_height, self.out_width = self.height - m, self.width - 2 * m
        self.offsets: list[Offset] = search_offsets(self.radius)
        self.paths: list[list[Offset]] = [path_pixels(dy, dx) for dy, dx in self.offsets]
        self.offsets_tensor = torch.tensor(self.offsets, dtype=torch.int64)  # K×2, (dy, dx) from source to destination

    @property
    def num_offsets(self) -> int:
        return len(self.offsets)

    def _check_map(self, x: torch.Tensor, what: str) -> None:
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"{what} is {tuple(x.shape)}, expected spatial size {self.height}x{self.width}")

    def path_affinity(self, boundary: torch.Tensor) -> torch.Tensor:
        """``1 − max`` of the boundary probability over each path: N×1×H×W → N×K×h'×w' (offsets in search order).

        Differentiable in ``boundary`` (``torch.maximum`` splits the gradient between tied maxima).
        """
        if boundary.dim() != 4 or boundary.shape[1] != 1:
            raise ValueError(f"boundary must be N×1×H×W, got {tuple(boundary.shape)}")
        self._check_map(boundary, "boundary")
        maxima = []
        for path in self.paths:
            path_max = self._view(boundary, *path[0])
            for py, px in path[1:]:
                path_max = torch.maximum(path_max, self._view(boundary, py, px))
            maxima.append(path_max)
        return 1.0 - torch.cat(maxima, dim=1)

    def _view(self, x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """The source window shifted by (dy, dx): ...×H×W → ...×h'×w' (a view)."""
        m = self.margin
        return x[..., dy : dy + self.out_height, m + dx : m + dx + self.out_width]

    def sources(self, x: torch.Tensor) -> torch.Tensor:
        """The source-window crop of a map: ...×H×W → ...×h'×w'."""
        self._check_map(x, "map")
        return self._view(x, 0, 0)

    def destinations(self, x: torch.Tensor) -> torch.Tensor:
        """Each offset's destination values: ...×H×W → ...×K×h'×w' (``[..., k, y, x] = x[..., y+dy_k, x+m+dx_k]``)."""
        self._check_map(x, "map")
        return torch.stack([self._view(x, dy, dx) for dy, dx in self.offsets], dim=-3)

    def pair_difference(self, x: torch.Tensor) -> torch.Tensor:
        """x(source) − x(destination) for every offset: N×C×H×W → N×C×K×h'×w' (IRN's displacement pairs)."""
        return self.sources(x).unsqueeze(-3) - self.destinations(x)

    def pair_labels(self, label: torch.Tensor | np.ndarray, ignore_index: int = IGNORE) -> dict[str, torch.Tensor]:
        """IRN's pair labels from a label map N×H×W (or H×W): bool tensors N×K×h'×w' (or K×h'×w').

        valid = both labels are in 0..ignore_index−1; pos = valid and equal; ``bg_pos`` = pos and label 0;
        ``fg_pos`` = pos and label > 0; ``neg`` = valid and different. (IRN tests ``< 21`` for VOC; with labels in
        0..C−1 plus 255 the two agree, and this form also serves COCO's 81 ids.)
        """
        label = torch.as_tensor(label)
        if label.dim() not in (2, 3) or label.dtype.is_floating_point or label.dtype == torch.bool:
            raise ValueError(f"label must be an integer N×H×W or H×W map, got {label.dtype} {tuple(label.shape)}")
        label = label.to(torch.int64)
        src = self.sources(label).unsqueeze(-3)
        dst = self.destinations(label)
        valid = (src >= 0) & (src < ignore_index) & (dst >= 0) & (dst < ignore_index)
        equal = src == dst
        pos = valid & equal
        return {"bg_pos": pos & (src == 0), "fg_pos": pos & (src > 0), "neg": valid & ~equal}

    def pair_label_counts(self, label: torch.Tensor | np.ndarray, ignore_index: int = IGNORE) -> torch.Tensor:
        """The numbers of ``bg_pos``, ``fg_pos`` and ``neg`` pairs of :meth:`pair_labels` over a whole label map
        N×H×W (or H×W), as a float64 vector of 3 on the label's device: the same integers, without the
        N×K×h'×w' label tensors (one offset at a time over views of the map, on whatever device the label is)."""
        label = torch.as_tensor(label)
        if label.dim() not in (2, 3) or label.dtype.is_floating_point or label.dtype == torch.bool:
            raise ValueError(f"label must be an integer N×H×W or H×W map, got {label.dtype} {tuple(label.shape)}")
        self._check_map(label, "label")
        label = label.to(torch.int64)  # N×H×W only: the comparisons below need no overflow care
        valid = (label >= 0) & (label < ignore_index)
        background = valid & (label == 0)
        src, src_valid, src_background = self.sources(label), self.sources(valid), self.sources(background)
        equal_valid = torch.zeros((), dtype=torch.int64, device=label.device)
        equal_background = torch.zeros_like(equal_valid)
        both_valid = torch.zeros_like(equal_valid)
        for dy, dx in self.offsets:
            dst_valid = self._view(valid, dy, dx)
            pair_valid = src_valid & dst_valid
            pos = pair_valid & (src == self._view(label, dy, dx))
            both_valid += pair_valid.sum()
            equal_valid += pos.sum()
            equal_background += (pos & src_background).sum()
        bg_pos = equal_background
        return torch.stack([bg_pos, equal_valid - bg_pos, both_valid - equal_valid]).to(torch.float64)
