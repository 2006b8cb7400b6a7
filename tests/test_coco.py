"""COCO 2014 preparer on a tiny COCO-format root written by the tests (no real COCO needed)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from wsss.data.coco import Instance, class_table, prepare_coco, segmentation_to_rle, semantic_mask
from wsss.data.dataset import VOCLayoutDataset
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_label_png

REPO = Path(__file__).resolve().parents[1]

# COCO category ids 1, 3, 90 -> contiguous ids 1, 2, 3 (listed out of order in the JSON on purpose).
CATEGORIES = [
    {"id": 90, "name": "teddy bear", "supercategory": "indoor"},
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "traffic light", "supercategory": "outdoor"},
]
PERSON, LIGHT, TEDDY = 1, 2, 3
T1, T2, T3 = (f"COCO_train2014_{i:012d}" for i in (1, 2, 3))
V4, V5, V6 = (f"COCO_val2014_{i:012d}" for i in (4, 5, 6))


def box(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """An axis-aligned polygon; pycocotools rasterises it to exactly rows y0..y1-1, cols x0..x1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major runs, starting with zeros), as crowd annotations store it."""
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"counts": runs, "size": list(m.shape)}


def compressed_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"counts": rle["counts"].decode(), "size": list(m.shape)}


def ann(aid: int, image_id: int, cat: int, segmentation, iscrowd: int = 0) -> dict:
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": segmentation,
        "iscrowd": iscrowd,
        "area": 0.0,
        "bbox": [0, 0, 1, 1],
    }


def coco_json() -> dict[str, dict]:
    """The two subsets. Expected masks are spelled out in the tests below."""
    train = {
        "images": [
            {"id": 1, "file_name": f"{T1}.jpg", "height": 30, "width": 40},
            {"id": 2, "file_name": f"{T2}.jpg", "height": 24, "width": 32},
            {"id": 3, "file_name": f"{T3}.jpg", "height": 16, "width": 16},
        ],
        "annotations": [
            # image 1: a small teddy on a large person (teddy wins), a crowd of lights over the person's corner
            ann(11, 1, 90, [box(10, 10, 16, 16)]),
            ann(10, 1, 1, [box(0, 0, 20, 20)]),
            ann(12, 1, 3, uncompressed_rle(box_mask(30, 40, 15, 15, 40, 30)), iscrowd=1),
            # image 2: equal areas overlap (higher annotation id 21 wins); a 9-pixel teddy; a two-part person
            # with a degenerate 2-point polygon that must be skipped
            ann(21, 2, 3, [box(5, 0, 15, 10)]),
            ann(20, 2, 1, [box(0, 0, 10, 10)]),
            ann(22, 2, 90, [box(20, 15, 23, 18)]),
            ann(23, 2, 1, [box(25, 0, 30, 5), [1, 1, 2, 2]]),
            # image 3: only a crowd -> dropped
            ann(24, 3, 1, compressed_rle(box_mask(16, 16, 0, 0, 8, 8)), iscrowd=1),
        ],
        "categories": CATEGORIES,
    }
    val = {
        "images": [
            {"id": 4, "file_name": f"{V4}.jpg", "height": 20, "width": 20},
            {"id": 5, "file_name": f"{V5}.jpg", "height": 20, "width": 20},
            {"id": 6, "file_name": f"{V6}.jpg", "height": 20, "width": 20},
        ],
        "annotations": [
            ann(30, 4, 90, compressed_rle(box_mask(20, 20, 5, 5, 15, 15))),  # non-crowd compressed RLE
            ann(31, 6, 1, [box(0, 0, 2, 2)]),  # 4 pixels: dropped by min_area=10
        ],  # image 5 has no annotation -> dropped
        "categories": copy.deepcopy(CATEGORIES),
    }
    return {"train2014": train, "val2014": val}


def write_root(root: Path, data: dict[str, dict] | None = None) -> Path:
    data = coco_json() if data is None else data
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for subset, content in data.items():
        (root / subset).mkdir(exist_ok=True)
        for img in content["images"]:
            pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / subset / img["file_name"], format="JPEG")
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(content))
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return write_root(tmp_path_factory.mktemp("coco_root"))


@pytest.fixture(scope="module")
def prepared(coco_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "coco"
    prepare_coco(coco_root, out)
    return out


def expected_masks(min_area: int = 0) -> dict[str, np.ndarray]:
    m1 = np.zeros((30, 40), np.uint8)
    m1[15:30, 15:40] = 255  # crowd
    m1[0:20, 0:20] = PERSON  # person covers part of the crowd: its pixels stay person
    m1[10:16, 10:16] = TEDDY  # smaller instance on top of the larger one wins
    m2 = np.zeros((24, 32), np.uint8)
    m2[0:10, 0:10] = PERSON
    m2[0:10, 5:15] = LIGHT  # equal area 100: annotation 21 > 20 wins the overlap
    m2[15:18, 20:23] = TEDDY if min_area <= 9 else 255
    m2[0:5, 25:30] = PERSON
    m4 = np.zeros((20, 20), np.uint8)
    m4[5:15, 5:15] = TEDDY
    masks = {T1: m1, T2: m2, V4: m4}
    if min_area <= 4:
        m6 = np.zeros((20, 20), np.uint8)
        m6[0:2, 0:2] = PERSON
        masks[V6] = m6
    return masks


def test_class_table_sorts_category_ids_and_joins_names():
    mapping, names = class_table(CATEGORIES, "x.json")
    assert mapping == {1: 1, 3: 2, 90: 3}
    assert names == ["background", "person", "traffic_light", "teddy_bear"]
    with pytest.raises(InputError, match="not unique"):
        class_table(CATEGORIES + [{"id": 7, "name": "traffic  light"}], "x.json")
    with pytest.raises(InputError, match="duplicate category id"):
        class_table(CATEGORIES + [{"id": 3, "name": "car"}], "x.json")


def test_semantic_mask_rules_on_known_rles():
    h, w = 8, 8
    rle = lambda m: mask_utils.encode(np.asfortranarray(m))  # noqa: E731
    big = Instance(5, 1, False, rle(box_mask(h, w, 0, 0, 6, 6)))
    small = Instance(9, 2, False, rle(box_mask(h, w, 2, 2, 4, 4)))  # 4 px, inside big
    twin = Instance(3, 3, False, rle(box_mask(h, w, 1, 0, 7, 6)))  # same area as big, lower id
    crowd = Instance(7, 3, True, rle(box_mask(h, w, 4, 4, 8, 8)))
    for order in ([big, small, twin, crowd], [crowd, twin, small, big]):
        label, classes = semantic_mask(h, w, order)
        assert classes == (1, 2, 3)
        assert label[3, 3] == 2  # smallest on top
        assert label[1, 1] == 1  # big (id 5) beats twin (id 3) on equal area
        assert label[0, 6] == 3  # only twin
        assert label[5, 5] == 1 and label[7, 7] == 255 and label[7, 0] == 0
    label, classes = semantic_mask(h, w, [big, small, crowd], min_area=5)
    assert classes == (1,)
    assert label[3, 3] == 1  # small instance dropped, covered by big
    label, classes = semantic_mask(h, w, [small], min_area=5)
    assert classes == () and label[3, 3] == 255 and (label != 255).sum() == 60


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_segmentation_to_rle_validates():
    good = segmentation_to_rle(uncompressed_rle(box_mask(4, 5, 1, 1, 3, 3)), 4, 5, "f.json: annotation 1")
    assert mask_utils.decode(good).tolist() == box_mask(4, 5, 1, 1, 3, 3).tolist()
    with pytest.raises(InputError, match="adding up to 20"):
        segmentation_to_rle({"counts": [3, 2, 1], "size": [4, 5]}, 4, 5, "f.json")
    with pytest.raises(InputError, match="add up to 12"):
        segmentation_to_rle(
            {"counts": compressed_rle(box_mask(3, 4, 0, 0, 1, 1))["counts"], "size": [4, 5]}, 4, 5, "f.json"
        )
    with pytest.raises(InputError, match="differs from the image size"):
        segmentation_to_rle(uncompressed_rle(box_mask(5, 4, 1, 1, 3, 3)), 4, 5, "f.json")
    with pytest.raises(InputError, match="odd number"):
        segmentation_to_rle([[1, 2, 3, 4, 5, 6, 7]], 4, 5, "f.json")


def test_prepared_layout_masks_labels_and_lists(prepared, coco_root):
    ds = VOCLayoutDataset(prepared)
    assert (prepared / "classes.txt").read_text() == "background\nperson\ntraffic_light\nteddy_bear\n"
    assert ds.num_classes == 4
    assert ds.ids("train") == [T1, T2]
    assert ds.ids("val") == [V4, V6]
    assert (prepared / "labels.tsv").read_text() == (
        "image_id\tclasses\n"
        f"{T1}\tperson teddy_bear\n"
        f"{T2}\tperson traffic_light teddy_bear\n"
        f"{V4}\tteddy_bear\n"
        f"{V6}\tperson\n"
    )
    for image_id, want in expected_masks().items():
        got = read_label_png(prepared / "SegmentationClass" / f"{image_id}.png", 4)
        np.testing.assert_array_equal(got, want, err_msg=image_id)
        sample = ds.sample(image_id)
        assert sample.mask.shape == sample.image.shape[:2]
    assert ds.label_vector(T2).tolist() == [1.0, 1.0, 1.0]
    assert ds.label_vector(T1).tolist() == [1.0, 0.0, 1.0]
    link = prepared / "JPEGImages" / f"{T1}.jpg"
    assert link.is_symlink() and Path(os.readlink(link)) == Path(os.path.abspath(coco_root)) / "train2014" / f"{T1}.jpg"
    for dropped in (T3, V5):
        assert not (prepared / "SegmentationClass" / f"{dropped}.png").exists()
        assert not (prepared / "JPEGImages" / f"{dropped}.jpg").exists()


def test_min_area_drops_small_instances(coco_root, tmp_path):
    lists = prepare_coco(coco_root, tmp_path / "c", min_area=10)
    assert lists == {"train": [T1, T2], "val": [V4]}
    labels = (tmp_path / "c" / "labels.tsv").read_text().splitlines()
    assert f"{T2}\tperson traffic_light" in labels and not any(line.startswith(V6) for line in labels)
    for image_id, want in expected_masks(min_area=10).items():
        np.testing.assert_array_equal(read_label_png(tmp_path / "c" / "SegmentationClass" / f"{image_id}.png"), want)


def test_any_coco_format_files_by_subsets(coco_root, prepared, tmp_path):
    """COCO 2017 / annotation-tool exports: any JSON + image folder per split, paths relative to root (or to the
    working directory without root); the same dataset as the 2014 layout, under the splits' own names."""
    root = tmp_path / "export"
    (root / "imgs").mkdir(parents=True)
    for subset in ("train2014", "val2014"):
        for f in (coco_root / subset).iterdir():
            (root / "imgs" / f.name).write_bytes(f.read_bytes())
        (root / f"{subset}.json").write_text((coco_root / "annotations" / f"instances_{subset}.json").read_text())
    subsets = {
        "fit": {"images": "imgs", "annotations": "train2014.json"},
        "holdout": {"images": "imgs", "annotations": "val2014.json"},
    }
    lists = prepare_coco(root, tmp_path / "c", subsets=subsets)
    assert lists == {"fit": [T1, T2], "holdout": [V4, V6]}
    old, new = tree_bytes(prepared), tree_bytes(tmp_path / "c")
    for key in ("classes.txt", "labels.tsv", *(f"SegmentationClass/{i}.png" for i in (T1, T2, V4, V6))):
        assert new[key] == old[key], key
    cwd = os.getcwd()
    try:
        os.chdir(root)
        assert prepare_coco(None, tmp_path / "d", subsets=subsets) == lists
    finally:
        os.chdir(cwd)
    (root / "dup.json").write_text((root / "train2014.json").read_text())
    with pytest.raises(InputError, match="dup.json: image id .* also appears in another subset"):
        prepare_coco(root, tmp_path / "e", subsets={**subsets, "again": {"images": "imgs", "annotations": "dup.json"}})


