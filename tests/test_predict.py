"""Predictions on folders of new images and the VOC test-server archive: library, stages, bad input."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_stage_inline, schema_section
from PIL import Image

from wsss.artifacts.logits import labels_from_logits
from wsss.data.dataset import VOCLayoutDataset, format_labels_tsv
from wsss.outputs.predict import SUBMISSION_DIR, list_images, merge_shards, overlay, write_submission
from wsss.pipeline.crf import crf_refine
from wsss.pipeline.segment import image_logits, load_segmenter
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_label_png, read_rgb, voc_palette, write_jpeg, write_label_png
from wsss.runtime.stage_config import STAGES

SEG = {
    "backbone": 18,
    "pretrained": "none",
    "pretrained_sha256": None,
    "norm": "batch",
    "style": "torchvision",
    "aspp_rates": [6, 12],
    "msc_scales": [0.5, 0.75],
    "label_source": "gt",
    "batch_size": 2,
    "accumulate": 1,
    "iterations": 3,
    "optimizer": "adamw",
    "lr": 1e-3,
    "lr_mult_weight": 10,
    "lr_mult_bias": 20,
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "poly_power": 0.9,
    "crop": 24,
    "scales": [0.75, 1.0, 1.25],
    "scale_sampling": "discrete",
    "flip": True,
    "loss_reduction": "sum",
    "amp": False,
    "seed": 0,
    "checkpoint_every": 2,
    "workers": 0,
    "test_scales": [1.0],
    "test_flip": False,
    "predict_crf": True,
    "crf": {**schema_section("seg")["crf"], "iters": 3},
}


def _params(stage: str, seg: dict) -> str:
    """The keys of ``seg`` that ``stage``'s typed view reads (wsss.runtime.stage_config), as --params JSON."""
    return json.dumps({k: seg[k] for k in STAGES[stage].keys_of()})


_stage = run_stage_inline


