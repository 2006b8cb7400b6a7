"""File I/O at the edges: atomic writes, id PNGs with the VOC palette, image and list reading with validation."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsss.errors import InputError

IGNORE = 255


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved), as a flat RGB list for ``Image.putpalette``."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


_PALETTE = voc_palette()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on error delete it.

    The output therefore appears complete or not at all. ``suffix`` keeps a file extension on the temp name
    (some writers pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` (whole), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: object) -> None:
    """Write strict JSON (NaN is an error: use None), indented, atomically."""
    write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def write_label_png(path: str | os.PathLike[str], ids: np.ndarray) -> None:
    """Write an H×W uint8 id map as a palette PNG (ids readable directly; colours for humans), atomically."""
    arr = np.asarray(ids)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"label map must be 2-D uint8, got {arr.dtype} {arr.shape}")
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    img.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike[str], num_classes: int | None = None) -> np.ndarray:
    """Read an id map (mode L or P) as H×W uint8; with ``num_classes`` check every value is in 0..C-1 or 255."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise InputError(path, f"mask must be single-channel (mode L or P), got mode {img.mode}")
            arr = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(path, "mask file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"cannot decode mask PNG ({err})") from None
    if num_classes is not None:
        bad = (arr >= num_classes) & (arr != IGNORE)
        if bad.any():
            vals = sorted(set(np.unique(arr[bad]).tolist()))[:5]
            raise InputError(path, f"mask values {vals} outside 0..{num_classes - 1} and {IGNORE} (ignore)")
    return arr


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB; a missing or corrupt file raises InputError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"cannot decode image ({err})") from None
    return arr


def write_jpeg(path: str | os.PathLike[str], rgb: np.ndarray, quality: int = 95) -> None:
    """Write H×W×3 uint8 RGB as a baseline JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="JPEG", quality=quality)


def index_shard_files(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str], suffix: str,
                      what: str) -> dict[str, Path]:
    """Map every id to its ``<id><suffix>`` among the shard folders ``dirs`` (the first folder holding it wins).

    Each folder is listed once, so indexing N ids costs one directory scan per shard, not N look-ups.
    ``what`` names the files in the errors: a missing folder, or ids without a file, is an InputError."""
    found: dict[str, Path] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise InputError(d, f"{what} folder is missing")
        for path in d.glob(f"*{suffix}"):
            found.setdefault(path.name[: -len(suffix)], path)
    missing = [i for i in ids if i not in found]
    if missing:
        where = Path(dirs[0]).parent if dirs else Path(what)
        raise InputError(where, f"no {what} for {len(missing)} of {len(ids)} ids, e.g. {missing[0]!r}")
    return {i: found[i] for i in ids}
