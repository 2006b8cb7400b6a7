"""VOC preparer: XML → image-level labels (checked against the packaged cls_labels.tsv), in-place preparation
of a tiny VOC-layout root, and the stage script's error path."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsss.data.dataset import VOCLayoutDataset, format_labels_tsv, read_labels_tsv
from wsss.data.voc import (
    DEFAULT_LISTS_DIR,
    VOC_CLASSES,
    build_labels,
    cross_check,
    labels_from_xml,
    prepare_voc,
    read_reference_labels,
)
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_jpeg, write_label_png

REPO = Path(__file__).resolve().parents[1]

# (id, class names as they appear in the XML objects, split); labels are those of the packaged cls_labels.tsv.
TINY = [
    ("2007_000032", ["aeroplane", "aeroplane", "person", "person"], "train"),
    ("2007_000039", ["tvmonitor"], "train"),
    ("2007_000063", ["dog", "chair"], "train"),
    ("2007_000033", ["aeroplane", "aeroplane", "aeroplane"], "val"),
    ("2007_000042", ["train", "train"], "val"),
]


def voc_xml(image_id: str, objects: list[str | dict]) -> str:
    """A VOC-style annotation. An object is a class name or a dict with name/difficult/truncated/parts."""
    body = []
    for obj in objects:
        obj = {"name": obj} if isinstance(obj, str) else obj
        parts = "".join(
            f"<part><name>{p}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>"
            for p in obj.get("parts", [])
        )
        body.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{obj.get('truncated', 0)}</truncated><difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>{parts}</object>"
        )
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
        f"<size><width>12</width><height>8</height><depth>3</depth></size><segmented>1</segmented>"
        + "".join(body)
        + "</annotation>\n"
    )


def make_voc_root(root: Path, entries=TINY, masks: bool = True) -> dict[str, np.ndarray]:
    """A tiny VOC2012 folder: 12×8 JPEGs, XMLs, SegmentationClassAug masks; returns {id: mask}."""
    written = {}
    for n, (image_id, objects, _) in enumerate(entries):
        rgb = np.full((8, 12, 3), 40 * n, dtype=np.uint8)
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", rgb)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objects))
        mask = np.zeros((8, 12), dtype=np.uint8)
        mask[2:6, 3:9] = VOC_CLASSES.index(objects[0]) + 1
        mask[0, :] = 255
        written[image_id] = mask
        if masks:
            write_label_png(root / "SegmentationClassAug" / f"{image_id}.png", mask)
    return written


def make_lists(lists: Path, entries=TINY) -> Path:
    """Tiny split lists (train, val, train_aug = train) plus the packaged reference labels."""
    lists.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i, _, s in entries if s == split))
    (lists / "train_aug.txt").write_text((lists / "train.txt").read_text())
    (lists / "cls_labels.tsv").write_text((DEFAULT_LISTS_DIR / "cls_labels.tsv").read_text())
    return lists


def packaged_rows() -> dict[str, str]:
    lines = (DEFAULT_LISTS_DIR / "cls_labels.tsv").read_text().splitlines()[1:]
    return {line.split("\t")[0]: line for line in lines}


def test_voc_classes_match_packaged_labels():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    ref = read_reference_labels(DEFAULT_LISTS_DIR / "cls_labels.tsv")
    assert len(ref) == 12031
    # every packaged row lists its names in VOC order, without duplicates
    for names in ref.values():
        idx = [VOC_CLASSES.index(n) for n in names]
        assert idx == sorted(set(idx))


def test_labels_from_xml_counts_objects_not_parts(tmp_path):
    xml = tmp_path / "x.xml"
    xml.write_text(
        voc_xml(
            "x",
            [
                {"name": "person", "truncated": 1, "parts": ["head", "hand", "horse"]},  # part names never count
                {"name": "dog", "difficult": 1},  # difficult objects count
                "dog",  # duplicate
                "unicorn",  # not a VOC class
                {"name": " aeroplane\n"},  # whitespace around the name
            ],
        )
    )
    assert labels_from_xml(xml) == ["aeroplane", "dog", "person"]


def test_labels_match_packaged_rows_exactly(tmp_path):
    rows = packaged_rows()
    for image_id, objects, _ in TINY:
        (tmp_path / f"{image_id}.xml").write_text(voc_xml(image_id, objects))
    labels = build_labels(tmp_path, [i for i, _, _ in TINY])
    text = format_labels_tsv(labels).splitlines()
    assert text[0] == "image_id\tclasses"
    assert sorted(text[1:]) == sorted(rows[i] for i, _, _ in TINY)
    assert labels["2007_000063"] == ["chair", "dog"]  # VOC order, not document order


def test_labels_from_xml_bad_files(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>dog</name></annotation>")
    with pytest.raises(InputError) as err:
        labels_from_xml(bad)
    assert str(bad) in str(err.value) and "malformed" in str(err.value)
    with pytest.raises(InputError) as err:
        build_labels(tmp_path, ["missing_id"])
    assert str(tmp_path / "missing_id.xml") in str(err.value)


def test_cross_check_reports_disagreements():
    ref = {"a": ("dog",), "b": ("cat", "person"), "c": ("bus",)}
    ours = {"a": ["dog"], "b": ["cat"], "d": ["car"]}
    assert cross_check(ours, ref) == ["b"]


def test_prepare_in_place_and_read(tmp_path, caplog):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    masks = make_voc_root(root)
    lists = make_lists(tmp_path / "lists")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        prepare_voc(out, {"root": str(root)}, lists)
    assert "agree" in caplog.text and "disagree" not in caplog.text

    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["images"] == str(root / "JPEGImages") and meta["masks"] == str(root / "SegmentationClassAug")
    assert not list(out.rglob("*.jpg")) and not list(out.rglob("*.png"))  # read in place, nothing copied
    assert (out / "classes.txt").read_text().split() == ["background", *VOC_CLASSES]

    rows = packaged_rows()
    labels_lines = (out / "labels.tsv").read_text().splitlines()
    assert labels_lines[1:] == sorted(rows[i] for i, _, _ in TINY)

    ds = VOCLayoutDataset(out)
    assert ds.ids("train") == ["2007_000032", "2007_000039", "2007_000063"]
    assert ds.ids("val") == ["2007_000033", "2007_000042"]
    assert ds.ids("train_aug") == ds.ids("train")
    sample = ds.sample("2007_000063")
    assert sample.image.shape == (8, 12, 3)
    np.testing.assert_array_equal(sample.mask, masks["2007_000063"])
    expected = np.zeros(20, dtype=np.float32)
    expected[[VOC_CLASSES.index("chair"), VOC_CLASSES.index("dog")]] = 1
    np.testing.assert_array_equal(sample.labels, expected)


def test_prepare_logs_disagreement_with_reference(tmp_path, caplog):
    root = tmp_path / "VOC2012"
    entries = [("2007_000032", ["aeroplane"], "train"), *TINY[1:]]  # the packaged row also has person
    make_voc_root(root, entries)
    lists = make_lists(tmp_path / "lists", entries)
    with caplog.at_level(logging.INFO):
        prepare_voc(tmp_path / "out", {"root": str(root)}, lists)
    assert "labels of 1 of 5 ids disagree" in caplog.text
    labels = read_labels_tsv(tmp_path / "out" / "labels.tsv", ["background", *VOC_CLASSES])
    assert labels["2007_000032"] == ("aeroplane",)  # the XML wins; the reference only warns


def test_prepare_missing_files_fail_loudly(tmp_path, caplog):
    root = tmp_path / "VOC2012"
    make_voc_root(root)
    lists = make_lists(tmp_path / "lists")
    out = tmp_path / "out"

    (root / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(InputError) as err:
        prepare_voc(out, {"root": str(root)}, lists)
    assert str(root / "JPEGImages" / "2007_000039.jpg") in str(err.value)
    assert not (out / "labels.tsv").exists() and not (out / "dataset.yaml").exists()

    make_voc_root(root)
    (root / "Annotations" / "2007_000042.xml").unlink()
    with pytest.raises(InputError) as err:
        prepare_voc(out, {"root": str(root)}, lists)
    assert str(root / "Annotations" / "2007_000042.xml") in str(err.value)

    make_voc_root(root)
    (root / "SegmentationClassAug" / "2007_000033.png").unlink()  # val needs masks
    with pytest.raises(InputError) as err:
        prepare_voc(out, {"root": str(root)}, lists)
    assert str(root / "SegmentationClassAug" / "2007_000033.png") in str(err.value)
    with caplog.at_level(logging.WARNING):  # not required → warning only, dataset complete
        prepare_voc(out, {"root": str(root), "require_masks": ["train"]}, lists)
    assert "1 of 2 ids of split 'val' have no mask" in caplog.text
    assert (out / "labels.tsv").exists()


def test_prepare_bad_root_and_params(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    make_voc_root(root)
    lists = make_lists(tmp_path / "lists")
    with pytest.raises(InputError) as err:  # the VOCdevkit folder instead of VOC2012: named, with a hint
        prepare_voc(tmp_path / "out", {"root": str(tmp_path / "VOCdevkit")}, lists)
    assert str(tmp_path / "VOCdevkit" / "JPEGImages") in str(err.value) and str(root) in str(err.value)
    with pytest.raises(InputError) as err:  # no silent fall back to SegmentationClass
        prepare_voc(tmp_path / "out", {"root": str(root), "mask_dir": "SegmentationClass"}, lists)
    assert str(root / "SegmentationClass") in str(err.value)
    with pytest.raises(InputError, match="unknown voc params"):
        prepare_voc(tmp_path / "out", {"root": str(root), "spilts": ["train"]}, lists)
    with pytest.raises(InputError, match="params.splits"):
        prepare_voc(tmp_path / "out", {"root": str(root), "splits": "train"}, lists)
    with pytest.raises(InputError) as err:
        prepare_voc(tmp_path / "out", {"root": str(root), "splits": ["test"]}, lists)
    assert str(lists / "test.txt") in str(err.value)


def test_stage_script_bad_root(tmp_path):
    bad = tmp_path / "no_voc_here"
    bad.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "prepare_dataset.py"),
            "--kind",
            "voc",
            "--params",
            f'{{"root": "{bad}"}}',
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad / "JPEGImages") in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "labels.tsv").exists()