def _one_line_error(stderr: str, *fragments: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.rstrip().splitlines()[-1] == errors[0], stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A VOC-layout root (background/cat/dog; labelled train/val, an unlabelled ``test`` split of other sizes) and
    a DeepLab trained on it for a few steps: (root, model.pt)."""
    root = tmp_path_factory.mktemp("predict") / "voc"
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    labels = {}
    for image_id, cls, size in [("a_1", [1], (24, 32)), ("b_2", [2], (28, 20)), ("c_3", [1, 2], (24, 30))]:
        mask = np.zeros(size, np.uint8)
        image = rng.integers(0, 80, (*size, 3), dtype=np.uint8)
        for j, c in enumerate(cls):
            mask[4:16, 2 + 9 * j : 10 + 9 * j] = c
            image[mask == c] = [200, 40, 40] if c == 1 else [40, 40, 200]
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", image)
        labels[image_id] = [["cat", "dog"][c - 1] for c in cls]
    for image_id, size in [("t_1", (19, 27)), ("t_2", (33, 22)), ("t_3", (16, 16))]:
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a_1\nb_2\nc_3\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c_3\n")
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("t_1\nt_2\nt_3\n")  # no image labels
    (root / "labels.tsv").write_text(format_labels_tsv(labels))
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "dataset.yaml").write_text("name: tiny\n")
    out = root.parent / "deeplab"
    assert (
        _stage(
            "train_seg",
            "--params",
            _params("train_seg", SEG),
            "--dataset",
            str(root),
            "--split",
            "train",
            "--device",
            "cpu",
            "--out-dir",
            str(out),
        )
        == 0
    )
    return root, out / "model.pt"


def _image_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """Mixed formats, modes and sizes: RGB JPEG (.JPG), grey PNG, RGBA PNG, palette PNG (.Png), RGB .jpeg;
    plus files that are not images. Returns {stem: (H, W)}."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    sizes = {"rgb": (21, 35), "grey": (30, 17), "rgba": (26, 26), "pal": (15, 40), "photo": (40, 31)}
    Image.fromarray(rng.integers(0, 256, (*sizes["rgb"], 3), dtype=np.uint8)).save(folder / "rgb.JPG", "JPEG")
    Image.fromarray(rng.integers(0, 256, sizes["grey"], dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (*sizes["rgba"], 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    pal = Image.fromarray(rng.integers(0, 8, sizes["pal"], dtype=np.uint8), "P")
    pal.putpalette(voc_palette())
    pal.save(folder / "pal.Png")
    Image.fromarray(rng.integers(0, 256, (*sizes["photo"], 3), dtype=np.uint8)).save(folder / "photo.jpeg", "JPEG")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "sub.png").mkdir()  # a folder named like an image is skipped
    return sizes


def test_list_images_any_case_sorted_and_errors(tmp_path: Path) -> None:
    sizes = _image_folder(tmp_path / "imgs")
    assert [p.name for p in list_images(tmp_path / "imgs")] == [
        "grey.png",
        "pal.Png",
        "photo.jpeg",
        "rgb.JPG",
        "rgba.png",
    ]
    assert {p.stem for p in list_images(tmp_path / "imgs")} == set(sizes)
    (tmp_path / "imgs" / "grey.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="grey.jpg and grey.png share the stem 'grey'"):
        list_images(tmp_path / "imgs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.gif").write_bytes(b"")
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="image folder is missing"):
        list_images(tmp_path / "nowhere")


def test_overlay_keeps_background_and_blends_classes() -> None:
    rgb = np.full((4, 5, 3), 100, np.uint8)
    labels = np.zeros((4, 5), np.uint8)
    labels[1, 2], labels[3, 4] = 1, 2
    out = overlay(rgb, labels, alpha=0.5)
    pal = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    assert (out[labels == 0] == 100).all()
    np.testing.assert_array_equal(out[1, 2], np.rint((100 + pal[1].astype(float)) / 2))
    np.testing.assert_array_equal(out[3, 4], np.rint((100 + pal[2].astype(float)) / 2))


@pytest.mark.parametrize("use_crf", [False, True])
def test_predict_stage_shards_match_the_library(trained, tmp_path: Path, use_crf: bool) -> None:
    """Two shards split the folder disjointly; each image gets a palette PNG at its own size and an overlay; the
    labels are exactly the test-time inference (+ the same CRF as the crf rule), computed here independently."""
    root, model_path = trained
    sizes = _image_folder(tmp_path / "imgs")
    params = dict(SEG, predict_crf=use_crf, test_scales=[1.0, 0.75], test_flip=True)
    shards = [tmp_path / f"shard_{k}" for k in range(2)]
    for k, shard in enumerate(shards):
        assert (
            _stage(
                "predict",
                "--params",
                _params("predict", params),
                "--images",
                str(tmp_path / "imgs"),
                "--dataset",
                str(root),
                "--model",
                str(model_path),
                "--shard",
                str(k),
                "--shards",
                "2",
                "--workers",
                "2" if use_crf else "1",
                "--device",
                "cpu",
                "--out",
                str(shard),
            )
            == 0
        )
    names = [sorted(p.name for p in s.iterdir() if p.name != ".wsss-output") for s in shards]
    assert names[0] == [
        "grey.png",
        "grey_overlay.jpg",
        "photo.png",
        "photo_overlay.jpg",
        "rgba.png",
        "rgba_overlay.jpg",
    ]
    assert names[1] == ["pal.png", "pal_overlay.jpg", "rgb.png", "rgb_overlay.jpg"]
    assert _stage("predict_merge", "--shards", *map(str, shards), "--out", str(tmp_path / "merged")) == 0
    merged = tmp_path / "merged"
    assert sorted(p.name for p in merged.iterdir() if p.name != ".wsss-output") == sorted(names[0] + names[1])

    model = load_segmenter(params, 3, model_path)
    found = set()
    for path in list_images(tmp_path / "imgs"):
        with Image.open(merged / f"{path.stem}.png") as img:
            assert img.mode == "P" and img.getpalette()[:9] == voc_palette()[:9]
        labels = read_label_png(merged / f"{path.stem}.png", 3)
        assert labels.shape == sizes[path.stem]
        rgb = read_rgb(path)
        logits = image_logits(model, rgb, params)
        expected = crf_refine(rgb, logits, params["crf"]) if use_crf else labels_from_logits(logits, rgb.shape[:2])
        np.testing.assert_array_equal(labels, expected)
        found |= set(np.unique(labels).tolist())
        with Image.open(merged / f"{path.stem}_overlay.jpg") as img:
            assert img.mode == "RGB" and img.size == (sizes[path.stem][1], sizes[path.stem][0])
    assert found <= {0, 1, 2}


def test_predict_unreadable_image_is_one_line_error_and_no_output(trained, tmp_path: Path, capsys) -> None:
    root, model_path = trained
    _image_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "photo.jpeg"
    bad.write_bytes(bad.read_bytes()[:40])
    out = tmp_path / "shard_0"
    code = _stage(
        "predict",
        "--params",
        _params("predict", SEG),
        "--images",
        str(tmp_path / "imgs"),
        "--dataset",
        str(root),
        "--model",
        str(model_path),
        "--shard",
        "0",
        "--shards",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert code == 2
    _one_line_error(capsys.readouterr().err, str(bad), "cannot decode image")
    assert not out.exists() and not list(tmp_path.glob(".shard_0*"))


def test_predict_with_weights_of_another_class_count_is_one_line_error(trained, tmp_path: Path, capsys) -> None:
    root, model_path = trained
    _image_folder(tmp_path / "imgs")
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    try:
        code = _stage(
            "predict",
            "--params",
            _params("predict", SEG),
            "--images",
            str(tmp_path / "imgs"),
            "--dataset",
            str(root),
            "--model",
            str(model_path),
            "--shard",
            "0",
            "--shards",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        )
    finally:
        (root / "classes.txt").write_text("background\ncat\ndog\n")
    assert code == 2
    _one_line_error(capsys.readouterr().err, str(model_path), "4 classes")
    assert not (tmp_path / "out").exists()


def test_merge_rejects_a_file_in_two_shards(tmp_path: Path) -> None:
    for k in range(2):
        (tmp_path / f"s{k}").mkdir()
        (tmp_path / f"s{k}" / "x.png").write_bytes(b"1")
        (tmp_path / f"s{k}" / ".snakemake_timestamp").write_bytes(b"")  # hidden files are not predictions
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="also written by shard"):
        merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "out")


def test_voc_submission_of_an_unlabelled_test_split(trained, tmp_path: Path) -> None:
    """infer_seg + crf on the unlabelled test split, then the archive: the server's paths, one palette PNG per test
    id at the image's size, equal to the CRF labels; byte-identical when built again."""
    root, model_path = trained
    params = _params("infer_seg", SEG)
    crf_dirs = []
    for k in range(2):
        logits, crf = tmp_path / f"seg/shard_{k}", tmp_path / f"crf/shard_{k}"
        assert (
            _stage(
                "infer_seg",
                "--params",
                params,
                "--dataset",
                str(root),
                "--split",
                "test",
                "--shard",
                str(k),
                "--shards",
                "2",
                "--model",
                str(model_path),
                "--device",
                "cpu",
                "--out",
                str(logits),
            )
            == 0
        )
        assert (
            _stage(
                "crf",
                "--params",
                _params("crf", SEG),
                "--dataset",
                str(root),
                "--split",
                "test",
                "--shard",
                str(k),
                "--shards",
                "2",
                "--logits",
                str(logits),
                "--out",
                str(crf),
            )
            == 0
        )
        crf_dirs.append(str(crf))
    archive = tmp_path / "voc_test_submission.tar.gz"
    assert (
        _stage("voc_submission", "--dataset", str(root), "--split", "test", "--crf", *crf_dirs, "--out", str(archive))
        == 0
    )
    data = VOCLayoutDataset(root)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = sorted(n for n, m in members.items() if m.isfile())
        assert files == [f"{SUBMISSION_DIR}/t_{k}.png" for k in (1, 2, 3)]
        assert all(m.mtime == 0 and m.uid == 0 for m in members.values())
        for image_id in ["t_1", "t_2", "t_3"]:
            blob = tar.extractfile(f"{SUBMISSION_DIR}/{image_id}.png").read()
            with Image.open(io.BytesIO(blob)) as img:
                assert img.mode == "P"
                labels = np.array(img)
            assert labels.shape == data.image(image_id).shape[:2]
            crf_png = next(Path(d) / f"{image_id}.png" for d in crf_dirs if (Path(d) / f"{image_id}.png").exists())
            np.testing.assert_array_equal(labels, read_label_png(crf_png, 3))
    first = archive.read_bytes()
    assert (
        _stage("voc_submission", "--dataset", str(root), "--split", "test", "--crf", *crf_dirs, "--out", str(archive))
        == 0
    )
    assert archive.read_bytes() == first


def test_submission_rejects_ignore_pixels_and_missing_labels(tmp_path: Path) -> None:
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0] = 255
    write_label_png(tmp_path / "a.png", labels)
    with pytest.raises(InputError, match="ignore"):
        write_submission(tmp_path / "sub.tar.gz", ["a"], {"a": tmp_path / "a.png"}, 3)
    labels[0, 0] = 7
    write_label_png(tmp_path / "a.png", labels)
    with pytest.raises(InputError, match=r"mask values \[7\]"):
        write_submission(tmp_path / "sub.tar.gz", ["a"], {"a": tmp_path / "a.png"}, 3)
    assert not (tmp_path / "sub.tar.gz").exists() and not list(tmp_path.glob(".sub*"))


def test_trained_fixture_gives_varied_logits(trained) -> None:
    """The fixture model is not degenerate (so equality checks above compare real predictions)."""
    root, model_path = trained
    model = load_segmenter(SEG, 3, model_path)
    rgb = read_rgb(root / "JPEGImages" / "c_3.jpg")
    logits = image_logits(model, rgb, SEG)
    assert logits.shape == (3, *model.base.logit_size(*rgb.shape[:2]))
    assert torch.isfinite(logits).all() and float(logits.std()) > 0


@pytest.mark.slow
def test_predict_export_and_submission_targets_in_the_tiny_dag(tiny_dag: Path, tmp_path: Path) -> None:
    """On a copy of the session's tiny DAG (its trained DeepLab): only the new jobs run; one PNG per image at the
    image's size plus its overlay, progress bars in the logs; model.ts/json; the submission of a split named test;
    an unreadable image fails with one line and leaves no prediction folder."""
    from helpers import planned_jobs, snakemake, tiny_dag_config, write_config

    work = tmp_path / "work"
    shutil.copytree(tiny_dag, work, symlinks=True)
    sizes = _image_folder(work / "new images")  # a space in the folder name
    synth = work / "resources/synth"
    test_ids = (synth / "ImageSets/Segmentation/val.txt").read_text().split()[:3]
    (synth / "ImageSets/Segmentation/test.txt").write_text("\n".join(test_ids) + "\n")
    config = tiny_dag_config()
    config["predict"] = {"new": "new images"}
    write_config(work, config)
    targets = ["results/tiny/predict/new", "results/tiny/deeplab/model.ts", "results/tiny/voc_test_submission.tar.gz"]
    proc = snakemake(work, "-n", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned_jobs(proc.stdout) == {
        "predict_shard": 2,
        "predict": 1,
        "export_model": 1,
        "infer_seg": 2,
        "crf": 2,
        "voc_submission": 1,
    }
    proc = snakemake(work, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = work / "results/tiny/predict/new"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{s}.png" for s in sizes] + [f"{s}_overlay.jpg" for s in sizes]
    )
    classes = (synth / "classes.txt").read_text().split()
    for stem, size in sizes.items():
        assert read_label_png(out / f"{stem}.png", len(classes)).shape == size
    assert not any((work / "results/tiny/predict_shards/new").glob("shard_*"))  # temp shards removed
    log = (work / "logs/tiny/predict/new_0.log").read_text()
    assert "predict: 100%" in log and "INFO done in " in log and "CRF True" in log
    assert json.loads((work / "results/tiny/deeplab/model.json").read_text())["classes"] == classes
    assert torch.jit.load(str(work / "results/tiny/deeplab/model.ts"))(torch.zeros(1, 3, 30, 41)).shape == (
        1,
        len(classes),
        30,
        41,
    )
    with tarfile.open(work / "results/tiny/voc_test_submission.tar.gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
            f"{SUBMISSION_DIR}/{i}.png" for i in test_ids
        )
    for name in ["predict/new_1", "predict/new", "export_model", "voc_submission"]:
        assert (work / f"benchmarks/tiny/{name}.tsv").exists(), name
    proc = snakemake(work, "-n", *targets)
    assert "Nothing to be done" in proc.stdout + proc.stderr

    _image_folder(work / "bad")
    (work / "bad" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config["predict"]["bad"] = "bad"
    write_config(work, config)
    proc = snakemake(work, "results/tiny/predict/bad")
    assert proc.returncode != 0
    logs = [(work / f"logs/tiny/predict/bad_{k}.log").read_text() for k in range(2)]
    failed = [text for text in logs if "error: " in text]
    assert len(failed) == 1
    assert failed[0].rstrip().splitlines()[-1].startswith("error: bad/zz.png: cannot decode image")
    assert not (work / "results/tiny/predict/bad").exists()


def test_hidden_files_are_skipped_with_a_count(tmp_path: Path, caplog) -> None:
    """Issue 18: the shard predicted ``.x.png`` and the merge skipped it (exit 0 both), and a macOS ``._a.jpg``
    stopped predict. One rule: hidden files are skipped by every reader, logged with a count. Planted bug:
    iterdir without the hidden rule in list_images."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "a.jpg")
    Image.new("RGB", (4, 4)).save(folder / ".x.png")
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07")
    with caplog.at_level("INFO"):
        assert [p.name for p in list_images(folder)] == ["a.jpg"]
    assert any("skipped 2 hidden file(s)" in r.getMessage() for r in caplog.records)


def _two_stems(folder: Path) -> None:
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "x.jpg")
    Image.new("RGB", (4, 4)).save(folder / "x.png")


def _one_image(folder: Path, size: tuple[int, int] = (40, 31), data: bytes | None = None) -> None:
    folder.mkdir()
    if data is None:
        Image.new("RGB", size).save(folder / "big.png")
    else:
        (folder / "bad.jpg").write_bytes(data)


# The predict surface's bad inputs, one row each: (make the image folder `imgs` under tmp_path, --out relative to
# tmp_path, dataset.yaml's max_pixels, the path the error names (relative), the one-line problem). Issue 18 added
# the max_pixels row (predict read images of any size) and the overlap row.
BAD_PREDICT = {
    "missing folder": (lambda f: None, "out", None, "imgs", "image folder is missing"),
    "no images": (lambda f: f.mkdir(), "out", None, "imgs", "no images (*.jpg, *.jpeg, *.png, any case)"),
    "two images share a stem": (_two_stems, "out", None, "imgs", "images x.jpg and x.png share the stem 'x'"),
    "undecodable image": (
        lambda f: _one_image(f, data=b"not a jpeg"),
        "out",
        None,
        "imgs/bad.jpg",
        "cannot decode image",
    ),
    "image above max_pixels": (
        _one_image,
        "out",
        500,
        "imgs/big.png",
        "image is 40×31 = 1240 pixels, above max_pixels 500; downscale the image or raise datasets.voc.max_pixels",
    ),
    "output inside the image folder": (_one_image, "imgs/out", None, "imgs", "image folder overlaps the output folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICT))
def test_bad_predict_input_is_one_line(trained, tmp_path: Path, capsys, case: str) -> None:
    root, model_path = trained
    make, out, max_pixels, where, problem = BAD_PREDICT[case]
    dataset = tmp_path / "voc"
    shutil.copytree(root, dataset)
    if max_pixels is not None:
        (dataset / "dataset.yaml").write_text(f"name: tiny\nmax_pixels: {max_pixels}\n")
    make(tmp_path / "imgs")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = _stage(
        "predict",
        "--params",
        _params("predict", dict(SEG, predict_crf=False)),
        "--images",
        str(tmp_path / "imgs"),
        "--dataset",
        str(dataset),
        "--model",
        str(model_path),
        "--shard",
        "0",
        "--shards",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / out),
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / where}: {problem}"), errors
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no output, no temp
