"""A synthetic VOC-layout dataset generated from a seed: textured shapes on a cluttered background.

Why: the default pipeline must run end to end on a laptop CPU in minutes, on data whose classes a small CNN
trained from scratch can learn from image-level labels alone, yet that a colour lookup cannot solve.

Each foreground class is one (silhouette, texture) pair, e.g. ``star_dots`` is a five-point star filled with a
dot grid (see :data:`SYNTH_CLASSES`; a dataset of C classes uses the first C, ordered so that the first four, convex and
densely textured, are the quickest for a small CNN to learn and localise: the sparse dot grid of ``star_dots`` and
the hole of ``ring_diagonal`` (background inside an object) come later). Colour carries no class information: every object paints its fill and its
texture with two distinct colours drawn from one shared :data:`PALETTE`, and the background uses the same palette.

One image (:func:`render_sample`):

- background: a smooth blend of two palette colours pulled towards grey, with low-contrast clutter (small
  ellipses, rectangles, line segments in palette colours, alpha-blended) and Gaussian noise over everything;
- 1..``max_objects`` objects, each 30–70 % of the image side, rotated by up to ±20°, aspect jittered ±15 %,
  at a random position (partly off-frame allowed), class uniform over the classes;
- partial occlusion: objects are painted in order, later ones on top; the mask takes the top object. A new
  object is accepted only if every earlier object keeps at least :data:`MIN_KEEP_FRACTION` of its own
  in-frame area visible (up to :data:`PLACEMENT_TRIES` placements, else it is left out), so no object is fully
  covered;
- mask: uint8 ids 0 (background), 1..C (class k ↔ ``SYNTH_CLASSES[k-1]``, or the k-th of ``classes``), 255 =
  ignore. A 1-pixel ignore band lies on the inner side of each object's silhouette outline, where that outline is
  visible (as VOC marks boundaries, but 1 px): JPEG blurs the edge pixels, so they are not scored. The band comes
  from the top object only, so it is 1 px wide everywhere, also between two objects;
- image-level labels: the classes with at least :func:`min_visible_pixels` non-ignore mask pixels (1 % of the
  image area). Pixels of a class below that count are set to 255 too, so the labels always equal the set of
  foreground ids in the mask.

Variants (for robustness benchmarks): ``texture_scale`` (0.25..4, default 1) multiplies every object's texture
period (the 3-pixel floor kept), so the patterns get coarser or finer without changing anything else drawn;
``classes`` (default null: the first ``num_classes``) picks the foreground classes by name, in mask-id order, e.g.
``[star_dots, ring_diagonal, cross_solid, crescent_hatch]`` for non-convex silhouettes only. Neither changes what
is drawn per object, so a texture-scaled image ``i`` keeps its layout, colours and mask (other silhouettes can
change which placements are accepted); at their defaults the dataset is byte-identical to one generated before
they existed.
Label-bias variants (the co-occurrence problem of weakly-supervised segmentation, for the gates): ``frequent_class``
(a class name) makes that class the first object of a share ``frequent_fraction`` (default 0.97) of the images, so
it is present in nearly all of them; ``paired_classes`` (two names) places an object of the one whenever the other
is placed, so the pair almost always co-occurs. At null (the default) they draw nothing and the dataset is
byte-identical to one generated before they existed.

``shared_body`` (default false; the mechanism test of CAM methods that claim to recover non-discriminative parts):
every object is the same body (an ellipse, plain fill in its random palette colour, :data:`BODY_SHAPE`) with a
small class-specific part on its outline (the class's silhouette and texture at :data:`PART_FRACTION` of the body
radius, in a random direction), so the class is told only by the part; the mask labels body and part with the
class. It draws one extra number per object (the part's direction), so its layouts differ from the default's.

Determinism: image ``i`` of split ``s`` (0 = train_aug, 1 = val) draws everything from its own generator
``np.random.default_rng([seed, s, i])``, so an image does not depend on generation order; JPEGs are written by
PIL at fixed quality without metadata and PNGs by zlib, so the same params give a byte-identical dataset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from wsss.data.dataset import format_labels_tsv
from wsss.runtime.errors import InputError
from wsss.runtime.io import DEFAULT_MAX_PIXELS, IGNORE, atomic_dir, write_jpeg, write_label_png, write_text
from wsss.runtime.progress import progress as progress_bar

GENERATOR_VERSION = 3
JPEG_QUALITY = 90
SPLITS = {"train_aug": 0, "val": 1}  # split name -> split index in the per-image RNG key
MIN_KEEP_FRACTION = 0.4  # an earlier object keeps at least this share of its in-frame area when a later one lands
PLACEMENT_TRIES = 12
MIN_VISIBLE_FRACTION = 0.01  # of the image area: smaller visible class regions are ignored and not labelled
SIZE_RANGE = (0.30, 0.70)  # object extent (diameter of its unit shape) as a fraction of the image side
MAX_ROTATION_DEG = 20.0
BODY_SHAPE = "circle"  # shared_body: every object's body (an ellipse through the aspect jitter), plain fill
PART_FRACTION = 0.4  # shared_body: the class-specific part's radius as a fraction of the body's

# Shared by every class and by the background (RGB).
PALETTE = np.array(
    [
        (220, 45, 45),  # red
        (45, 165, 65),  # green
        (45, 85, 210),  # blue
        (235, 205, 45),  # yellow
        (45, 190, 200),  # cyan
        (190, 60, 180),  # magenta
        (240, 135, 35),  # orange
        (240, 240, 235),  # white
        (35, 35, 40),  # near black
        (140, 90, 50),  # brown
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class ClassSpec:
    """One foreground class: a silhouette and a texture (names of the shape and pattern functions below)."""

    name: str
    shape: str
    texture: str


SYNTH_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("circle_rings", "circle", "rings"),
    ClassSpec("square_checker", "square", "checker"),
    ClassSpec("triangle_stripes", "triangle", "hstripes"),
    ClassSpec("hexagon_vstripes", "hexagon", "vstripes"),
    ClassSpec("star_dots", "star", "dots"),
    ClassSpec("ring_diagonal", "ring", "diagonal"),
    ClassSpec("cross_solid", "cross", "solid"),
    ClassSpec("crescent_hatch", "crescent", "hatch"),
    ClassSpec("arrow_waves", "arrow", "waves"),
    ClassSpec("heart_diamonds", "heart", "diamonds"),
)
MAX_CLASSES = len(SYNTH_CLASSES)


_CLASS_BY_NAME = {spec.name: spec for spec in SYNTH_CLASSES}


def class_specs(num_classes: int | None = None, classes: Sequence[str] | None = None) -> tuple[ClassSpec, ...]:
    """The foreground classes in mask-id order (id k ↔ element k-1): the named ``classes`` when given (then
    ``num_classes`` is None or their count), else the first ``num_classes`` (None: 6) of :data:`SYNTH_CLASSES`.

    Raises ValueError for a count out of range, an unknown or repeated name, an empty list or a count mismatch.
    """
    if classes is None:
        count = SynthParams.num_classes if num_classes is None else num_classes
        if not 1 <= count <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {count}")
        return SYNTH_CLASSES[:count]
    if isinstance(classes, str):
        raise ValueError(f"must be a list of class names, got {classes!r}")
    names = list(classes)
    if not names:
        raise ValueError(f"must name at least one class (known: {list(_CLASS_BY_NAME)})")
    unknown = [n for n in names if not isinstance(n, str) or n not in _CLASS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; known: {list(_CLASS_BY_NAME)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"lists {repeated} more than once")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"num_classes {num_classes} does not match the {len(names)} names listed")
    return tuple(_CLASS_BY_NAME[n] for n in names)


def class_names(num_classes: int | None = None, classes: Sequence[str] | None = None) -> list[str]:
    """``background`` then the foreground class names (mask id k ↔ names[k]): the named ``classes`` if given, else
    the first ``num_classes`` (see :func:`class_specs`)."""
    return ["background"] + [spec.name for spec in class_specs(num_classes, classes)]


def min_visible_pixels(image_size: int) -> int:
    """Fewest visible pixels a class needs in an image to be labelled (smaller regions become ignore)."""
    return max(1, round(MIN_VISIBLE_FRACTION * image_size * image_size))


# ---------------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class SynthParams:
    """The generator's configuration (the ``--params`` keys of ``prepare_synth``).

    ``classes``: the foreground class names in mask-id order, or None for the first ``num_classes`` of
    :data:`SYNTH_CLASSES` (when given, ``num_classes`` is their count). ``texture_scale`` multiplies every object's
    texture period.
    """

    seed: int = 0
    image_size: int = 160
    num_classes: int = 6
    num_train_aug: int = 2000
    num_train: int = 200
    num_val: int = 200
    max_objects: int = 3
    max_pixels: int = DEFAULT_MAX_PIXELS
    texture_scale: float = 1.0
    classes: tuple[str, ...] | None = None
    frequent_class: str | None = None
    frequent_fraction: float = 0.97
    paired_classes: tuple[str, ...] | None = None
    shared_body: bool = False


# Each key: (type, low, high), None: no bound; ``classes`` (a list of names or null) is checked by class_specs.
_LIMITS: dict[str, tuple[type, float | None, float | None]] = {
    "seed": (int, 0, None),
    "image_size": (int, 32, 1024),
    "num_classes": (int, 1, MAX_CLASSES),
    "num_train_aug": (int, 1, None),
    "num_train": (int, 1, None),
    "num_val": (int, 1, None),
    "max_objects": (int, 1, 5),
    "max_pixels": (int, 1, None),
    "texture_scale": (float, 0.25, 4.0),
    "classes": (list, None, None),
    "frequent_class": (str, None, None),
    "frequent_fraction": (float, 0.0, 1.0),
    "paired_classes": (list, None, None),
    "shared_body": (bool, None, None),
}
# Keys added after GENERATOR_VERSION 3's first datasets: dataset.yaml records them only when they differ from these
# values, so a dataset generated with them at their defaults stays byte-identical to one generated before.
_RECORDED_IF_SET = {
    "texture_scale": 1.0,
    "classes": None,
    "frequent_class": None,
    "frequent_fraction": 0.97,
    "paired_classes": None,
    "shared_body": False,
}


def parse_params(params: Mapping[str, Any], source: str = "--params") -> SynthParams:
    """Validate ``params`` (all keys optional) into :class:`SynthParams`; errors name ``source`` and the key."""
    if not isinstance(params, Mapping):
        raise InputError(source, "must be a JSON object")
    unknown = sorted(set(params) - set(_LIMITS))
    if unknown:
        raise InputError(source, f"unknown keys {unknown}; known: {sorted(_LIMITS)}")
    values = asdict(SynthParams())
    for key, value in params.items():
        kind, low, high = _LIMITS[key]
        if kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(source, f"{key}: must be true or false, got {value!r}")
            values[key] = bool(value)
            continue
        if kind is str:  # frequent_class: null or a class name (checked below against the dataset's classes)
            if value is not None and not isinstance(value, str):
                raise InputError(source, f"{key}: must be a class name or null, got {value!r}")
            values[key] = value
            continue
        if key == "paired_classes":  # null or two class names (checked below)
            if value is not None and (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(v, str) for v in value)
                or value[0] == value[1]
            ):
                raise InputError(source, f"{key}: must be two different class names or null, got {value!r}")
            values[key] = None if value is None else tuple(value)
            continue
        if kind is list:  # classes: null, or names of SYNTH_CLASSES (checked by class_specs)
            if value is not None:
                if not isinstance(value, (list, tuple)):
                    raise InputError(source, f"{key}: must be a list of class names or null, got {value!r}")
                try:
                    class_specs(None, value)
                except ValueError as err:
                    raise InputError(source, f"{key}: {err}") from None
                value = tuple(value)
            values[key] = value
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise InputError(source, f"{key}: must be an integer, got {value!r}")
        if kind is float and (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)
        ):
            raise InputError(source, f"{key}: must be a number, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise InputError(source, f"{key}: must be {bound}, got {value}")
        values[key] = kind(value)
    if values["classes"] is not None:
        if "num_classes" in params and values["num_classes"] != len(values["classes"]):
            count = len(values["classes"])
            raise InputError(
                source,
                f"num_classes: {values['num_classes']} does not match classes, which names "
                f"{count}; omit num_classes or set it to {count}",
            )
        values["num_classes"] = len(values["classes"])
    names = [spec.name for spec in class_specs(values["num_classes"], values["classes"])]
    for key in ("frequent_class", "paired_classes"):
        listed = values[key] if isinstance(values[key], tuple) else [values[key]] if values[key] else []
        missing = [n for n in listed if n not in names]
        if missing:
            raise InputError(source, f"{key}: {missing} not among the dataset's classes {names}")
    if values["num_train"] > values["num_train_aug"]:
        raise InputError(
            source,
            f"num_train: {values['num_train']} exceeds num_train_aug "
            f"{values['num_train_aug']} (train is the first num_train ids of train_aug)",
        )
    if values["image_size"] ** 2 > values["max_pixels"]:
        raise InputError(
            source,
            f"max_pixels: {values['max_pixels']} is below image_size² = "
            f"{values['image_size'] ** 2}: the generated images could not be read",
        )
    return SynthParams(**values)


# ---------------------------------------------------------------------------------------------------- shapes


def _circle(n: int = 72, radius: float = 1.0, cx: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), radius * np.sin(t)], axis=1)


def _regular(n: int, radius: float, start_deg: float) -> np.ndarray:
    t = np.deg2rad(start_deg) + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0, -90.0)
    inner = _regular(5, 0.42, -54.0)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


# Each shape: (filled polygons, hole polygons) in unit coordinates (extent about [-1, 1]², y down).
_SHAPES: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "circle": ([_circle()], []),
    "square": ([np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])], []),
    "triangle": ([_regular(3, 1.05, -90.0) + [0.0, 0.2]], []),
    "star": ([_star() + [0.0, 0.08]], []),
    "ring": ([_circle()], [_circle(radius=0.55)]),
    "cross": (
        [
            np.array(
                [
                    [-0.3, -1],
                    [0.3, -1],
                    [0.3, -0.3],
                    [1, -0.3],
                    [1, 0.3],
                    [0.3, 0.3],
                    [0.3, 1],
                    [-0.3, 1],
                    [-0.3, 0.3],
                    [-1, 0.3],
                    [-1, -0.3],
                    [-0.3, -0.3],
                ]
            )
        ],
        [],
    ),
    "hexagon": ([_regular(6, 0.95, 0.0)], []),
    "crescent": ([_circle()], [_circle(radius=0.82, cx=0.48)]),
    "arrow": (
        [np.array([[-1, -0.25], [0.15, -0.25], [0.15, -0.65], [1, 0], [0.15, 0.65], [0.15, 0.25], [-1, 0.25]])],
        [],
    ),
    "heart": ([_heart()], []),
}


def _to_pixels(poly: np.ndarray, centre: tuple[float, float], radius: float, aspect: float, angle: float) -> np.ndarray:
    """Unit polygon → int32 points with 4 fractional bits (cv2 ``shift=4``): scale, rotate, translate."""
    pts = poly * [radius * aspect, radius / aspect]
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]]) + centre
    return np.round(pts * 16).astype(np.int32)


def shape_mask(
    shape: str, size: int, centre: tuple[float, float], radius: float, aspect: float, angle: float
) -> np.ndarray:
    """Boolean ``size``×``size`` silhouette of ``shape`` (no anti-aliasing, so it matches the painted pixels)."""
    fills, holes = _SHAPES[shape]
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_to_pixels(p, centre, radius, aspect, angle) for p in fills], 1, cv2.LINE_8, 4)
    if holes:
        cv2.fillPoly(canvas, [_to_pixels(p, centre, radius, aspect, angle) for p in holes], 0, cv2.LINE_8, 4)
    return canvas.astype(bool)


# ---------------------------------------------------------------------------------------------------- textures


def _stripes(t: np.ndarray, period: float) -> np.ndarray:
    return np.floor(t / period).astype(np.int64) % 2 == 1


# Each texture: (u, v, r, period) -> bool, where (u, v) are object-frame coordinates (rotated with the object,
# shifted by a random phase), r the distance to the object's centre, period in pixels.
_TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "solid": lambda u, v, r, p: np.zeros(u.shape, bool),
    "rings": lambda u, v, r, p: _stripes(r, p),
    "checker": lambda u, v, r, p: (np.floor(u / p) + np.floor(v / p)).astype(np.int64) % 2 == 1,
    "hstripes": lambda u, v, r, p: _stripes(v, p),
    "vstripes": lambda u, v, r, p: _stripes(u, p),
    "diagonal": lambda u, v, r, p: _stripes((u + v) * math.sqrt(0.5), p),
    "dots": lambda u, v, r, p: (
        (np.mod(u, 1.7 * p) - 0.85 * p) ** 2 + (np.mod(v, 1.7 * p) - 0.85 * p) ** 2 < (0.5 * p) ** 2
    ),
    "hatch": lambda u, v, r, p: (np.mod(u, 1.5 * p) < 0.45 * p) | (np.mod(v, 1.5 * p) < 0.45 * p),
    "waves": lambda u, v, r, p: _stripes(v + 0.7 * p * np.sin(u * (2 * np.pi / (3.5 * p))), p),
    "diamonds": lambda u, v, r, p: (
        (np.floor((u + v) * math.sqrt(0.5) / p) + np.floor((u - v) * math.sqrt(0.5) / p)).astype(np.int64) % 2 == 1
    ),
}


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs + 0.5, ys + 0.5


# ---------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class SynthObject:
    """One placed object: class id (1-based mask id) and its class, geometry, colours and texture parameters."""

    class_id: int
    spec: ClassSpec
    centre: tuple[float, float]
    radius: float
    aspect: float
    angle: float
    fill: tuple[float, float, float]
    ink: tuple[float, float, float]
    period: float
    phase: tuple[float, float]
    shade: tuple[float, float, float]  # brightness gradient: (strength, direction cos, direction sin)
    part_direction: float | None = None  # shared_body: the part's direction (radians) from the body centre

    def part_mask(self, size: int) -> np.ndarray | None:
        """shared_body: the class-specific part's silhouette (the class's shape, :data:`PART_FRACTION` of the body
        radius, centred on the body's outline in ``part_direction``); None for an ordinary object."""
        if self.part_direction is None:
            return None
        centre = self.part_centre(size)
        return shape_mask(self.spec.shape, size, centre, PART_FRACTION * self.radius, 1.0, self.angle)

    def part_centre(self, size: int) -> tuple[float, float]:
        """shared_body: the point of the body's outline in ``part_direction`` (rotated with the body), or the
        opposite point when that one lies outside the ``size``×``size`` frame (so the part is seen)."""
        assert self.part_direction is not None
        x = self.radius * self.aspect * math.cos(self.part_direction)
        y = self.radius / self.aspect * math.sin(self.part_direction)
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x * c - y * s, x * s + y * c
        for sign in (1.0, -1.0):
            px, py = self.centre[0] + sign * dx, self.centre[1] + sign * dy
            if 0 <= px < size and 0 <= py < size:
                break
        return px, py

    def mask(self, size: int) -> np.ndarray:
        """The full (unoccluded) silhouette in a ``size``×``size`` frame (shared_body: body and part)."""
        part = self.part_mask(size)
        if part is None:
            return shape_mask(self.spec.shape, size, self.centre, self.radius, self.aspect, self.angle)
        return shape_mask(BODY_SHAPE, size, self.centre, self.radius, self.aspect, self.angle) | part