def tree_bytes(root: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_deterministic_for_any_worker_count(prepared, coco_root, tmp_path):
    prepare_coco(coco_root, tmp_path / "w2", workers=2)
    assert tree_bytes(tmp_path / "w2") == tree_bytes(prepared)
    prepare_coco(coco_root, tmp_path / "w2", workers=1)  # rerun in place
    assert tree_bytes(tmp_path / "w2") == tree_bytes(prepared)


def broken_root(tmp_path: Path, edit) -> Path:
    """A good root (images included) whose JSON files are then edited."""
    root = write_root(tmp_path / "root")
    data = coco_json()
    edit(data)
    for subset, content in data.items():
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(content))
    return root


def test_unknown_category_and_image_name_the_json(tmp_path):
    root = broken_root(tmp_path, lambda d: d["val2014"]["annotations"].append(ann(99, 4, 5, [box(0, 0, 3, 3)])))
    with pytest.raises(InputError) as err:
        prepare_coco(root, tmp_path / "out")
    assert err.value.path == str(root / "annotations" / "instances_val2014.json")
    assert "annotation 99" in err.value.problem and "category_id 5" in err.value.problem
    assert not (tmp_path / "out" / "dataset.yaml").exists()

    root = broken_root(tmp_path / "b", lambda d: d["train2014"]["annotations"].append(ann(98, 77, 1, [])))
    with pytest.raises(InputError, match="annotation 98: unknown image_id 77") as err:
        prepare_coco(root, tmp_path / "out")
    assert err.value.path.endswith("instances_train2014.json")


