"""Downloads and extraction against a local HTTP server: verified, cached, atomic, safe against path traversal."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import logging
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.download import download, extract, md5sum
from wsss.data.voc import DEFAULT_LISTS_DIR, VOC_CLASSES, prepare_voc
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_jpeg, write_label_png

IDS = {"2007_000032": ["aeroplane", "person"], "2007_000039": ["tvmonitor"], "2007_000033": ["aeroplane"]}
SPLITS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}


def _xml(names: list[str]) -> str:
    objects = "".join(f"<object><name>{n}</name><difficult>0</difficult></object>" for n in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>\n"


def _mask(image_id: str) -> np.ndarray:
    mask = np.zeros((6, 10), dtype=np.uint8)
    mask[1:5, 2:8] = VOC_CLASSES.index(IDS[image_id][0]) + 1
    return mask


def build_archives(src: Path, out: Path) -> tuple[Path, Path]:
    """A tiny VOC tar (VOCdevkit/VOC2012/…, official masks for nothing) and an aug zip (SegmentationClassAug/…)."""
    voc = src / "VOCdevkit" / "VOC2012"
    for n, (image_id, names) in enumerate(IDS.items()):
        write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", np.full((6, 10, 3), 50 * n, dtype=np.uint8))
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{image_id}.xml").write_text(_xml(names))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    out.mkdir(parents=True, exist_ok=True)
    voc_tar = out / "VOCtrainval_tiny.tar"
    with tarfile.open(voc_tar, "w") as tar:
        tar.add(src / "VOCdevkit", arcname="VOCdevkit")
    aug_zip = out / "SegmentationClassAug.zip"
    with zipfile.ZipFile(aug_zip, "w") as zf:
        zf.writestr("SegmentationClassAug/", "")
        for image_id in IDS:
            png = src / f"{image_id}.png"
            write_label_png(png, _mask(image_id))
            zf.write(png, f"SegmentationClassAug/{image_id}.png")
        zf.writestr("__MACOSX/SegmentationClassAug/._2007_000032.png", b"junk")
    return voc_tar, aug_zip


def make_lists(lists: Path) -> Path:
    lists.mkdir()
    for split, ids in SPLITS.items():
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (lists / "train_aug.txt").write_text("\n".join(SPLITS["train"]) + "\n")
    (lists / "cls_labels.tsv").write_text((DEFAULT_LISTS_DIR / "cls_labels.tsv").read_text())
    return lists


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; counts GETs per path; ``/truncated/<file>`` announces the full size but sends half."""

    hits: dict[str, int]

    def do_GET(self):
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/truncated/"):
            data = (Path(self.directory) / self.path.split("/", 2)[2]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on 127.0.0.1 (free port) over a folder holding the tiny archives; yields (base_url, dir, hits)."""
    root = tmp_path_factory.mktemp("served")
    voc_tar, aug_zip = build_archives(tmp_path_factory.mktemp("src"), root)  # noqa: RUF059
    hits: dict[str, int] = {}
    handler = functools.partial(type("H", (_Handler,), {"hits": hits}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, hits
    finally:
        server.shutdown()
        server.server_close()


def _params(base: str, root: Path, **over) -> dict:
    params = {
        "voc_url": f"{base}/VOCtrainval_tiny.tar",
        "voc_md5": md5sum(root / "VOCtrainval_tiny.tar"),
        "aug_url": f"{base}/SegmentationClassAug.zip?dl=1",
        "aug_md5": md5sum(root / "SegmentationClassAug.zip"),
    }
    params.update(over)
    return params


def test_download_extract_prepare_and_cache(served, tmp_path):
    base, root, hits = served
    lists = make_lists(tmp_path / "lists")
    out = tmp_path / "voc"
    before = dict(hits)
    prepare_voc(out, _params(base, root), lists)
    assert hits.get("/VOCtrainval_tiny.tar", 0) == before.get("/VOCtrainval_tiny.tar", 0) + 1
    assert hits.get("/SegmentationClassAug.zip?dl=1", 0) == before.get("/SegmentationClassAug.zip?dl=1", 0) + 1
    assert (out / "downloads" / "VOCtrainval_tiny.tar").read_bytes() == (root / "VOCtrainval_tiny.tar").read_bytes()

    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["images"] == "VOCdevkit/VOC2012/JPEGImages"
    assert meta["masks"] == "VOCdevkit/VOC2012/SegmentationClassAug"
    assert not (out / "VOCdevkit" / "VOC2012" / "__MACOSX").exists()
    ds = VOCLayoutDataset(out)
    assert ds.ids("train") == SPLITS["train"] and ds.ids("val") == SPLITS["val"]
    for image_id, names in IDS.items():
        sample = ds.sample(image_id)
        assert sample.image.shape == (6, 10, 3)
        np.testing.assert_array_equal(sample.mask, _mask(image_id))
        assert [VOC_CLASSES[k] for k in np.flatnonzero(sample.labels)] == names

    # second run: downloads and extraction reused (no new requests), outputs rewritten identically
    marker = out / "VOCdevkit" / "VOC2012" / "JPEGImages" / "marker"
    marker.write_text("kept")
    labels = (out / "labels.tsv").read_text()
    after_first = dict(hits)
    prepare_voc(out, _params(base, root), lists)
    assert hits == after_first
    assert marker.exists() and (out / "labels.tsv").read_text() == labels


def test_bad_md5_leaves_nothing(served, tmp_path):
    base, root, _ = served
    lists = make_lists(tmp_path / "lists")
    out = tmp_path / "voc"
    with pytest.raises(InputError) as err:
        prepare_voc(out, _params(base, root, voc_md5="0" * 32), lists)
    msg = str(err.value)
    assert "VOCtrainval_tiny.tar" in msg and "0" * 32 in msg and md5sum(root / "VOCtrainval_tiny.tar") in msg
    assert not (out / "VOCdevkit").exists()
    assert list((out / "downloads").iterdir()) == []  # neither final nor temporary file
    assert not (out / "labels.tsv").exists() and not (out / "dataset.yaml").exists()


def test_truncated_download_leaves_nothing(served, tmp_path):
    base, root, _ = served
    lists = make_lists(tmp_path / "lists")
    out = tmp_path / "voc"
    with pytest.raises(InputError) as err:
        prepare_voc(out, _params(base, root, voc_url=f"{base}/truncated/VOCtrainval_tiny.tar"), lists)
    assert "truncated" in str(err.value) and f"{base}/truncated/VOCtrainval_tiny.tar" in str(err.value)
    assert not (out / "VOCdevkit").exists()
    assert list((out / "downloads").iterdir()) == []


def test_http_error_and_bad_scheme(served, tmp_path):
    base, _, _ = served
    with pytest.raises(InputError, match="HTTP 404"):
        download(f"{base}/nope.tar", tmp_path / "nope.tar", "0" * 32)
    with pytest.raises(InputError, match="scheme"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar", None)
    assert list(tmp_path.iterdir()) == []


def test_file_url_and_unpinned_md5(served, tmp_path, caplog):
    _, root, _ = served
    src = root / "SegmentationClassAug.zip"
    dest = tmp_path / "dl" / "aug.zip"
    with caplog.at_level(logging.WARNING):
        download(src.as_uri(), dest, None)
    assert dest.read_bytes() == src.read_bytes()
    assert md5sum(src) in caplog.text  # so the user can pin it
    assert md5sum(src) == hashlib.md5(src.read_bytes()).hexdigest()


def test_cached_file_with_wrong_md5_is_replaced(served, tmp_path):
    base, root, hits = served
    dest = tmp_path / "VOCtrainval_tiny.tar"
    dest.write_bytes(b"stale partial content")
    before = hits.get("/VOCtrainval_tiny.tar", 0)
    download(f"{base}/VOCtrainval_tiny.tar", dest, md5sum(root / "VOCtrainval_tiny.tar"))
    assert hits["/VOCtrainval_tiny.tar"] == before + 1
    assert dest.read_bytes() == (root / "VOCtrainval_tiny.tar").read_bytes()


def _tar_with(path: Path, name: str, data: bytes = b"x", **attrs) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("good/file.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"g"))
        info = tarfile.TarInfo(name)
        info.size = len(data) if not attrs else 0
        for key, value in attrs.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if not attrs else None)
    return path


@pytest.mark.parametrize(
    "name, attrs",
    [
        ("../evil", {}),
        ("good/../../evil", {}),
        ("/tmp/evil_abs_wsss_test", {}),
        ("good/link", {"type": tarfile.SYMTYPE, "linkname": "../../evil"}),
    ],
)
def test_tar_traversal_rejected(tmp_path, name, attrs):
    archive = _tar_with(tmp_path / "evil.tar", name, **attrs)
    dest = tmp_path / "work" / "out"
    with pytest.raises(InputError) as err:
        extract(archive, dest)
    assert str(archive) in str(err.value)
    assert not dest.exists() and not (tmp_path / "evil").exists() and not (tmp_path / "work" / "evil").exists()
    assert list((tmp_path / "work").iterdir()) == []  # temp folder cleaned up
    assert not Path("/tmp/evil_abs_wsss_test").exists()


def test_zip_traversal_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SegmentationClassAug/a.png", b"a")
        zf.writestr("SegmentationClassAug/../../evil", b"x")
    with pytest.raises(InputError, match="unsafe"):
        extract(archive, tmp_path / "out", "SegmentationClassAug")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


def test_corrupt_archive_keeps_previous_extraction(tmp_path):
    good = _tar_with(tmp_path / "good.tar", "good/other.txt")
    dest = tmp_path / "out"
    extract(good, dest, "good")
    assert sorted(p.name for p in dest.iterdir()) == [".wsss-output", "file.txt", "other.txt"]
    assert (dest / "file.txt").read_text() == "g"

    truncated = tmp_path / "truncated.tar.gz"
    with tarfile.open(truncated, "w:gz") as tar:
        info = tarfile.TarInfo("good/big.bin")
        payload = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    truncated.write_bytes(truncated.read_bytes()[:50_000])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not an archive" * 100)
    for bad in (truncated, garbage):
        with pytest.raises(InputError) as err:
            extract(bad, dest, "good")
        assert str(bad) in str(err.value)
        assert sorted(p.name for p in dest.iterdir()) == [".wsss-output", "file.txt", "other.txt"]  # untouched
    with pytest.raises(InputError, match="no folder"):
        extract(good, tmp_path / "out2", "VOCdevkit/VOC2012")
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.zip", "good.tar", "out", "truncated.tar.gz"]


class _ArchiveMaker:
    """Builds a tar member by member, as CPython's tarfile regression tests do (directories, symlinks, hard
    links, files)."""

    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path, "w")  # noqa: SIM115

    def add(
        self,
        name: str,
        *,
        symlink_to: str | None = None,
        hardlink_to: str | None = None,
        content: str | None = None,
        directory: bool = False,
    ) -> None:
        info = tarfile.TarInfo(name)
        data = None
        if directory:
            info.type, info.mode = tarfile.DIRTYPE, 0o777
        elif symlink_to is not None:
            info.type, info.linkname = tarfile.SYMTYPE, symlink_to
        elif hardlink_to is not None:
            info.type, info.linkname = tarfile.LNKTYPE, hardlink_to
        else:
            data = (content or "").encode()
            info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data) if data is not None else None)

    def close(self) -> None:
        self.tar.close()


def _realpath_limit_poc(archive: Path, dest_len: int) -> Path:
    """CPython's gh-135034 proof of concept (CVE-2025-4517): symlink chains whose expansion exceeds PATH_MAX stop
    ``os.path.realpath`` from resolving them, so ``data_filter`` (before 3.11.13) lets a hard link and then a
    file write go through them to ``../flag`` and ``../newfile``, outside the extraction folder.

    The component length is sized for an extraction folder whose path is ``dest_len`` characters long."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - dest_len - 1) // (len(steps) + 1))
    arc = _ArchiveMaker(archive)
    path = ""
    for step in steps:
        arc.add(os.path.join(path, component), directory=True)
        arc.add(os.path.join(path, step), symlink_to=component)
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    arc.add(linkpath, symlink_to=os.path.join(*[".."] * len(steps)))
    arc.add("escape", symlink_to=os.path.join(linkpath, ".."))
    arc.add("flaglink", hardlink_to=os.path.join("escape", "flag"))
    arc.add("flaglink", content="overwrite")
    arc.add("escape/newfile", content="new")
    arc.close()
    return archive