def _palette_colour(rng: np.random.Generator, index: int) -> tuple[float, float, float]:
    jitter = rng.uniform(-18, 18, 3)
    return tuple(float(x) for x in np.clip(PALETTE[index] + jitter, 0, 255))


def _sample_object(
    rng: np.random.Generator,
    size: int,
    specs: Sequence[ClassSpec],
    texture_scale: float = 1.0,
    shared_body: bool = False,
) -> SynthObject:
    """One random object of a class of ``specs`` (class id k ↔ ``specs[k-1]``); ``texture_scale`` multiplies the
    texture period drawn (before the 3-pixel floor) and changes no draw."""
    radius = 0.5 * size * rng.uniform(*SIZE_RANGE)
    lo, hi = 0.6 * radius, size - 0.6 * radius
    centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    fill_index, ink_index = rng.choice(len(PALETTE), 2, replace=False)
    direction = rng.uniform(0, 2 * np.pi)
    class_id = int(rng.integers(1, len(specs) + 1))
    obj = SynthObject(
        class_id=class_id,
        spec=specs[class_id - 1],
        centre=centre,
        radius=float(radius),
        aspect=float(rng.uniform(0.87, 1.15)),
        angle=float(np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))),
        fill=_palette_colour(rng, int(fill_index)),
        ink=_palette_colour(rng, int(ink_index)),
        period=float(max(3.0, size * rng.uniform(0.07, 0.11) * texture_scale)),
        phase=(float(rng.uniform(0, size)), float(rng.uniform(0, size))),
        shade=(float(rng.uniform(0.0, 0.25)), math.cos(direction), math.sin(direction)),
    )
    if shared_body:  # drawn after everything else, so the default draws are unchanged
        obj = replace(obj, part_direction=float(rng.uniform(0, 2 * np.pi)))
    return obj


