"""Fetch and unpack dataset archives: verified downloads (size + md5) and safe, atomic extraction.

A download streams to a temporary sibling file and is renamed onto its destination only after its size and
checksum check out, so a destination file that exists is always complete; a download over the network must be
pinned by an md5. Extraction writes into a temporary sibling folder that is renamed onto the destination only
when every member is unpacked. Three independent defences keep it inside that folder: link members (symbolic or
hard) are rejected outright, since no dataset archive needs them and they are how ``tarfile.data_filter`` was
bypassed before Python 3.11.13 / 3.12.11; every member then still passes ``data_filter``; and every member's
final path, resolved with ``os.path.realpath``, must lie under the destination.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from wsss.runtime.errors import InputError
from wsss.runtime.io import atomic_dir, atomic_path, write_text
from wsss.runtime.progress import progress

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike[str]) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def url_filename(url: str) -> str:
    """The file name a URL points at (last path segment, query ignored); used to name the cached download."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in (".", ".."):
        raise InputError(url, "URL does not end in a file name")
    return name


def download(url: str, dest: str | os.PathLike[str], md5: str | None) -> Path:
    """Download ``url`` (http, https or file) to ``dest``, verified; return ``dest``.

    An existing ``dest`` whose md5 matches is reused without touching the network. The body is streamed to a
    temporary sibling; a body shorter than the announced Content-Length, or an md5 other than ``md5``, raises
    :class:`InputError` and leaves no file behind. ``md5=None`` is accepted only for ``file://`` URLs (a local
    copy the user chose; its md5 is logged so that it can be pinned); an http(s) URL without one is an error
    before anything is fetched.
    """
    dest = Path(dest)
    expected = md5.lower() if md5 else None
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise InputError(url, f"unsupported URL scheme {scheme!r} (use http, https or file)")
    require_md5(url, md5)
    source_file = _source_file(dest)
    if dest.is_file():
        actual = md5sum(dest)
        if expected is None:
            recorded = source_file.read_text() if source_file.is_file() else None
            if recorded == _source_key(url):
                log.warning(
                    "reusing %s without a checksum to verify; its md5 is %s (pin it in the config)", dest, actual
                )
                return dest
            log.warning(
                "cached %s came from %s, not %s: copying again (no md5 to tell them apart)",
                dest,
                (recorded or "an unrecorded source").strip(),
                url,
            )
        if actual == expected:
            log.info("reusing %s (md5 ok)", dest)
            return dest
        log.warning("cached %s has md5 %s, expected %s: downloading again", dest, actual, expected)
    log.info("downloading %s -> %s", url, dest)
    with atomic_path(dest) as tmp:
        actual = _fetch(url, tmp)
        if expected is None:
            log.warning("no md5 configured for %s; downloaded file has md5 %s (pin it in the config)", url, actual)
        elif actual != expected:
            raise InputError(dest, f"md5 mismatch for download of {url}: expected {expected}, got {actual}")
    write_text(source_file, _source_key(url))
    return dest


def _source_file(dest: Path) -> Path:
    """Where the source of a cached download is recorded (a hidden sibling): the cache is keyed by URL, so a
    file without an md5 is reused only for the URL (and, for file://, the source's size and mtime) it came from."""
    return dest.with_name(f".{dest.name}.source")


def _source_key(url: str) -> str:
    """The URL, and for a ``file://`` URL the source's size and modification time (a changed copy is re-read)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        try:
            stat = os.stat(urllib.request.url2pathname(parsed.path))
            return f"{url}\n{stat.st_size}:{stat.st_mtime_ns}\n"
        except OSError:
            pass
    return f"{url}\n"


def require_md5(url: str, md5: str | None, key: str = "md5") -> None:
    """Raise :class:`InputError` unless ``url`` is a ``file://`` URL or ``md5`` pins it (``key`` names the setting)."""
    if not md5 and urllib.parse.urlparse(url).scheme != "file":
        raise InputError(
            url,
            f"no {key} given: a download over the network must be pinned by its md5 (set {key}, "
            "or download the file yourself and give a file:// URL)",
        )


