"""Downloads and extraction against a local HTTP server: verified, cached, atomic, safe against path traversal."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import logging
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
from wsss.errors import InputError
from wsss.io import write_jpeg, write_label_png

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

    def do_GET(self):  # noqa: N802 (http.server API)
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
    voc_tar, aug_zip = build_archives(tmp_path_factory.mktemp("src"), root)
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
    params = {"voc_url": f"{base}/VOCtrainval_tiny.tar", "voc_md5": md5sum(root / "VOCtrainval_tiny.tar"),
              "aug_url": f"{base}/SegmentationClassAug.zip?dl=1", "aug_md5": md5sum(root / "SegmentationClassAug.zip")}
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
        download(f"{base}/nope.tar", tmp_path / "nope.tar", None)
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


@pytest.mark.parametrize("name, attrs", [
    ("../evil", {}),
    ("good/../../evil", {}),
    ("/tmp/evil_abs_wsss_test", {}),
    ("good/link", {"type": tarfile.SYMTYPE, "linkname": "../../evil"}),
])
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
    assert sorted(p.name for p in dest.iterdir()) == ["file.txt", "other.txt"]
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
        assert sorted(p.name for p in dest.iterdir()) == ["file.txt", "other.txt"]  # untouched
    with pytest.raises(InputError, match="no folder"):
        extract(good, tmp_path / "out2", "VOCdevkit/VOC2012")
    assert not (tmp_path / "out2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.zip", "good.tar", "out", "truncated.tar.gz"]