def layout_objects(
    rng: np.random.Generator,
    image_size: int,
    num_classes: int | None,
    max_objects: int,
    texture_scale: float = 1.0,
    classes: Sequence[str] | None = None,
    *,
    frequent: int | None = None,
    frequent_fraction: float = 0.97,
    paired: tuple[int, int] | None = None,
    shared_body: bool = False,
) -> list[tuple[SynthObject, np.ndarray]]:
    """Place 1..``max_objects`` objects in paint order, each with its full in-frame silhouette.

    The classes are :func:`class_specs` (``num_classes``, ``classes``); ``texture_scale`` multiplies the periods.

    A candidate is rejected (and redrawn, up to :data:`PLACEMENT_TRIES` times) if it would leave an earlier
    object with less than :data:`MIN_KEEP_FRACTION` of its own area visible; the first object is always kept.

    Label-bias variants (both None: no extra draw, the default layout): ``frequent`` (a class id) is the first
    object's class in a share ``frequent_fraction`` of the images (one extra uniform draw decides), so the class is
    present in nearly every image; ``paired`` (two class ids): when one of them is placed, an object of the other
    is placed too (up to :data:`PLACEMENT_TRIES` tries, beyond ``max_objects``), so the two almost always
    co-occur.
    """
    specs = class_specs(num_classes, classes)
    target = int(rng.integers(1, max_objects + 1))
    force_first = frequent is not None and rng.uniform() < frequent_fraction
    min_area = min_visible_pixels(image_size)
    placed: list[tuple[SynthObject, np.ndarray]] = []
    top = np.full((image_size, image_size), -1, np.int16)  # index of the top object per pixel

    def as_class(obj: SynthObject, class_id: int | None) -> SynthObject:
        if class_id is None:
            return obj
        return dataclasses.replace(obj, class_id=class_id, spec=specs[class_id - 1])

    for n in range(target):
        for _ in range(PLACEMENT_TRIES):
            obj = as_class(
                _sample_object(rng, image_size, specs, texture_scale, shared_body),
                frequent if force_first and n == 0 else None,
            )
            mask = obj.mask(image_size)
            area = int(mask.sum())
            if area < 2 * min_area:
                continue
            candidate = np.where(mask, len(placed), top)
            visible = np.bincount(candidate[candidate >= 0], minlength=len(placed) + 1)
            if all(visible[j] >= MIN_KEEP_FRACTION * m.sum() for j, (_, m) in enumerate(placed)):
                placed.append((obj, mask))
                top = candidate
                break
        else:
            if placed:
                continue
            placed.append((obj, mask))  # the first object is kept whatever its size, so no image is empty
            top = np.where(mask, 0, top)
    if paired is not None:
        present = {o.class_id for o, _ in placed}
        for have, need in (paired, paired[::-1]):
            if have in present and need not in present:
                for _ in range(PLACEMENT_TRIES):
                    obj = as_class(_sample_object(rng, image_size, specs, texture_scale, shared_body), need)
                    mask = obj.mask(image_size)
                    if int(mask.sum()) < 2 * min_area:
                        continue
                    candidate = np.where(mask, len(placed), top)
                    visible = np.bincount(candidate[candidate >= 0], minlength=len(placed) + 1)
                    if all(visible[j] >= MIN_KEEP_FRACTION * m.sum() for j, (_, m) in enumerate(placed)):
                        placed.append((obj, mask))
                        top = candidate
                        break
                present.add(need)
    return placed