def _fetch(url: str, path: Path) -> str:
    """Stream ``url`` into ``path``; check the size against Content-Length; return the md5 of what was written."""
    digest = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            length_header = response.headers.get("Content-Length")
            total = int(length_header) if length_header and length_header.isdigit() else None
            with (
                open(path, "wb") as out,
                progress(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url_filename(url), leave=False
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except http.client.IncompleteRead as err:
        received += len(err.partial)
        raise InputError(url, f"download truncated: connection closed after {received} bytes") from None
    except urllib.error.HTTPError as err:
        raise InputError(url, f"download failed: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise InputError(url, f"download failed: {err.reason}") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as err:
        raise InputError(url, f"download failed after {received} bytes ({type(err).__name__}: {err})") from None
    if total is not None and received != total:
        raise InputError(url, f"download truncated: got {received} of {total} bytes (Content-Length)")
    return digest.hexdigest()


def extract(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], subdir: str | None = None) -> Path:
    """Unpack a tar (any compression) or zip archive into ``dest_dir`` atomically; return ``dest_dir``.

    The format is detected from the content, not the file name. With ``subdir`` (a ``/``-separated folder
    inside the archive) only that folder's content is unpacked, as ``dest_dir`` itself; members outside it
    are skipped, and an archive without it is an error. A corrupt archive, an unsafe member (absolute path,
    ``..``, any symbolic or hard link, device file, a path resolving outside), or an encrypted or deflate64 zip
    member raises :class:`InputError` naming the archive, and nothing is left at ``dest_dir`` (an existing
    ``dest_dir`` is replaced only on success).
    """
    archive = Path(archive)
    prefix = _normalise_subdir(archive, subdir)
    if not archive.is_file():
        raise InputError(archive, "archive file is missing")
    with atomic_dir(dest_dir) as tmp:
        if zipfile.is_zipfile(archive):
            count = _extract_zip(archive, tmp, prefix)
        else:
            count = _extract_tar(archive, tmp, prefix)
        if prefix and count == 0:
            raise InputError(archive, f"archive has no folder {subdir!r}")
        log.info("extracted %d members of %s into %s", count, archive, dest_dir)
    return Path(dest_dir)


def _normalise_subdir(archive: Path, subdir: str | None) -> str:
    if not subdir:
        return ""
    parts = PurePosixPath(subdir).parts
    if PurePosixPath(subdir).is_absolute() or ".." in parts:
        raise InputError(archive, f"subdir {subdir!r} must be a relative folder inside the archive")
    return "/".join(p for p in parts if p != ".") + "/"


def _strip(name: str, prefix: str) -> str | None:
    """``name`` relative to ``prefix`` (None when outside it); leading ``./`` is ignored."""
    while name.startswith("./"):
        name = name[2:]
    if not prefix:
        return name
    if not name.startswith(prefix):
        return None
    return name[len(prefix) :]


def _check_layout(archive: Path, members: list[tuple[str, bool]]) -> None:
    """Refuse an archive where one path is both a file and a folder (``a`` and ``a/b``): it cannot be unpacked.
    ``members`` are (name, is a folder) of the folders and regular files (links are refused on their own)."""
    files = {name.rstrip("/") for name, is_dir in members if not is_dir}
    for name, is_dir in members:
        if is_dir and name.rstrip("/") in files:
            raise InputError(
                archive,
                f"archive members {name.rstrip('/')!r} (a file) and {name!r} (a folder) clash: one path cannot be both",
            )
        parts = name.rstrip("/").split("/")
        for k in range(1, len(parts)):
            parent = "/".join(parts[:k])
            if parent in files:
                raise InputError(
                    archive,
                    f"archive members {parent!r} (a file) and {name!r} clash: {parent!r} "
                    "cannot be both a file and a folder",
                )


def _inside(dest: Path, name: str) -> bool:
    """Whether ``dest/name``, every link resolved (``os.path.realpath``), lies under ``dest`` (also resolved)."""
    root = os.path.realpath(dest)
    final = os.path.realpath(os.path.join(root, name))
    return os.path.commonpath([root, final]) == root


def _extract_tar(archive: Path, dest: Path, prefix: str) -> int:
    count = 0

    def keep(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        nonlocal count
        if member.name.startswith("/"):
            raise tarfile.AbsolutePathError(member)
        name = _strip(member.name, prefix)
        if not name:
            return None
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise InputError(
                archive,
                f"archive member {member.name!r} is a {kind} link (to {member.linkname!r}); "
                "links are not accepted in dataset archives",
            )
        safe = tarfile.data_filter(member.replace(name=name, deep=False), path)
        if safe is not None and not _inside(Path(path), safe.name):
            raise InputError(
                archive, f"unsafe archive member rejected: {member.name!r} resolves outside the destination"
            )
        count += 1
        return safe

    try:
        with tarfile.open(archive, mode="r:*") as tar:
            names = [(_strip(m.name, prefix), m.isdir()) for m in tar.getmembers() if m.isdir() or m.isfile()]
            _check_layout(archive, [(n, d) for n, d in names if n])
            tar.extractall(dest, filter=keep)
    except tarfile.FilterError as err:
        raise InputError(archive, f"unsafe archive member rejected ({err})") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise InputError(archive, f"corrupt or unreadable archive ({type(err).__name__}: {err})") from None
    return count


_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
"""The compression methods Python's zipfile can read (deflate64, method 9, and others it cannot)."""


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Reject a member that would land outside the destination, is encrypted, or uses a method we cannot read."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        raise InputError(archive, f"unsafe archive member rejected: {info.filename!r}")
    if info.flag_bits & 0x1:
        raise InputError(archive, f"archive member {info.filename!r} is encrypted; give an unencrypted archive")
    if info.compress_type not in _ZIP_METHODS:
        raise InputError(
            archive,
            f"archive member {info.filename!r} uses compression method {info.compress_type} "
            f"(e.g. 9 = deflate64), which Python cannot read; repack it with "
            f"{', '.join(_ZIP_METHODS.values())}",
        )


def _extract_zip(archive: Path, dest: Path, prefix: str) -> int:
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_zip_member(archive, info)
            names = [(_strip(i.filename.replace("\\", "/"), prefix), i.is_dir()) for i in infos]
            _check_layout(archive, [(n, d) for n, d in names if n])
            for info in infos:
                name = _strip(info.filename.replace("\\", "/"), prefix)
                if not name:
                    continue
                if not _inside(dest, name):
                    raise InputError(
                        archive, f"unsafe archive member rejected: {info.filename!r} resolves outside the destination"
                    )
                info.filename = name
                zf.extract(info, dest)
                count += 1
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise InputError(archive, f"corrupt or unreadable archive ({type(err).__name__}: {err})") from None
    return count


__all__ = ["download", "extract", "md5sum", "require_md5", "url_filename"]