def test_tar_realpath_limit_attack_rejected(tmp_path):
    """The attack needs the folder's path length; :func:`extract` unpacks into a temporary sibling of the
    destination whose name is not known here, so every plausible length is tried."""
    for name_len in range(12, 90, 6):
        work = tmp_path / f"w{name_len}"
        work.mkdir()
        (work / "flag").write_text("original")
        archive = _realpath_limit_poc(tmp_path / f"poc{name_len}.tar", len(str(work)) + 1 + name_len)
        with pytest.raises(InputError) as err:
            extract(archive, work / "out")
        assert str(archive) in str(err.value) and "link" in str(err.value) and "\n" not in str(err.value)
        assert (work / "flag").read_text() == "original"
        assert sorted(p.name for p in work.iterdir()) == ["flag"]  # no newfile, no temp folder, no out


@pytest.mark.parametrize(
    "name, attrs",
    [
        ("good/inside_link", {"type": tarfile.SYMTYPE, "linkname": "file.txt"}),
        ("good/hard", {"type": tarfile.LNKTYPE, "linkname": "good/file.txt"}),
        ("good/hard_out", {"type": tarfile.LNKTYPE, "linkname": "../outside"}),
    ],
)
def test_tar_links_rejected_outright(tmp_path, name, attrs):
    """Even links that stay inside the destination (data_filter accepts them) are refused: a dataset archive
    has none, and refusing them removes the whole family of link-based escapes."""
    (tmp_path / "outside").write_text("original")
    archive = _tar_with(tmp_path / "links.tar", name, **attrs)
    with pytest.raises(InputError, match="link") as err:
        extract(archive, tmp_path / "work" / "out")
    assert repr(name) in str(err.value)
    assert list((tmp_path / "work").iterdir()) == []
    assert (tmp_path / "outside").read_text() == "original"