# ---------------------------------------------------------------------------------------------------- rendering


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bicubic upsampling of a coarse uniform grid)."""
    coarse = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """H×W×3 float32 background: two palette colours blended smoothly, greyed, plus faint clutter."""
    a, b = rng.choice(len(PALETTE), 2, replace=False)
    t = _smooth_field(rng, size, int(rng.integers(2, 5)))[..., None]
    base = PALETTE[a] * (1 - t) + PALETTE[b] * t
    grey = rng.uniform(0.35, 0.65)
    image = np.ascontiguousarray(base * (1 - grey) + 128.0 * grey, dtype=np.float32)
    layer = image.copy()
    for _ in range(int(rng.integers(4, 11))):
        colour = tuple(float(x) for x in PALETTE[rng.integers(len(PALETTE))])
        kind = rng.integers(3)
        cx, cy = (int(x) for x in rng.integers(0, size, 2))
        extent = max(2, int(size * rng.uniform(0.02, 0.08)))
        if kind == 0:
            axes = (extent, max(1, int(extent * rng.uniform(0.4, 1.0))))
            cv2.ellipse(layer, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_8)
        elif kind == 1:
            cv2.rectangle(layer, (cx - extent, cy - extent // 2), (cx + extent, cy + extent // 2), colour, -1)
        else:
            x2, y2 = (int(x) for x in rng.integers(0, size, 2))
            cv2.line(layer, (cx, cy), (x2, y2), colour, int(rng.integers(1, 3)), cv2.LINE_8)
    alpha = rng.uniform(0.25, 0.5)
    return image * (1 - alpha) + layer * alpha


def _paint_object(image: np.ndarray, obj: SynthObject, mask: np.ndarray) -> None:
    """Paint ``obj``'s textured fill into ``image`` (float32 H×W×3) where ``mask`` is set, in place."""
    ys, xs = np.nonzero(mask)
    gx, gy = _grid(image.shape[0])
    x, y = gx[ys, xs] - obj.centre[0], gy[ys, xs] - obj.centre[1]
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    u, v = c * x + s * y, -s * x + c * y
    r = np.sqrt(u * u + v * v)
    ink = _TEXTURES[obj.spec.texture](u + obj.phase[0], v + obj.phase[1], r, obj.period)
    part = obj.part_mask(image.shape[0])
    if part is not None:  # shared_body: a plain body, the class texture on the part only
        ink &= part[ys, xs]
    colours = np.where(ink[:, None], np.float32(obj.ink), np.float32(obj.fill))
    strength, dx, dy = obj.shade
    shade = 1.0 + strength * (dx * x + dy * y) / max(obj.radius, 1.0)
    image[ys, xs] = colours * shade[:, None].astype(np.float32)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def render_sample(
    rng: np.random.Generator | int | Sequence[int],
    image_size: int = 160,
    num_classes: int | None = None,
    max_objects: int = 3,
    *,
    texture_scale: float = 1.0,
    classes: Sequence[str] | None = None,
    frequent: int | None = None,
    frequent_fraction: float = 0.97,
    paired: tuple[int, int] | None = None,
    shared_body: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """One synthetic image: (RGB uint8 H×W×3, mask uint8 H×W, sorted foreground class ids that are labelled).

    ``rng`` is a generator or a seed for ``np.random.default_rng`` (e.g. ``[seed, split_index, image_index]``).
    The classes are the named ``classes`` (mask id k ↔ ``classes[k-1]``; ``num_classes`` then None or their count)
    or else the first ``num_classes`` (None: 6) of :data:`SYNTH_CLASSES`; ``texture_scale`` multiplies every texture
    period.
    See the module doc for the drawing, occlusion, ignore-band and label rules.
    """
    num_classes = len(class_specs(num_classes, classes))  # checks them before any drawing
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    image = render_background(rng, image_size)
    objects = layout_objects(
        rng,
        image_size,
        num_classes,
        max_objects,
        texture_scale,
        classes,
        frequent=frequent,
        frequent_fraction=frequent_fraction,
        paired=paired,
        shared_body=shared_body,
    )
    ids = np.zeros((image_size, image_size), np.uint8)
    for obj, mask in objects:
        _paint_object(image, obj, mask)
        ids[mask] = obj.class_id
        outline = mask & ~cv2.erode(mask.view(np.uint8), _CROSS).astype(bool)
        ids[outline] = IGNORE
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    counts = np.bincount(ids.ravel(), minlength=256)
    labels = []
    for class_id in range(1, num_classes + 1):
        if counts[class_id] >= min_visible_pixels(image_size):
            labels.append(class_id)
        elif counts[class_id]:
            ids[ids == class_id] = IGNORE
    return rgb, ids, tuple(labels)


# ---------------------------------------------------------------------------------------------------- dataset


def image_id(split: str, index: int) -> str:
    """The id of image ``index`` of ``split`` (``train_aug`` ids read ``synth_train_000123``)."""
    return f"synth_{'train' if split == 'train_aug' else split}_{index:06d}"


def generate_dataset(
    out_dir: str | Path, params: Mapping[str, Any] | SynthParams, progress: bool = True
) -> SynthParams:
    """Write the VOC-layout synthetic dataset to ``out_dir`` (replaced whole, atomically); return the params.

    Builds in a temporary sibling directory: images and masks first, then the split lists, and last
    ``classes.txt``, ``labels.tsv`` and ``dataset.yaml``; the directory is renamed onto ``out_dir`` only when
    complete, so an interrupted run leaves nothing that looks finished.
    """
    cfg = params if isinstance(params, SynthParams) else parse_params(params)
    names = class_names(cfg.num_classes, cfg.classes)
    counts = {"train_aug": cfg.num_train_aug, "val": cfg.num_val}
    with atomic_dir(out_dir) as root:
        labels: dict[str, list[str]] = {}
        split_ids: dict[str, list[str]] = {}
        bar = progress_bar(total=sum(counts.values()), desc="synth", unit="img", disable=not progress, mininterval=2.0)
        for split, count in counts.items():
            split_ids[split] = []
            for index in range(count):
                rgb, mask, classes = render_sample(
                    [cfg.seed, SPLITS[split], index],
                    cfg.image_size,
                    cfg.num_classes,
                    cfg.max_objects,
                    texture_scale=cfg.texture_scale,
                    classes=cfg.classes,
                    frequent=names.index(cfg.frequent_class) if cfg.frequent_class else None,
                    frequent_fraction=cfg.frequent_fraction,
                    paired=tuple(names.index(n) for n in cfg.paired_classes) if cfg.paired_classes else None,
                    shared_body=cfg.shared_body,
                )
                name = image_id(split, index)
                write_jpeg(root / "JPEGImages" / f"{name}.jpg", rgb, quality=JPEG_QUALITY)
                write_label_png(root / "SegmentationClass" / f"{name}.png", mask)
                labels[name] = [names[c] for c in classes]
                split_ids[split].append(name)
                bar.update()
        bar.close()
        split_ids["train"] = split_ids["train_aug"][: cfg.num_train]
        for split in ("train_aug", "train", "val"):
            write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(split_ids[split]) + "\n")
        write_text(root / "classes.txt", "\n".join(names) + "\n")
        write_text(root / "labels.tsv", format_labels_tsv(labels))
        recorded = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(cfg).items()
            if k not in _RECORDED_IF_SET or v != _RECORDED_IF_SET[k]
        }
        meta = {
            "name": "synth",
            "images": "JPEGImages",
            "masks": "SegmentationClass",
            "seed": cfg.seed,
            "generator_version": GENERATOR_VERSION,
            "max_pixels": cfg.max_pixels,
            "params": recorded,
        }
        write_text(root / "dataset.yaml", yaml.safe_dump(meta, sort_keys=False))
    return cfg


__all__ = [
    "GENERATOR_VERSION",
    "MAX_CLASSES",
    "PALETTE",
    "SYNTH_CLASSES",
    "ClassSpec",
    "SynthObject",
    "SynthParams",
    "class_names",
    "class_specs",
    "generate_dataset",
    "image_id",
    "layout_objects",
    "min_visible_pixels",
    "parse_params",
    "render_background",
    "render_sample",
    "shape_mask",
]