def test_missing_image_file_is_named(coco_root, tmp_path, prepared):
    out = tmp_path / "out"
    prepare_coco(coco_root, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    root = write_root(tmp_path / "root")
    missing = root / "val2014" / f"{V4}.jpg"
    missing.unlink()
    with pytest.raises(InputError) as err:
        prepare_coco(root, out)
    assert err.value.path == str(missing) and "missing" in err.value.problem
    # built in a temp folder (issue 18; the old code rendered in place and left partial masks and links behind):
    # the previous complete output survives byte for byte, and no temp is left
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_json_wrong_size_and_category_mismatch(tmp_path):
    root = write_root(tmp_path / "r1")
    (root / "annotations" / "instances_train2014.json").write_text('{"images": [')
    with pytest.raises(InputError, match="invalid JSON") as err:
        prepare_coco(root, tmp_path / "o")
    assert err.value.path.endswith("instances_train2014.json")

    root = broken_root(tmp_path / "r2", lambda d: d["train2014"]["images"][1].update(height=25))
    with pytest.raises(InputError, match="32x24 but") as err:
        prepare_coco(root, tmp_path / "o", workers=2)
    assert err.value.path == str(root / "train2014" / f"{T2}.jpg")

    root = broken_root(tmp_path / "r3", lambda d: d["val2014"]["categories"].pop())
    with pytest.raises(InputError, match="categories differ") as err:
        prepare_coco(root, tmp_path / "o")
    assert err.value.path.endswith("instances_val2014.json")


def run_stage_script(params: dict, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "prepare_dataset.py"),
            "--kind",
            "coco",
            "--params",
            json.dumps(params),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_stage_script(coco_root, prepared, tmp_path):
    ok = run_stage_script({"root": str(coco_root), "workers": 1}, tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert tree_bytes(tmp_path / "ok") == tree_bytes(prepared)

    root = broken_root(tmp_path, lambda d: d["val2014"]["annotations"].append(ann(99, 4, 5, [box(0, 0, 3, 3)])))
    bad = run_stage_script({"root": str(root)}, tmp_path / "bad")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {root / 'annotations' / 'instances_val2014.json'}: annotation 99: unknown category_id 5"]
    assert bad.stderr.splitlines()[-1] == errors[0]
    assert "Traceback" not in bad.stderr

    missing = run_stage_script({}, tmp_path / "none")
    assert missing.returncode == 2 and missing.stderr.splitlines()[-1].startswith("error: params.root: required")


def test_decompression_bomb_header_is_named(tmp_path, monkeypatch):
    """An image whose header claims more pixels than Pillow's bomb limit is one error naming it, not a traceback
    from the rendering worker; max_pixels is recorded for the readers."""
    import yaml
    from PIL import Image

    root = write_root(tmp_path / "root")
    prepare_coco(root, tmp_path / "ok", max_pixels=1234)
    assert yaml.safe_load((tmp_path / "ok" / "dataset.yaml").read_text())["max_pixels"] == 1234
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2)
    with pytest.raises(InputError) as err:
        prepare_coco(root, tmp_path / "out")
    assert err.value.path.endswith(".jpg") and "decompression bomb" in err.value.problem
    assert not (tmp_path / "out" / "dataset.yaml").exists()


def test_annotations_that_draw_no_pixel_give_no_label(tmp_path, caplog):
    """Detection-only exports (``"segmentation": []``) and polygons outside the image (issue 18: on the old code
    their classes went into labels.tsv while the mask had none). Planted bug: keep area-0 instances in
    semantic_mask's ``kept``."""

    def spoil(d):
        d["val2014"]["annotations"] += [ann(40, 4, 1, []), ann(41, 4, 3, [box(100, 100, 110, 110)])]

    root = broken_root(tmp_path / "r", spoil)
    with caplog.at_level("WARNING"):
        prepare_coco(root, tmp_path / "o")
    assert VOCLayoutDataset(tmp_path / "o").label_names(V4) == ("teddy_bear",)
    assert [r.getMessage() for r in caplog.records if "draw no pixel" in r.getMessage()] == [
        f"{root / 'annotations' / 'instances_val2014.json'}: 2 non-crowd annotations draw no pixel (empty "
        "segmentation or outside the image) and give no label"
    ]

    def detection_only(d):
        for a in d["val2014"]["annotations"]:
            a["segmentation"] = []

    root = broken_root(tmp_path / "r2", detection_only)
    with pytest.raises(InputError, match="none of its 2 non-crowd annotations draws a pixel") as err:
        prepare_coco(root, tmp_path / "o2")
    assert err.value.path.endswith("instances_val2014.json")


def test_train_equal_to_val_is_warned(coco_root, tmp_path, caplog):
    """The same JSON and images for two splits (issue 18: accepted silently, val then measures training
    images). Planted bug: drop the warning in prepare_coco."""
    same = {
        "images": str(coco_root / "train2014"),
        "annotations": str(coco_root / "annotations" / "instances_train2014.json"),
    }
    with caplog.at_level("WARNING"):
        prepare_coco(None, tmp_path / "o", subsets={"train": same, "val": dict(same)})
    assert any("splits train and val are the same images and annotations" in r.getMessage() for r in caplog.records)


def _detection_only(d):
    for a in d["val2014"]["annotations"]:
        a["segmentation"] = []


# The COCO surface's bad inputs, one row each: (edit of the JSON data, edit of the written root (or None), the
# file the error names relative to the root, the one-line problem). A new case is one row. Issue 18 added the
# detection-only row (labels without pixels on the old code).
VAL_JSON, TRAIN_JSON = "annotations/instances_val2014.json", "annotations/instances_train2014.json"
BAD_COCO = {
    "unknown category": (
        lambda d: d["val2014"]["annotations"].append(ann(99, 4, 5, [box(0, 0, 3, 3)])),
        None,
        VAL_JSON,
        "annotation 99",
    ),
    "unknown image": (
        lambda d: d["train2014"]["annotations"].append(ann(98, 77, 1, [])),
        None,
        TRAIN_JSON,
        "annotation 98: unknown image_id 77",
    ),
    "image size differs from the JSON": (
        lambda d: d["train2014"]["images"][1].update(height=25),
        None,
        f"train2014/{T2}.jpg",
        "image is 32x24 but",
    ),
    "categories differ between subsets": (
        lambda d: d["val2014"]["categories"].pop(),
        None,
        VAL_JSON,
        "categories differ from those of instances_train2014.json",
    ),
    "odd polygon": (
        lambda d: d["val2014"]["annotations"].append(ann(97, 4, 1, [[1, 2, 3]])),
        None,
        VAL_JSON,
        "polygon has an odd number of coordinates (3)",
    ),
    "detection-only subset": (
        _detection_only,
        None,
        VAL_JSON,
        "none of its 2 non-crowd annotations draws a pixel (empty segmentation or outside the "
        "image: a detection-only export?)",
    ),
    "missing image file": (
        lambda d: None,
        lambda r: (r / "val2014" / f"{V4}.jpg").unlink(),
        f"val2014/{V4}.jpg",
        "image file is missing",
    ),
    "invalid JSON": (lambda d: None, lambda r: (r / TRAIN_JSON).write_text('{"images": ['), TRAIN_JSON, "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_COCO))
def test_bad_coco_input_is_one_line_and_keeps_the_previous_output(tmp_path, case):
    edit, spoil, where, problem = BAD_COCO[case]
    good = write_root(tmp_path / "good")
    out = tmp_path / "out"
    prepare_coco(good, out)
    before = tree_bytes(out)
    root = broken_root(tmp_path / "bad", edit)
    if spoil is not None:
        spoil(root)
    with pytest.raises(InputError) as err:
        prepare_coco(root, out)
    assert err.value.path.startswith(str(root / where)) and problem in err.value.problem, str(err.value)
    assert "\n" not in str(err.value) and tree_bytes(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


# --- mutation testing (issue 23): direct tests of the parsing helpers; each names the mutants it kills -------------


def _problem(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    return err.value.path, err.value.problem


def test_class_table_refuses_bad_categories():
    """Every malformed category list is one line naming the file; 254 classes fit uint8 masks, 255 do not.
    Kills: the type checks (a bool id), the messages, the MAX_CLASSES bound, the name joining."""
    assert _problem(class_table, [], "c.json") == ("c.json", "'categories' must be a non-empty list")
    assert _problem(class_table, {"id": 1}, "c.json")[1] == "'categories' must be a non-empty list"
    for cat in ({"id": True, "name": "x"}, {"id": 1, "name": 3}, {"name": "x"}, "cat"):
        assert _problem(class_table, [cat], "c.json") == (
            "c.json",
            f"category entry {cat!r:.80} needs an integer 'id' and a string 'name'",
        )
    assert _problem(class_table, [{"id": 4, "name": " \t"}], "c.json")[1] == "category 4 has an empty name"
    assert _problem(class_table, [{"id": 4, "name": "background"}], "c.json")[1] == (
        "category names are not unique (after replacing spaces by '_'), or one is 'background'"
    )
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 256)]
    assert _problem(class_table, cats, "c.json")[1] == "255 categories do not fit uint8 masks (at most 254)"
    mapping, names = class_table(cats[:254], "c.json")
    assert mapping[254] == 254 and len(names) == 255
    assert class_table([{"id": 7, "name": " hot  dog\tstand "}], "c.json") == ({7: 1}, ["background", "hot_dog_stand"])


def _encode_counts(values: list[int]) -> str:
    """COCO's compressed RLE string of ``values`` as given (independent of pycocotools: LEB128-like 5-bit groups
    with a continuation bit, offset 48; the caller applies the runs[i] - runs[i-2] differencing)."""
    out = []
    for x in values:
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def test_compressed_run_totals_are_checked_independently():
    """_compressed_run_total decodes COCO's string: on random masks (many runs, long runs) the total is H·W as
    pycocotools encodes them, and equals the sum of the runs encoded by an independent encoder; truncated,
    out-of-alphabet and negative-run strings are errors. Kills: the bit arithmetic, the sign extension, the
    differencing from the third run on, str/bytes handling."""
    from wsss.data.coco import _compressed_run_total

    rng = np.random.default_rng(0)
    for h, w, p in ((7, 9, 0.5), (40, 50, 0.02), (64, 64, 0.97), (1, 3000, 0.3)):
        m = (rng.random((h, w)) < p).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(m))["counts"]
        assert _compressed_run_total(counts, "s") == h * w
        assert _compressed_run_total(counts.decode(), "s") == h * w
    runs = [0, 5, 3, 1000, 2, 40000, 7, 1, 1]
    deltas = runs[:3] + [runs[i] - runs[i - 2] for i in range(3, len(runs))]
    assert _compressed_run_total(_encode_counts(deltas), "s") == sum(runs)
    assert _compressed_run_total("", "s") == 0
    assert _problem(_compressed_run_total, _encode_counts([5, 3, -10]), "f.json: annotation 3") == (
        "f.json: annotation 3",
        "negative run length in compressed RLE counts",
    )
    assert _problem(_compressed_run_total, "1P", "f: a 1") == ("f: a 1", "truncated compressed RLE counts")  # 'P': more
    for bad in ("/", "p", "1 2"):
        assert _problem(_compressed_run_total, bad, "f: a 1") == (
            "f: a 1",
            "invalid character in compressed RLE counts",
        )
    assert _compressed_run_total("?", "s") == 15  # '?' = 15: the largest one-character run
    assert (
        _problem(_compressed_run_total, "O", "s")[1] == "negative run length in compressed RLE counts"
    )  # 31: sign bit


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_segmentation_to_rle_all_forms_and_errors():
    """Polygons (fewer than 3 points skipped; coordinates within ±1e6), uncompressed and compressed RLE (str or
    bytes) give the same mask; each malformed form is a one-line error naming the source. Kills: the polygon
    checks and bounds, the 6-coordinate minimum, the size and counts checks, the bytes encoding."""
    want = box_mask(6, 8, 2, 1, 5, 4)
    forms = [
        [box(2, 1, 5, 4)],
        [box(2, 1, 5, 4), [0, 0, 1, 1], [0.5, 0.5]],  # a 2-point and a 1-point polygon are skipped
        uncompressed_rle(want),
        compressed_rle(want),
        {"counts": compressed_rle(want)["counts"].encode(), "size": [6, 8]},
    ]
    for seg in forms:
        rle = segmentation_to_rle(seg, 6, 8, "s")
        np.testing.assert_array_equal(mask_utils.decode(rle), want)
    compressed = segmentation_to_rle(compressed_rle(want), 6, 8, "s")
    assert compressed == {"size": [6, 8], "counts": compressed_rle(want)["counts"].encode()}
    triangle = segmentation_to_rle([[0.0, 0.0, 7.0, 0.0, 0.0, 5.0]], 6, 8, "s")
    assert mask_utils.area(triangle) > 0
    for seg in ([], [[1, 2, 3, 4]], [[1e6, 1e6, 1e6 + 0, 0, 0, -1e6]]):
        rle = segmentation_to_rle(seg, 6, 8, "s")
        assert mask_utils.decode(rle).shape == (6, 8) and (seg != [] or mask_utils.area(rle) == 0)
    source = "f.json: annotation 5"
    errors = {
        "polygon must be a list of numbers": ([[1, 2, "3", 4, 5, 6]], [[1, 2, True, 4, 5, 6]], [(1, 2, 3, 4, 5, 6)]),
        "polygon coordinates must be finite and within +-1e+06": (
            [[0, 0, 1, 0, float("nan"), 1]],
            [[0, 0, 1, 0, float("inf"), 1]],
            [[0, 0, 1e6 + 1, 0, 0, 1]],
            [[0, 0, -1e6 - 1, 0, 0, 1]],
        ),
        "RLE size [6, 9] differs from the image size [6, 8]": ({"counts": [48], "size": [6, 9]},),
        "RLE size (6, 8) differs from the image size [6, 8]": ({"counts": [48], "size": (6, 8)},),
        "RLE run lengths must be non-negative integers adding up to 48": (
            {"counts": [50, -2], "size": [6, 8]},
            {"counts": [47, True], "size": [6, 8]},
            {"counts": [47.0, 1], "size": [6, 8]},
            {"counts": [40, 7], "size": [6, 8]},
        ),
        "RLE 'counts' must be a list of integers or a string": ({"counts": 48, "size": [6, 8]},),
        "segmentation must be a list of polygons or an RLE object with 'counts' and 'size'": (
            {"counts": [48]},
            {"size": [6, 8]},
            "polygon",
        ),
    }
    for problem, segs in errors.items():
        for seg in segs:
            assert _problem(segmentation_to_rle, seg, 6, 8, source) == (source, problem), seg
    assert _problem(segmentation_to_rle, {"counts": "", "size": [6, 8]}, 6, 8, source)[1] == (
        "RLE run lengths add up to 0, not 48"
    )


def test_semantic_mask_min_area_is_inclusive_and_no_instances():
    """An instance of exactly min_area pixels is kept; no instances give an all-background map; pycocotools'
    numpy-2 DeprecationWarning is silenced (kills: the warning filter's message or category changed)."""
    import warnings

    rle = mask_utils.encode(np.asfortranarray(box_mask(5, 5, 0, 0, 2, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        label, classes = semantic_mask(5, 5, [Instance(1, 2, False, rle)], min_area=4)
    assert [str(w.message) for w in caught] == []
    assert classes == (2,) and (label == 2).sum() == 4 and (label == 0).sum() == 21
    label, classes = semantic_mask(5, 5, [], min_area=4)
    assert classes == () and label.shape == (5, 5) and label.dtype == np.uint8 and not label.any()


def _subset_json(tmp_path: Path, data) -> Path:
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(data))
    return path


def test_load_subset_parses_and_refuses_malformed_entries(tmp_path):
    """The records (stem, path, size, annotations in JSON order with contiguous class ids, iscrowd default 0) and
    one error per malformed entry, naming the JSON. Kills: the entry checks, positivity of the size, the plain
    file name check, the duplicate checks, the iscrowd values, the messages."""
    from wsss.data.coco import load_subset

    good = {
        "images": [
            {"id": 5, "file_name": "a.jpg", "height": 3, "width": 4},
            {"id": 2, "file_name": "b.png", "height": 1, "width": 1},
        ],
        "annotations": [
            {"id": 9, "image_id": 5, "category_id": 90, "segmentation": []},
            {"id": 1, "image_id": 5, "category_id": 1, "segmentation": [box(0, 0, 1, 1)], "iscrowd": 1},
        ],
        "categories": CATEGORIES,
    }
    subset = load_subset(_subset_json(tmp_path, good), tmp_path / "imgs")
    assert subset.category_ids == (1, 3, 90)
    assert subset.class_names == ("background", "person", "traffic_light", "teddy_bear")
    assert [(r.image_id, r.path, r.height, r.width) for r in subset.images] == [
        ("a", tmp_path / "imgs" / "a.jpg", 3, 4),
        ("b", tmp_path / "imgs" / "b.png", 1, 1),
    ]
    assert [(a.ann_id, a.class_id, a.iscrowd) for a in subset.images[0].annotations] == [(9, 3, False), (1, 1, True)]
    assert subset.images[1].annotations == () and subset.json_path == tmp_path / "inst.json"

    def spoiled(edit):
        data = copy.deepcopy(good)
        edit(data)
        return _subset_json(tmp_path, data)

    img, an = "images", "annotations"
    cases = [
        (
            lambda d: d.pop("images"),
            "expected a COCO instances object with 'images', 'annotations', 'categories' lists",
        ),
        (lambda d: d.update(annotations={}), "expected a COCO instances object"),
        (lambda d: d.update(categories=[]), "'categories' must be a non-empty list"),
        (
            lambda d: d[img].append({"id": "7", "file_name": "c.jpg"}),
            "image entry {'id': '7', 'file_name': 'c.jpg'} needs an integer 'id' and a string 'file_name'",
        ),
        (
            lambda d: d[img].append({"id": 7, "file_name": 3}),
            "image entry {'id': 7, 'file_name': 3} needs an integer 'id' and a string 'file_name'",
        ),
        (lambda d: d[img].append(["x"]), "image entry ['x'] needs"),
        (lambda d: d[img][0].update(height=0), "image 5: 'height' and 'width' must be positive integers"),
        (lambda d: d[img][0].update(width=0), "image 5: 'height' and 'width' must be positive integers"),
        (lambda d: d[img][0].update(width=2.0), "image 5: 'height' and 'width' must be positive integers"),
        (lambda d: d[img][0].pop("height"), "image 5: 'height' and 'width' must be positive integers"),
        (lambda d: d[img][0].update(file_name="sub/a.jpg"), "image 5: file_name 'sub/a.jpg' must be a plain file name"),
        (lambda d: d[img][1].update(id=5), "duplicate image id 5"),
        (lambda d: d[img][1].update(file_name="a.png"), "two images share the file stem 'a'"),
        (lambda d: d[an].append({"image_id": 5}), "annotation entry {'image_id': 5} needs an integer 'id'"),
        (lambda d: d[an].append("x"), "annotation entry 'x' needs an integer 'id'"),
        (lambda d: d[an][1].update(id=9), "duplicate annotation id 9"),
        (lambda d: d[an][1].update(iscrowd=2), "annotation 1: iscrowd must be 0 or 1, got 2"),
        (lambda d: d[an][1].pop("segmentation"), "annotation 1: no 'segmentation'"),
        (lambda d: d[an][1].pop("image_id"), "annotation 1: unknown image_id None"),
        (lambda d: d[an][1].update(category_id=2), "annotation 1: unknown category_id 2"),
    ]
    for edit, problem in cases:
        path = spoiled(edit)
        where, got = _problem(load_subset, path, tmp_path)
        assert where == str(path) and got.startswith(problem), (problem, got)
    bad_stem = spoiled(lambda d: d[img][0].update(file_name="my a.jpg"))
    assert _problem(load_subset, bad_stem, tmp_path)[0] == str(bad_stem)
    assert _problem(load_subset, tmp_path / "none.json", tmp_path) == (
        str(tmp_path / "none.json"),
        "annotation file is missing",
    )
    (tmp_path / "latin1.json").write_bytes(b'{"images": "caf\xe9"}')
    assert _problem(load_subset, tmp_path / "latin1.json", tmp_path)[1].startswith("invalid JSON (")
    (tmp_path / "list.json").write_text("[]")
    assert _problem(load_subset, tmp_path / "list.json", tmp_path)[1].startswith("expected a COCO instances object")


def test_params_are_checked(tmp_path):
    """Each bad parameter is one line naming it; subsets resolve against root; the default splits are the
    COCO 2014 layout. Kills: the type and range checks (min_area 0 and workers 1 allowed), the messages, the
    default split names and file names."""
    from wsss.data.coco import _check_params

    root = tmp_path / "r"
    root.mkdir()
    assert _check_params(str(root), None, None, 0, 1) == {
        "train": (root / "annotations" / "instances_train2014.json", root / "train2014"),
        "val": (root / "annotations" / "instances_val2014.json", root / "val2014"),
    }
    assert _check_params(root, {"all": "mine"}, None, 3, 4) == {
        "all": (root / "annotations" / "instances_mine.json", root / "mine")
    }
    subsets = {"fit": {"images": "i", "annotations": "a.json"}}
    assert _check_params(str(root), None, subsets, 0, 1) == {"fit": (root / "a.json", root / "i")}
    cases = [
        ((5, None, None, 0, 1), ("params.root", "must be a folder path, got 5")),
        (("", None, None, 0, 1), ("params.root", "must be a folder path, got ''")),
        ((str(root / "x"), None, None, 0, 1), (str(root / "x"), "COCO root is not a directory")),
        ((str(root), None, None, -1, 1), ("params.min_area", "must be an integer >= 0, got -1")),
        ((str(root), None, None, 1.0, 1), ("params.min_area", "must be an integer >= 0, got 1.0")),
        ((str(root), None, None, True, 1), ("params.min_area", "must be an integer >= 0, got True")),
        ((str(root), None, None, 0, 0), ("params.workers", "must be an integer >= 1, got 0")),
        ((str(root), None, None, 0, "2"), ("params.workers", "must be an integer >= 1, got '2'")),
        (
            (str(root), None, {}, 0, 1),
            ("params.subsets", "must be a non-empty mapping of split name to {images, annotations}"),
        ),
        (
            (str(root), None, ["x"], 0, 1),
            ("params.subsets", "must be a non-empty mapping of split name to {images, annotations}"),
        ),
        (
            (str(root), None, {"fit": {"images": "i"}}, 0, 1),
            ("params.subsets", "fit: needs 'images' (folder) and 'annotations' (JSON file)"),
        ),
        (
            (str(root), None, {"fit": "i"}, 0, 1),
            ("params.subsets", "fit: needs 'images' (folder) and 'annotations' (JSON file)"),
        ),
        (
            (None, None, None, 0, 1),
            (
                "params.root",
                "required: the COCO 2014 folder (train2014/, val2014/, annotations/), or give subsets: {split: {images: DIR, annotations: FILE}}",
            ),
        ),
        ((str(root), {}, None, 0, 1), ("params.splits", "must be a non-empty mapping of split name to COCO subset")),
        (
            (str(root), ["train"], None, 0, 1),
            ("params.splits", "must be a non-empty mapping of split name to COCO subset"),
        ),
        ((str(root), {"train": 2014}, None, 0, 1), ("params.splits", "split names and subsets must be strings")),
        ((str(root), {1: "x"}, None, 0, 1), ("params.splits", "split names and subsets must be strings")),
    ]
    for args, expected in cases:
        assert _problem(_check_params, *args) == expected, args
    for args in (
        (str(root), {"a b": "x"}, None, 0, 1),
        (str(root), {"a": "../x"}, None, 0, 1),
        (str(root), None, {"a/b": {"images": "i", "annotations": "a"}}, 0, 1),
    ):
        where, problem = _problem(_check_params, *args)
        assert where in ("params.splits", "params.subsets") and problem.startswith("invalid image id"), args


def test_json_inside_the_output_and_nothing_to_prepare_and_dataset_yaml(coco_root, tmp_path):
    """An instances JSON inside the output folder is refused (the folder is replaced whole); a subset with only
    crowd annotations is an error; dataset.yaml records kind, splits, min_area, num_classes and the default
    max_pixels. Kills: the realpath/parents check, the empty-subset check, the meta entries."""
    from wsss.runtime.io import DEFAULT_MAX_PIXELS

    out = tmp_path / "out"
    prepare_coco(coco_root, out, min_area=2)
    assert yaml.safe_load((out / "dataset.yaml").read_text()) == {
        "kind": "coco",
        "splits": {
            s: {"annotations": str(coco_root / "annotations" / f"instances_{c}.json"), "images": str(coco_root / c)}
            for s, c in (("train", "train2014"), ("val", "val2014"))
        },
        "min_area": 2,
        "num_classes": 4,
        "max_pixels": DEFAULT_MAX_PIXELS,
    }
    (out / "mine.json").write_text("{}")
    where, problem = _problem(
        prepare_coco,
        None,
        out,
        subsets={"a": {"images": str(coco_root / "val2014"), "annotations": str(out / "mine.json")}},
    )
    assert where == str(out / "mine.json") and problem.startswith(f"instances JSON lies inside the output folder {out}")

    def only_crowds(d):
        for a in d["val2014"]["annotations"]:
            a["iscrowd"] = 1
            a["segmentation"] = uncompressed_rle(box_mask(20, 20, 0, 0, 3, 3))

    root = broken_root(tmp_path / "r", only_crowds)
    where, problem = _problem(prepare_coco, root, tmp_path / "o2")
    assert (
        where.endswith("instances_val2014.json")
        and problem == "no image has a non-crowd annotation (nothing to prepare)"
    )


def test_render_record_reports_problems_as_values(tmp_path):
    """The worker returns (path, None, problem, 0) for a missing, unreadable or mis-sized image (exceptions do not
    survive pickling), and (id, classes, None, empty count) otherwise, linking the image only when it has classes.
    Kills: the error tuple's fields, the size message, the empty count, the link condition."""
    from wsss.data.coco import ImageRecord, RawAnnotation, _render_record

    (tmp_path / "o" / "SegmentationClass").mkdir(parents=True)
    (tmp_path / "o" / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "x.jpg")
    anns = (
        RawAnnotation(1, 2, False, [box(0, 0, 2, 2)]),
        RawAnnotation(2, 1, False, []),
        RawAnnotation(3, 1, True, []),
    )
    rec = ImageRecord("x", tmp_path / "x.jpg", 6, 8, anns)
    assert _render_record((rec, str(tmp_path / "o"), "j.json", 0)) == ("x", (2,), None, 1)
    assert os.readlink(tmp_path / "o" / "JPEGImages" / "x.jpg") == str(tmp_path / "x.jpg")
    assert read_label_png(tmp_path / "o" / "SegmentationClass" / "x.png")[:2, :2].tolist() == [[2, 2], [2, 2]]
    none = ImageRecord("y", tmp_path / "x.jpg", 6, 8, (RawAnnotation(4, 1, False, []),))
    assert _render_record((none, str(tmp_path / "o"), "j.json", 0)) == ("y", (), None, 1)
    assert not (tmp_path / "o" / "JPEGImages" / "y.jpg").exists()
    wrong = ImageRecord("x", tmp_path / "x.jpg", 8, 6, anns)
    assert _render_record((wrong, str(tmp_path / "o"), "j.json", 0)) == (
        str(tmp_path / "x.jpg"),
        None,
        "image is 8x6 but j.json says 6x8",
        0,
    )
    gone = ImageRecord("z", tmp_path / "z.jpg", 6, 8, anns)
    assert _render_record((gone, str(tmp_path / "o"), "j.json", 0)) == (
        str(tmp_path / "z.jpg"),
        None,
        "image file is missing",
        0,
    )
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    bad = ImageRecord("b", tmp_path / "bad.jpg", 6, 8, anns)
    path, classes, problem, empty = _render_record((bad, str(tmp_path / "o"), "j.json", 0))
    assert (path, classes, empty) == (str(tmp_path / "bad.jpg"), None, 0) and problem.startswith("cannot read image (")


def test_link_is_atomic_and_idempotent(tmp_path):
    """_link leaves a correct link alone, replaces a stale one, and leaves no temp name behind."""
    from wsss.data.coco import _link

    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    link = tmp_path / "l"
    _link(tmp_path / "a", link)
    assert os.readlink(link) == str(tmp_path / "a")
    before = os.lstat(link).st_ino
    _link(tmp_path / "a", link)
    assert os.lstat(link).st_ino == before
    _link(tmp_path / "b", link)
    assert os.readlink(link) == str(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "l"]


def test_render_subset_logs_its_counts(coco_root, tmp_path, caplog, capsys):
    """One info line per subset with the image, annotation and crowd counts and the kept/dropped images; the
    progress bar names the subset and counts images."""
    with caplog.at_level("INFO", logger="wsss.data.coco"):
        prepare_coco(coco_root, tmp_path / "o")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "are the same images" in m]  # train and val are different subsets
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".wsss-output",
        "ImageSets",
        "JPEGImages",
        "SegmentationClass",
        "classes.txt",
        "dataset.yaml",
        "labels.tsv",
    ]
    assert [p.name for p in (tmp_path / "o" / "ImageSets").iterdir()] == ["Segmentation"]
    err = capsys.readouterr().err
    assert "coco instances_train2014: 100%" in err and "2/2" in err and "img/s" in err
    assert f"reading {coco_root / 'annotations' / 'instances_val2014.json'}" in messages
    assert (
        "instances_train2014.json: 3 images, 8 annotations (2 crowd); kept 2 images, dropped 1 without a kept "
        "non-crowd instance"
    ) in messages
    assert (
        "instances_val2014.json: 3 images, 2 annotations (0 crowd); kept 2 images, dropped 1 without a kept "
        "non-crowd instance"
    ) in messages
    assert "split train: 2 images" in messages and "split val: 2 images" in messages


def test_inputs_overlapping_the_output_are_refused(coco_root, tmp_path, caplog):
    """The COCO root or an image folder equal to, inside or containing the output folder is refused naming it
    (the output is replaced whole); the same images and annotations for two splits are warned about in full.
    Kills: the check_apart calls and their labels, the shared-splits warning text."""
    where, problem = _problem(prepare_coco, coco_root, coco_root / "out")
    assert where == str(coco_root) and problem.startswith("COCO root overlaps the output folder")
    subsets = {"a": {"images": str(tmp_path / "o" / "imgs"), "annotations": str(coco_root / "x.json")}}
    where, problem = _problem(prepare_coco, None, tmp_path / "o", subsets=subsets)
    assert where == str(tmp_path / "o" / "imgs") and problem.startswith("COCO image folder overlaps the output folder")
    same = {
        "images": str(coco_root / "train2014"),
        "annotations": str(coco_root / "annotations" / "instances_train2014.json"),
    }
    with caplog.at_level("WARNING", logger="wsss.data.coco"):
        prepare_coco(None, tmp_path / "s", subsets={"train": same, "val": dict(same), "test": dict(same)})
    assert [r.getMessage() for r in caplog.records] == [
        f"splits train and val and test are the same images and annotations ({same['annotations']}): evaluation "
        "on one of them measures training images"
    ]


def test_worker_pool_only_when_asked_and_its_chunks(coco_root, tmp_path, monkeypatch):
    """One process by default (no pool); ``workers=2`` renders in a pool of 2 (same output); the pool's chunks
    are len/64 clamped to 1..32 (an integer: a float chunksize breaks ``imap``). Kills: the default worker
    count, the ``workers > 1`` condition, ``//`` in the chunk size."""
    import multiprocessing

    from wsss.data import coco

    pools = []
    real = multiprocessing.get_context()

    class _Ctx:
        def Pool(self, n):
            pools.append(n)
            return real.Pool(n)

    monkeypatch.setattr(coco.multiprocessing, "get_context", _Ctx)
    prepare_coco(coco_root, tmp_path / "one")
    assert pools == []
    prepare_coco(coco_root, tmp_path / "two", workers=2)
    assert pools == [2] and tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")

    class _Pool:
        def imap(self, fn, tasks, chunksize):
            self.chunksize = chunksize
            return [(t[0].image_id, (1,), None, 0) for t in tasks]

    for n, chunk in ((10, 1), (200, 3), (5000, 32)):
        records = tuple(
            coco.ImageRecord(f"i{k}", tmp_path / "x.jpg", 2, 2, (coco.RawAnnotation(k, 1, False, []),))
            for k in range(n)
        )
        pool = _Pool()
        kept = coco._render_subset(
            coco.CocoSubset(tmp_path / "s.json", (1,), ("background", "a"), records), tmp_path, 0, pool
        )
        assert pool.chunksize == chunk and isinstance(pool.chunksize, int) and len(kept) == n