def test_links_outside_the_extracted_subdir_are_skipped(tmp_path):
    """Members outside ``subdir`` are never written, so a link there does not block the extraction."""
    archive = _tar_with(tmp_path / "a.tar", "other/link", type=tarfile.SYMTYPE, linkname="../../x")
    extract(archive, tmp_path / "out", "good")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".wsss-output", "file.txt"]


def test_tar_path_through_existing_symlink_rejected(tmp_path, monkeypatch):
    """The realpath check is a line of its own: with the link and filter checks out of the way (as if bypassed),
    a member whose folder is a symlink leading out is still refused before it is written."""
    import wsss.data.download as dl

    monkeypatch.setattr(dl.tarfile, "data_filter", lambda member, path: member)
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("sub/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    orig = dl._extract_tar

    def planted(archive, dest, prefix):
        (dest / "sub").symlink_to(outside)  # as if an earlier member had planted it
        return orig(archive, dest, prefix)

    monkeypatch.setattr(dl, "_extract_tar", planted)
    with pytest.raises(InputError, match="outside the destination"):
        extract(archive, tmp_path / "out")
    assert list(outside.iterdir()) == []


def _patch_zip(path: Path, member: str, *, method: int | None = None, flags: int | None = None) -> None:
    """Rewrite the compression method or the flag bits of ``member`` in its local header and its central directory
    entry (zipfile itself never writes an encrypted or deflate64 member)."""
    data = bytearray(path.read_bytes())
    for signature, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            start = at + 4
            if data[at + name_at : at + name_at + len(member)] != member.encode():
                continue
            if flags is not None:
                data[at + flag_at : at + flag_at + 2] = flags.to_bytes(2, "little")
            if method is not None:
                data[at + flag_at + 2 : at + flag_at + 4] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_zip_encrypted_or_deflate64_member_is_one_line_error(tmp_path):
    archives = {}
    for kind, patch in (("encrypted", {"flags": 0x1}), ("deflate64", {"method": 9})):
        archives[kind] = tmp_path / f"{kind}.zip"
        with zipfile.ZipFile(archives[kind], "w") as zf:
            zf.writestr("SegmentationClassAug/a.png", b"a")
            zf.writestr("SegmentationClassAug/b.png", b"b" * 12)
        _patch_zip(archives[kind], "SegmentationClassAug/b.png", **patch)
    encrypted, deflate64 = archives["encrypted"], archives["deflate64"]
    for archive, words in ((encrypted, "encrypted"), (deflate64, "compression method 9")):
        with pytest.raises(InputError) as err:
            extract(archive, tmp_path / "work" / "out", "SegmentationClassAug")
        assert str(archive) in str(err.value) and words in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "work" / "out").exists() and list((tmp_path / "work").iterdir()) == []


