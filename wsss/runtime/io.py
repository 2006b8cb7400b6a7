"""File I/O at the edges: atomic writes, id PNGs with the VOC palette, image and list reading with validation."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsss.runtime.errors import InputError

log = logging.getLogger(__name__)

IGNORE = 255

DEFAULT_MAX_PIXELS = 2048 * 2048
"""Images with more pixels are refused (``datasets.<name>.max_pixels``). 4.2 megapixels is 16× the largest VOC
image (500×500) and 10× the largest COCO one (640×640), yet CAM inference at scale 2.0 (a 4096×4096 input, about
1 GB per 64-channel float32 feature map at stride 2) still fits a 16 GB GPU; a 20-megapixel photo would need five
times that and run out of memory, so it is refused with a clear error and must be downscaled first."""


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


def palette_rgb() -> np.ndarray:
    """The same colour map as a 256×3 uint8 array (row k = the colour of class id k): the one palette of the label
    PNGs, overlays, report figures and the exported model's metadata."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


_PALETTE = voc_palette()


def _host() -> str:
    """This machine's name as it appears in temp names (characters other than ``[A-Za-z0-9.]`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _temp_prefix(path: Path) -> str:
    """The temp-name prefix of ``path``'s siblings made by this process: ``.<name>.<host>-<pid>-``."""
    return f".{path.name}.{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, directory: bool) -> None:
    """Give a temp made by ``mkstemp``/``mkdtemp`` (mode 0600/0700) the mode a file or folder created directly
    gets under the process umask, so outputs are as readable as the user's umask says (group projects)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


_swept_dirs: set[str] = set()


def sweep_stale_temps(path: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Remove the temps left by dead processes of this machine beside ``path``; return what was removed.

    Temps are named ``.<output>.<host>-<pid>-<random>.tmp…`` (:func:`atomic_path`, :func:`atomic_dir`). One whose
    process is gone (killed with SIGKILL, a node crash) is garbage; one of a live process, or of another machine
    (whose processes cannot be checked from here), is left alone. A folder is swept once per process (the first
    output written there), so writing thousands of files into one folder lists it once; ``force`` sweeps again.
    """
    folder = Path(path).parent
    key = os.path.abspath(folder)
    removed: list[Path] = []
    if key in _swept_dirs and not force:
        return removed
    pattern = re.compile(r"\..+\." + re.escape(_host()) + r"-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp.*")
    try:
        with os.scandir(folder) as entries:
            stale = [
                Path(e.path) for e in entries if (m := pattern.fullmatch(e.name)) and not _pid_alive(int(m["pid"]))
            ]
    except FileNotFoundError:
        return removed
    _swept_dirs.add(key)
    for sibling in stale:
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    if removed:
        log.warning(
            "removed %d stale temp(s) left by dead processes in %s: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on error delete it.

    The output therefore appears complete or not at all. ``suffix`` keeps a file extension on the temp name
    (some writers pick the format from it). Temps left in the folder by dead processes are swept first
    (:func:`sweep_stale_temps`); a signal ends a stage through :func:`wsss.runtime.cli.run_stage` as an exception, so
    this cleanup runs on SIGTERM/SIGINT too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _as_if_created(tmp_path, directory=False)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


OUTPUT_MARKER = ".wsss-output"
"""An empty file :func:`atomic_dir` writes into every folder it creates: only such a folder (or an empty one) is
ever replaced, so a stage never deletes a folder it did not write (a dataset root given as the output folder)."""

_LEGACY_MARKERS = (".wsss_extracted", "dataset.yaml")
"""Files by which folders written before :data:`OUTPUT_MARKER` existed are recognised: a download extraction's
marker, or a prepared dataset's metadata when the folder holds nothing but the VOC-layout entries."""
_LEGACY_DATASET_ENTRIES = frozenset(
    {
        "JPEGImages",
        "SegmentationClass",
        "SegmentationClassAug",
        "ImageSets",
        "classes.txt",
        "labels.tsv",
        "dataset.yaml",
        ".snakemake_timestamp",
    }
)


def written_by_pipeline(folder: Path) -> bool:
    """Whether ``folder`` (an existing directory) may be replaced: empty, or marked as a pipeline output."""
    names = {p.name for p in folder.iterdir()}
    if not names or OUTPUT_MARKER in names or _LEGACY_MARKERS[0] in names:
        return True
    return _LEGACY_MARKERS[1] in names and names <= _LEGACY_DATASET_ENTRIES


def paths_overlap(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether folders ``a`` and ``b`` are the same, or one lies inside the other (symlinks resolved)."""
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return ra == rb or ra in rb.parents or rb in ra.parents


def check_apart(source: str | os.PathLike[str], out: str | os.PathLike[str], what: str) -> None:
    """An InputError unless the input folder ``source`` and the output folder ``out`` are apart: the output is
    replaced whole, so an input equal to, inside or containing it would be deleted."""
    if paths_overlap(source, out):
        raise InputError(
            source,
            f"{what} overlaps the output folder {out} (equal, inside or containing it); the "
            f"output is replaced whole: keep your data outside resources/ and results/",
        )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` (whole), on error it is removed.

    Stale temps beside ``path`` from dead processes are swept first, as in :func:`atomic_path`. The new folder
    holds :data:`OUTPUT_MARKER`; an existing ``path`` is replaced only if :func:`written_by_pipeline` (an
    existing file there, or a folder of the user's, is an InputError and stays as it is)."""
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        _as_if_created(tmp, directory=True)
        (tmp / OUTPUT_MARKER).touch()
        yield tmp
        _check_replaceable(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(path: Path) -> None:
    if path.is_symlink():
        return
    if path.is_dir() and not written_by_pipeline(path):
        raise InputError(
            path,
            f"exists and was not written by this pipeline (no {OUTPUT_MARKER} marker); "
            "refusing to replace it: move it away or choose another output folder",
        )
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a folder; refusing to replace it with the output folder")


def is_hidden(path: str | os.PathLike[str]) -> bool:
    """Whether a file is hidden (its name begins with '.': macOS ``._*`` resource forks, ``.DS_Store``, editor
    and Snakemake files). Every reader of a user's folder skips hidden files, with a count in the log."""
    return Path(path).name.startswith(".")


def visible_files(folder: Path, what: str) -> list[Path]:
    """The sorted entries of ``folder`` that are not hidden; the hidden ones are counted in one log line."""
    entries = sorted(folder.iterdir())
    hidden = [p for p in entries if is_hidden(p)]
    if hidden:
        log.info("%s: skipped %d hidden file(s) in %s, e.g. %s", what, len(hidden), folder, hidden[0].name)
    return [p for p in entries if not is_hidden(p)]


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: object) -> None:
    """Write strict JSON (NaN is an error: use None), indented, atomically."""
    write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON object written by an evaluation stage; a missing or malformed file is an InputError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, f"{what} is missing") from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read {what} ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"{what} is not a JSON object")
    return data


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
    except Image.DecompressionBombError as err:
        raise InputError(path, f"mask refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"cannot decode mask PNG ({err})") from None
    if num_classes is not None:
        bad = (arr >= num_classes) & (arr != IGNORE)
        if bad.any():
            vals = sorted(set(np.unique(arr[bad]).tolist()))[:5]
            raise InputError(path, f"mask values {vals} outside 0..{num_classes - 1} and {IGNORE} (ignore)")
    return arr


_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
"""Pillow's modes of 16-bit single-channel images (a 16-bit grey PNG); 16-bit RGB(A) PNGs open as 8-bit RGB(A)."""

_EXIF_ORIENTATION = 0x0112
_warned_orientation: set[str] = set()


def read_rgb(path: str | os.PathLike[str], max_pixels: int | None = None, limit_key: str = "max_pixels") -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB; a missing, corrupt or oversized file raises InputError naming it.

    16-bit grey images are scaled to 8 bits (``round(v × 255 / 65535)``); 32-bit and float images are refused.
    With ``max_pixels``, an image with more pixels is refused before it is decoded (``limit_key`` is the config
    key the error names). Pixels are returned in stored order: an EXIF orientation tag is not applied, only
    warned about (once per file), because masks follow the stored pixel order, as in VOC and COCO.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise InputError(
                    path,
                    f"image is {width}×{height} = {width * height} pixels, above max_pixels "
                    f"{max_pixels}; downscale the image or raise {limit_key}",
                )
            _warn_orientation(path, img)
            img.load()
            arr = _to_rgb(path, img)
    except FileNotFoundError:
        raise InputError(path, "image file is missing") from None
    except Image.DecompressionBombError as err:
        raise InputError(path, f"image refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"cannot decode image ({err})") from None
    return arr


def _to_rgb(path: str | os.PathLike[str], img: Image.Image) -> np.ndarray:
    """The decoded ``img`` as H×W×3 uint8 RGB: 16-bit grey scaled to 8 bits, other deep modes refused."""
    if img.mode in _SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
        wide = np.asarray(img).astype(np.uint32)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        raise InputError(path, f"unsupported image mode {img.mode} (32-bit or float pixels); convert it to 8-bit RGB")
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _warn_orientation(path: str | os.PathLike[str], img: Image.Image) -> None:
    """Log a warning (once per file) when ``img`` has an EXIF orientation tag that a viewer would apply."""
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in range(2, 9) or str(path) in _warned_orientation:
        return
    _warned_orientation.add(str(path))
    log.warning(
        "%s: EXIF orientation %s would rotate or flip the image in a viewer; it is read in stored pixel "
        "order (as its mask must be)",
        path,
        orientation,
    )


def write_jpeg(path: str | os.PathLike[str], rgb: np.ndarray, quality: int = 95) -> None:
    """Write H×W×3 uint8 RGB as a baseline JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="JPEG", quality=quality)


def index_shard_files(
    dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str], suffix: str, what: str
) -> dict[str, Path]:
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


def index_label_dirs(dirs: Sequence[str | os.PathLike[str]], ids: Sequence[str]) -> dict[str, Path]:
    """Map every id to its ``<id>.png`` among the shard folders ``dirs``; a missing id is an InputError."""
    return index_shard_files(dirs, ids, ".png", "label PNG")
