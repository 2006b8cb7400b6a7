"""The VOC-layout reader: values read back, and every kind of bad input named in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.data.dataset import VOCLayoutDataset, read_id_list, validate_id
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_label_png


def test_reads_images_masks_labels(tiny_voc: Path) -> None:
    ds = VOCLayoutDataset(tiny_voc)
    assert ds.classes == ["background", "cat", "dog"]
    assert ds.ids("train") == ["a_1", "b_2"]
    s = ds.sample("c_3")
    assert s.image.dtype == np.uint8 and s.image.shape == (12, 16, 3)
    assert s.mask is not None and s.mask.shape == (12, 16)
    assert set(np.unique(s.mask)) == {0, 1, 2, 255}
    np.testing.assert_array_equal(s.labels, [1.0, 1.0])
    np.testing.assert_array_equal(ds.label_vector("b_2"), [0.0, 1.0])


def test_dataset_yaml_points_elsewhere(tiny_voc: Path, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    meta.mkdir()
    for name in ["labels.tsv", "classes.txt"]:
        (meta / name).write_text((tiny_voc / name).read_text())
    (meta / "ImageSets").symlink_to(tiny_voc / "ImageSets")
    (meta / "dataset.yaml").write_text(f"images: {tiny_voc / 'JPEGImages'}\nmasks: {tiny_voc / 'SegmentationClass'}\n")
    ds = VOCLayoutDataset(meta)
    np.testing.assert_array_equal(ds.mask("a_1"), VOCLayoutDataset(tiny_voc).mask("a_1"))


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "..", ".hidden", "", "a b"])
def test_bad_ids_rejected(bad: str) -> None:
    with pytest.raises(InputError, match="invalid image id"):
        validate_id(bad, "list.txt")


def test_list_with_traversal_id_names_the_list(tiny_voc: Path) -> None:
    path = tiny_voc / "ImageSets/Segmentation/train.txt"
    path.write_text("a_1\n../../etc/passwd\n")
    with pytest.raises(InputError) as err:
        VOCLayoutDataset(tiny_voc).ids("train")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="split list is empty"):
        read_id_list(path)


def test_missing_labels_for_listed_id(tiny_voc: Path) -> None:
    (tiny_voc / "ImageSets/Segmentation/train.txt").write_text("a_1\nzz_9\n")
    with pytest.raises(InputError, match="no labels for 1 ids of train.txt, e.g. 'zz_9'") as err:
        VOCLayoutDataset(tiny_voc).ids("train")
    assert str(tiny_voc / "labels.tsv") in str(err.value)


def test_missing_image(tiny_voc: Path) -> None:
    (tiny_voc / "JPEGImages/a_1.jpg").unlink()
    with pytest.raises(InputError, match="a_1.jpg: image file is missing"):
        VOCLayoutDataset(tiny_voc).image("a_1")


def test_corrupt_jpeg(tiny_voc: Path) -> None:
    path = tiny_voc / "JPEGImages/a_1.jpg"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="a_1.jpg: cannot decode image"):
        VOCLayoutDataset(tiny_voc).image("a_1")


def test_mask_value_out_of_range(tiny_voc: Path) -> None:
    mask = np.zeros((12, 16), np.uint8)
    mask[3, 3] = 7
    write_label_png(tiny_voc / "SegmentationClass/a_1.png", mask)
    with pytest.raises(InputError, match=r"a_1.png: mask values \[7\] outside 0..2 and 255"):
        VOCLayoutDataset(tiny_voc).mask("a_1")


def test_rgb_mask_rejected(tiny_voc: Path) -> None:
    Image.new("RGB", (16, 12)).save(tiny_voc / "SegmentationClass/a_1.png")
    with pytest.raises(InputError, match="single-channel"):
        VOCLayoutDataset(tiny_voc).mask("a_1")


def test_mask_size_mismatch(tiny_voc: Path) -> None:
    write_label_png(tiny_voc / "SegmentationClass/a_1.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(InputError, match="differs from image size"):
        VOCLayoutDataset(tiny_voc).sample("a_1")


def test_unknown_class_in_labels(tiny_voc: Path) -> None:
    (tiny_voc / "labels.tsv").write_text("image_id\tclasses\na_1\tcat horse\n")
    with pytest.raises(InputError, match=r"labels.tsv:2: unknown class names \['horse'\]"):
        VOCLayoutDataset(tiny_voc).label_vector("a_1")


def test_labels_without_header(tiny_voc: Path) -> None:
    (tiny_voc / "labels.tsv").write_text("a_1\tcat\n")
    with pytest.raises(InputError, match="header"):
        VOCLayoutDataset(tiny_voc).ids("train")


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


def test_non_utf8_labels_and_classes(tiny_voc: Path) -> None:
    for name in ("labels.tsv", "classes.txt"):
        path = tiny_voc / name
        good = path.read_bytes()
        path.write_bytes(good.replace(b"cat", "chât".encode("latin-1")))
        with pytest.raises(InputError) as err:
            VOCLayoutDataset(tiny_voc).ids("train")
        assert "not UTF-8" in _one_line(err, path)
        path.write_bytes(good)


@pytest.mark.parametrize(
    "text, key",
    [
        ("images: 5\n", "images"),
        ("masks: [a, b]\n", "masks"),
        ("max_pixels: big\n", "max_pixels"),
        ("max_pixels: 0\n", "max_pixels"),
        ("max_pixels: true\n", "max_pixels"),
        ("name: {a: 1}\n", "name"),
    ],
)
def test_dataset_yaml_wrong_types(tiny_voc: Path, text: str, key: str) -> None:
    (tiny_voc / "dataset.yaml").write_text(text)
    with pytest.raises(InputError) as err:
        VOCLayoutDataset(tiny_voc)
    assert key in _one_line(err, tiny_voc / "dataset.yaml")


def test_duplicate_id_in_split_list(tiny_voc: Path) -> None:
    path = tiny_voc / "ImageSets/Segmentation/train.txt"
    path.write_text("a_1\nb_2\n\na_1\n")
    with pytest.raises(InputError) as err:
        VOCLayoutDataset(tiny_voc).ids("train")
    msg = _one_line(err, path)
    assert msg.startswith(f"{path}:4") and "'a_1'" in msg and "line 2" not in msg and "line 1" in msg


def test_max_pixels_from_dataset_yaml(tiny_voc: Path) -> None:
    """Images are 16×12 = 192 pixels: a cap of 192 reads them, 191 refuses them in one line naming the key."""
    (tiny_voc / "dataset.yaml").write_text("name: tiny\nmax_pixels: 192\n")
    assert VOCLayoutDataset(tiny_voc).image("a_1").shape == (12, 16, 3)
    (tiny_voc / "dataset.yaml").write_text("name: tiny\nmax_pixels: 191\n")
    ds = VOCLayoutDataset(tiny_voc)
    with pytest.raises(InputError) as err:
        ds.sample("a_1")
    msg = _one_line(err, ds.image_path("a_1"))
    assert "16×12 = 192 pixels, above max_pixels 191" in msg
    assert f"datasets.{tiny_voc.name}.max_pixels" in msg


def test_max_pixels_default_applies_without_dataset_yaml(tiny_voc: Path, monkeypatch) -> None:
    import wsss.data.dataset as dataset_module
    from wsss.runtime.io import DEFAULT_MAX_PIXELS

    (tiny_voc / "dataset.yaml").unlink(missing_ok=True)
    assert VOCLayoutDataset(tiny_voc).max_pixels == DEFAULT_MAX_PIXELS == 2048 * 2048
    monkeypatch.setattr(dataset_module, "DEFAULT_MAX_PIXELS", 100)
    with pytest.raises(InputError, match="above max_pixels 100"):
        VOCLayoutDataset(tiny_voc).image("a_1")