def test_network_download_without_md5_is_refused_before_fetching(served, tmp_path):
    base, _, hits = served
    before = dict(hits)
    with pytest.raises(InputError, match="md5") as err:
        download(f"{base}/SegmentationClassAug.zip", tmp_path / "aug.zip", None)
    assert f"{base}/SegmentationClassAug.zip" in str(err.value)
    assert hits == before and list(tmp_path.iterdir()) == []


def _sbd_mask(image_id: str) -> np.ndarray:
    """SBD's annotation of ``image_id``: a different box than the VOC one, no 255 boundary."""
    mask = np.zeros((6, 10), dtype=np.uint8)
    mask[0:3, 0:5] = VOC_CLASSES.index(IDS[image_id][-1]) + 1
    return mask


def _write_sbd_release(path: Path, work: Path, ids: list[str]) -> Path:
    """A tiny ``benchmark.tgz`` laid out as SBD's: ``benchmark_RELEASE/dataset/cls/<id>.mat`` with ``GTcls``."""
    from scipy.io import savemat

    cls = work / "benchmark_RELEASE" / "dataset" / "cls"
    cls.mkdir(parents=True)
    for image_id in ids:
        savemat(
            cls / f"{image_id}.mat",
            {
                "GTcls": {
                    "Segmentation": _sbd_mask(image_id),
                    "Boundaries": np.zeros((1, 20), dtype=object),
                    "CategoriesPresent": np.array([1]),
                }
            },
        )
    (work / "benchmark_RELEASE" / "dataset" / "train.txt").write_text("\n".join(ids) + "\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(work / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    return path


def test_sbd_release_converted_to_aug_masks(served, tmp_path):
    """The default aug source: SBD's benchmark.tgz over HTTP, md5-pinned; its .mat annotations become id PNGs and
    VOC's own SegmentationClass masks (with their 255 boundaries) win where both exist."""
    base, root, hits = served
    voc_tar, _ = build_archives(tmp_path / "src", tmp_path / "archives")
    voc_mask = _mask("2007_000033").copy()
    voc_mask[0, :] = 255
    write_label_png(tmp_path / "voc_seg.png", voc_mask)
    with tarfile.open(voc_tar, "a") as tar:
        tar.add(tmp_path / "voc_seg.png", arcname="VOCdevkit/VOC2012/SegmentationClass/2007_000033.png")
    (root / "VOCseg.tar").write_bytes(voc_tar.read_bytes())
    _write_sbd_release(root / "benchmark.tgz", tmp_path / "sbd", sorted(IDS))
    params = {
        "voc_url": f"{base}/VOCseg.tar",
        "voc_md5": md5sum(root / "VOCseg.tar"),
        "aug_url": f"{base}/benchmark.tgz",
        "aug_md5": md5sum(root / "benchmark.tgz"),
        "max_pixels": 1000,
    }
    out = tmp_path / "voc"
    prepare_voc(out, params, make_lists(tmp_path / "lists"))
    ds = VOCLayoutDataset(out)
    np.testing.assert_array_equal(ds.mask("2007_000032"), _sbd_mask("2007_000032"))
    np.testing.assert_array_equal(ds.mask("2007_000039"), _sbd_mask("2007_000039"))
    np.testing.assert_array_equal(ds.mask("2007_000033"), voc_mask)  # VOC's own mask, not SBD's
    assert yaml.safe_load((out / "dataset.yaml").read_text())["max_pixels"] == 1000 == ds.max_pixels

    before = dict(hits)  # second run: nothing fetched, nothing converted again
    stamp = (out / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "2007_000032.png").stat().st_mtime_ns
    prepare_voc(out, params, make_lists(tmp_path / "lists2"))
    assert hits == before
    assert (out / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "2007_000032.png").stat().st_mtime_ns == stamp


def test_voc_defaults_pin_the_official_sbd_release():
    from wsss.data.voc import DEFAULT_PARAMS

    assert DEFAULT_PARAMS["aug_url"].endswith("/semantic_contours/benchmark.tgz")
    assert DEFAULT_PARAMS["aug_md5"] == "82b4d87ceb2ed10f6038a1cba92111cb"
    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    voc = config["datasets"]["voc"]
    for key in ("voc", "aug"):  # every network download of the default config is pinned
        assert voc.get(f"{key}_md5") or voc.get(f"{key}_url", "").startswith("file://")


def test_unpinned_network_aug_url_is_refused_before_any_download(served, tmp_path):
    base, root, hits = served
    before = dict(hits)
    out = tmp_path / "voc"
    with pytest.raises(InputError) as err:
        prepare_voc(out, _params(base, root, aug_md5=None), make_lists(tmp_path / "lists"))
    assert "datasets.voc.aug_md5" in str(err.value) and "SegmentationClassAug.zip" in str(err.value)
    assert hits == before
    assert not (out / "downloads").exists() and not (out / "dataset.yaml").exists()


def test_bad_sbd_annotation_is_one_line_error(tmp_path):
    from scipy.io import savemat

    from wsss.data.voc import read_sbd_mask

    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    savemat(tmp_path / "nogt.mat", {"other": np.zeros((2, 2))})
    savemat(tmp_path / "range.mat", {"GTcls": {"Segmentation": np.full((2, 2), 40, dtype=np.uint8)}})
    for name in ("junk.mat", "nogt.mat", "range.mat", "missing.mat"):
        with pytest.raises(InputError) as err:
            read_sbd_mask(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def _tar_members(path: Path, *members: tuple[str, bytes | None]) -> Path:
    """A tar of (name, data) members; data None = a folder."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip_members(path: Path, *names: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    return path


# The archive surface's bad inputs, one row each: (build the archive under tmp_path, subdir, the one-line problem).
# Issue 18 added the file/folder clash rows (NotADirectoryError traceback on the old code).
BAD_ARCHIVES = {
    "tar file and folder of one name": (
        lambda t: _tar_members(t / "a.tar", ("a", b"1"), ("a/b", b"2")),
        None,
        "archive members 'a' (a file) and 'a/b' clash",
    ),
    "tar clash inside subdir": (
        lambda t: _tar_members(t / "a.tar", ("s/x", b"1"), ("s/x/", None), ("s/x/y", b"2")),
        "s",
        "archive members 'x' (a file) and 'x' (a folder) clash",
    ),
    "zip file and folder of one name": (
        lambda t: _zip_members(t / "a.zip", "a", "a/b"),
        None,
        "archive members 'a' (a file) and 'a/b' clash",
    ),
    "tar member outside": (lambda t: _tar_members(t / "a.tar", ("../evil", b"1")), None, "unsafe archive member"),
    "zip member outside": (lambda t: _zip_members(t / "a.zip", "s/../../evil"), "s", "unsafe archive member"),
    "tar link": (
        lambda t: _tar_with(t / "a.tar", "good/l", type=tarfile.SYMTYPE, linkname="x"),
        None,
        "is a symbolic link",
    ),
    "corrupt": (lambda t: _written(t / "a.tar", b"not an archive at all" * 40), None, "corrupt or unreadable archive"),
    "no such subdir": (lambda t: _tar_members(t / "a.tar", ("x/y", b"1")), "s", "archive has no folder 's'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archives_are_one_line_errors(tmp_path, case):
    """Every row: an InputError naming the archive, one line, nothing left at the destination."""
    build, subdir, problem = BAD_ARCHIVES[case]
    archive = build(tmp_path)
    (tmp_path / "work").mkdir()
    with pytest.raises(InputError) as err:
        extract(archive, tmp_path / "work" / "out", subdir)
    assert err.value.path == str(archive) and problem in err.value.problem, str(err.value)
    assert "\n" not in str(err.value) and list((tmp_path / "work").iterdir()) == []


def test_unpinned_file_url_cache_is_keyed_by_url(tmp_path, caplog):
    """Issue 18: a cached file:// download without md5 was reused after the URL changed. Planted bug: reuse any
    cached file when md5 is None (the old code)."""
    first, second = tmp_path / "one" / "data.tar", tmp_path / "two" / "data.tar"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    dest = tmp_path / "dl" / "data.tar"
    download(first.as_uri(), dest, None)
    download(second.as_uri(), dest, None)
    assert dest.read_bytes() == b"second"
    with caplog.at_level(logging.WARNING):
        download(second.as_uri(), dest, None)  # same URL, same file: reused
    assert "reusing" in caplog.text
    second.write_bytes(b"second, edited")
    download(second.as_uri(), dest, None)  # same URL, the local copy changed: read again
    assert dest.read_bytes() == b"second, edited"
