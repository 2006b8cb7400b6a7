"""The folder dataset kind: a user's images + labels.csv (+ some masks) → the VOC-layout contract, read in place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.folder import in_val, prepare_folder
from wsss.runtime.errors import InputError
from wsss.runtime.io import write_label_png

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """Write an image of ``size`` (H, W) in ``mode`` (format from the suffix); return what RGB decoding gives."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    img = img.convert(mode) if mode != "P" else img.quantize(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    with Image.open(path) as back:
        return np.array(back.convert("RGB"))


def make_folder(root: Path) -> dict:
    """Five images of several sizes and formats, a CSV naming them by file name or stem, masks for two."""
    images = {
        "a": ("a.jpg", (40, 60), "RGB"),
        "b": ("b.png", (33, 50), "L"),
        "c": ("c.PNG", (48, 48), "RGBA"),
        "d": ("d.jpeg", (30, 70), "RGB"),
        "e": ("e.png", (52, 41), "P"),
    }
    decoded = {
        stem: _image(root / "images" / name, size, mode, seed=k)
        for k, (stem, (name, size, mode)) in enumerate(images.items())
    }
    (root / "labels.csv").write_text("image,labels\na.jpg,cat\nb,dog;cat\nc.PNG,dog\nd,cat dog\ne.png,cat\n")
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 5:30] = 1
    mask[0] = 255
    write_label_png(root / "masks" / "a.png", mask)
    write_label_png(root / "masks" / "c.png", np.full((48, 48), 2, np.uint8))
    return decoded


def test_folder_prepares_in_place(tmp_path: Path) -> None:
    root, out = tmp_path / "mine", tmp_path / "resources" / "mine"
    decoded = make_folder(root)
    splits = prepare_folder({"root": str(root), "val_fraction": 0.4}, out)
    ds = VOCLayoutDataset(out)
    assert ds.classes == ["background", "cat", "dog"]
    assert sorted(splits["train"] + splits["val"]) == list("abcde")
    assert splits["val"] == [s for s in "abcde" if in_val(s, 0.4)] and ds.ids("val") == splits["val"]
    for stem, rgb in decoded.items():
        assert np.array_equal(ds.image(stem), rgb)  # PNG/grey/RGBA/palette behind a .jpg link: decoded by content
        assert (out / "JPEGImages" / f"{stem}.jpg").is_symlink()  # read in place, nothing copied
    assert ds.label_names("b") == ("dog", "cat") and ds.label_names("d") == ("cat", "dog")
    assert ds.has_mask("a") and ds.has_mask("c") and not ds.has_mask("b")
    assert ds.mask("c").max() == 2


def test_labels_from_masks_need_classes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    make_folder(root)
    (root / "labels.csv").unlink()
    with pytest.raises(InputError, match="labels CSV is missing: without it, list the class names"):
        prepare_folder({"root": str(root)}, tmp_path / "out")
    with pytest.raises(InputError, match="image has no labels"):
        prepare_folder({"root": str(root), "classes": ["cat", "dog"]}, tmp_path / "out")
    for path in sorted((root / "images").iterdir()):  # every image needs a mask when labels come from them
        if path.stem not in ("a", "c"):
            path.unlink()
    prepare_folder({"root": str(root), "classes": ["cat", "dog"], "val_fraction": 0.5}, tmp_path / "out")
    ds = VOCLayoutDataset(tmp_path / "out")
    assert ds.label_names("a") == ("cat",) and ds.label_names("c") == ("dog",)


def test_hash_split_is_stable_when_images_are_added(tmp_path: Path) -> None:
    stems = [f"img{i:03d}" for i in range(200)]
    before = {s for s in stems[:150] if in_val(s, 0.1)}
    after = {s for s in stems if in_val(s, 0.1)}
    assert before == after & set(stems[:150])
    assert 8 <= len(after) <= 35  # about 10 % of 200


def test_split_lists_win_over_val_fraction(tmp_path: Path) -> None:
    root = tmp_path / "m"
    make_folder(root)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("a\nb\nd\n")
    (lists / "val.txt").write_text("c\ne\n")
    (lists / "test.txt").write_text("e\n")
    splits = prepare_folder({"root": str(root)}, tmp_path / "out")
    assert splits == {"test": ["e"], "train": ["a", "b", "d"], "val": ["c", "e"]}
    (lists / "val.txt").write_text("c\nzz\n")
    with pytest.raises(InputError, match="val.txt: no image for id 'zz'"):
        prepare_folder({"root": str(root)}, tmp_path / "out2")


BAD_CASES = {
    "row names a missing image": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,dog\nc,dog\nd,cat\ne,cat\nzz.jpg,cat\n"),
        "labels.csv:7",
        "no image 'zz.jpg'",
    ),
    "image with no labels": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,dog\nc,dog\nd,cat\n"),
        "e.png",
        "image 'e' has no labels",
    ),
    # mutant killed: labels.get(stem, None) in the mask-class warning (a masked image without a CSV row crashed it)
    "masked image with no row": (
        lambda r: (r / "labels.csv").write_text("image,labels\nb,dog\nc,dog\nd,cat\ne,cat\n"),
        "a.jpg",
        "image 'a' has no labels",
    ),
    "empty label cell": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,\nc,dog\nd,cat\ne,cat\n"),
        "labels.csv:3",
        "image 'b' has no labels",
    ),
    "label not in classes": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,dog\nc,dog\nd,cow\ne,cat\n"),
        "labels.csv",
        "labels ['cow'] not in classes",
    ),
    "duplicate rows": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,dog\nc,dog\nd,cat\ne,cat\na.jpg,dog\n"),
        "labels.csv:7",
        "duplicate row for image 'a'",
    ),
    "unreadable image": (
        lambda r: (r / "images" / "d.jpeg").write_bytes(b"not an image"),
        "d.jpeg",
        "cannot read image",
    ),
    "mask of another size": (
        lambda r: write_label_png(r / "masks" / "a.png", np.zeros((10, 10), np.uint8)),
        "a.png",
        "mask is 10x10 but its image a.jpg is 60x40",
    ),
    "mask value out of range": (
        lambda r: write_label_png(r / "masks" / "c.png", np.full((48, 48), 7, np.uint8)),
        "c.png",
        "mask values [7]",
    ),
    "bad header": (
        lambda r: (r / "labels.csv").write_text("file,classes\na,cat\n"),
        "labels.csv",
        "first line must be the header 'image,labels'",
    ),
    "not UTF-8": (lambda r: (r / "labels.csv").write_bytes(b"image,labels\na,caf\xe9\n"), "labels.csv", "not UTF-8"),
    "same stem twice": (lambda r: _image(r / "images" / "a.png", (8, 8)), "a.png", "two images share the stem 'a'"),
    "too many pixels": (
        lambda r: _image(r / "images" / "big.png", (80, 60)),
        "big.png",
        "image has 4800 pixels (60x80), above max_pixels 4000",
    ),
    "bad stem": (
        lambda r: _image(r / "images" / "my photo.png", (8, 8)),
        "my photo.png",
        "invalid image id 'my photo': contains a space",
    ),
    # issue 18 rows
    "non-ASCII stem": (
        lambda r: _image(r / "images" / "café.png", (8, 8)),
        "café.png",
        "invalid image id 'café': contains the non-ASCII character 'é'",
    ),
    "quoted cell with a comma": (
        lambda r: (r / "labels.csv").write_text('image,labels\na,"cat,dog"\nb,dog\nc,dog\nd,cat\ne,cat\n'),
        "labels.csv:2",
        "class name 'cat,dog' contains ','",
    ),
    "NUL in a class name": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,do\x00g\nc,dog\nd,cat\ne,cat\n"),
        "labels.csv:3",
        "class name 'do\\x00g' contains a control or space character",
    ),
    "path in a class name": (
        lambda r: (r / "labels.csv").write_text("image,labels\na,cat\nb,../x\nc,dog\nd,cat\ne,cat\n"),
        "labels.csv:3",
        "class name '../x' contains '/'",
    ),
    "JPEG mask": (lambda r: _image(r / "masks" / "b.jpg", (33, 50)), "b.jpg", "mask is a JPEG"),
    "train and val overlap": (
        lambda r: _lists(r, "a\nb\nc\n", "c\nd\ne\n"),
        "val.txt",
        "id 'c' is also in train.txt (1 shared); val must hold images the model does not train on",
    ),
    # mutant killed: the "mask without image" check disabled (the stray mask was silently ignored)
    "mask without image": (
        lambda r: write_label_png(r / "masks" / "zz.png", np.zeros((8, 8), np.uint8)),
        "zz.png",
        "mask without an image (no zz.jpg/.jpeg/.png in images/)",
    ),
}


def _lists(root: Path, train: str, val: str) -> None:
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text(train)
    (lists / "val.txt").write_text(val)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_and_keeps_the_previous_output(tmp_path: Path, case: str) -> None:
    root, out = tmp_path / "m", tmp_path / "out"
    make_folder(root)
    params = {"root": str(root), "classes": ["cat", "dog"], "max_pixels": 4000}
    prepare_folder(params, out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    spoil, where, problem = BAD_CASES[case]
    spoil(root)
    with pytest.raises(InputError) as err:
        prepare_folder(params, out)
    assert where in err.value.path and problem in err.value.problem, str(err.value)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # the complete output survives
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_stage_script_prints_one_line(tmp_path: Path) -> None:
    root = tmp_path / "m"
    make_folder(root)
    (root / "labels.csv").write_text("image,labels\na,cat\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "prepare_dataset.py"),
            "--kind",
            "folder",
            "--params",
            f'{{"root": "{root}", "classes": ["cat", "dog"]}}',
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {root / 'images' / 'b.png'}: image 'b' has no labels"], proc.stderr
    assert not (tmp_path / "out").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "root_rel, out_rel",
    [
        ("resources/mine", "resources/mine"),  # the issue's exact config: root is the output folder
        ("resources/mine/raw", "resources/mine"),  # root inside the output folder
        ("data", "data/resources/mine"),  # root containing the output folder
    ],
)
def test_root_and_output_overlap_leaves_every_user_file(tmp_path: Path, root_rel: str, out_rel: str) -> None:
    """Data loss (issue 18): on the old code the stage built in a temp folder and then rmtree'd --out whole,
    user's images/ and labels.csv included, exit 0. Planted bug: drop the overlap check and the marker check."""
    root = tmp_path / root_rel
    make_folder(root)
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "prepare_dataset.py"),
            "--kind",
            "folder",
            "--params",
            f'{{"root": "{root_rel}", "classes": ["cat", "dog"]}}',
            "--out",
            out_rel,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "overlaps the output folder" in errors[0], proc.stderr
    assert _snapshot(tmp_path) == before  # every user file byte-identical, nothing added


def test_replacing_a_folder_the_pipeline_did_not_write_is_refused(tmp_path: Path) -> None:
    """The last guard before rmtree: an existing, non-empty folder without the pipeline's marker is the user's.
    Planted bug: atomic_dir replacing any folder (the old code) deletes user.txt."""
    root, out = tmp_path / "m", tmp_path / "out"
    make_folder(root)
    out.mkdir()
    (out / "user.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by this pipeline"):
        prepare_folder({"root": str(root)}, out)
    assert (out / "user.txt").read_text() == "mine"
    prepare_folder({"root": str(root)}, tmp_path / "ok")
    prepare_folder({"root": str(root)}, tmp_path / "ok")  # its own output is replaced as before


def test_split_rules_lone_train_list_and_overlap(tmp_path: Path) -> None:
    """Issue 18: a lone train.txt was ignored (hash split) and train/val overlap accepted. Planted bug: the old
    ``train.txt and val.txt`` condition."""
    root = tmp_path / "m"
    make_folder(root)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\ufeffa\nb\nd\n")  # a BOM, as the CSV may have (issue 18: was refused)
    assert prepare_folder({"root": str(root)}, tmp_path / "o1") == {"train": ["a", "b", "d"], "val": ["c", "e"]}
    (lists / "train.txt").unlink()
    (lists / "val.txt").write_text("c\n")
    assert prepare_folder({"root": str(root)}, tmp_path / "o2") == {"val": ["c"], "train": ["a", "b", "d", "e"]}
    (lists / "train.txt").write_text("a\nb\nc\n")
    with pytest.raises(InputError, match="id 'c' is also in train.txt"):
        prepare_folder({"root": str(root)}, tmp_path / "o3")


def test_hidden_files_skipped_and_mask_suffix_case(tmp_path: Path, caplog) -> None:
    """macOS ``._*`` files stopped the preparer; ``masks/x.PNG`` was ignored; a mask class the CSV row lacks was
    accepted silently (issue 18). Planted bugs: iterdir without the hidden rule; glob("*.png"); no warning."""
    root = tmp_path / "m"
    make_folder(root)
    (root / "images" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "masks" / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    write_label_png(root / "masks" / "d.PNG", np.full((30, 70), 1, np.uint8))  # d is "cat dog": fine
    (root / "labels.csv").write_text("image,labels\na.jpg,dog\nb,dog;cat\nc.PNG,dog\nd,cat dog\ne.png,cat\n")
    with caplog.at_level("INFO"):
        prepare_folder({"root": str(root)}, tmp_path / "out")
    ds = VOCLayoutDataset(tmp_path / "out")
    assert ds.has_mask("d") and sorted(ds.ids("train") + ds.ids("val")) == list("abcde")
    messages = [r.getMessage() for r in caplog.records]
    assert f"images: skipped 1 hidden file(s) in {root / 'images'}, e.g. ._a.jpg" in messages
    assert f"masks: skipped 1 hidden file(s) in {root / 'masks'}, e.g. ._a.png" in messages
    # a.png holds class 1 (cat) but a's row says dog
    assert any("masks hold classes their image's row does not list (images per class: cat 1)" in m for m in messages), (
        messages
    )
    _image(root / "masks" / "e.jpg", (52, 41))
    with pytest.raises(InputError, match="mask is a JPEG"):
        prepare_folder({"root": str(root)}, tmp_path / "out2")


def test_class_names_are_unicode_normalised(tmp_path: Path) -> None:
    """Issue 18: 'café' typed precomposed (NFC) and with a combining accent (NFD) became two classes. Planted bug:
    drop the NFC normalisation in split_names."""
    root = tmp_path / "m"
    make_folder(root)
    (root / "labels.csv").write_text("image,labels\na,caf\u00e9\nb,cafe\u0301\nc,dog\nd,caf\u00e9 dog\ne,dog\n")
    prepare_folder({"root": str(root)}, tmp_path / "out")
    assert VOCLayoutDataset(tmp_path / "out").classes == ["background", "caf\u00e9", "dog"]


def test_the_issue_config_through_snakemake_keeps_every_user_file(tmp_path: Path) -> None:
    """Issue 18's exact config, through the real entry point: `datasets: {mine: {kind: folder, root:
    resources/mine}}` deleted the user's images/ and labels.csv (exit 0). Now the config is refused naming both
    paths, and every user file is byte-identical. Planted bug: drop check_output_paths and check_apart."""
    from helpers import snakemake, write_config

    make_folder(tmp_path / "resources" / "mine")
    write_config(
        tmp_path,
        {"datasets": {"mine": {"kind": "folder", "root": "resources/mine"}}, "runs": {"mine": {"dataset": "mine"}}},
    )
    before = _snapshot(tmp_path / "resources")
    proc = snakemake(tmp_path, "--cores", "1", "resources/mine/labels.tsv", timeout=300)
    assert proc.returncode != 0
    assert (
        "datasets.mine.root: 'resources/mine' overlaps the output folder 'resources/mine'" in proc.stderr + proc.stdout
    )
    assert _snapshot(tmp_path / "resources") == before


# --- mutation testing (issue 23): each test below names the mutants of wsss/data/folder.py it kills ----------------


def _error(params: dict, out: Path) -> InputError:
    with pytest.raises(InputError) as err:
        prepare_folder(params, out)
    return err.value


def test_params_are_checked(tmp_path: Path) -> None:
    """Unknown keys, a missing or empty root and a val_fraction outside (0, 1) are one-line errors; the defaults
    are images/, labels.csv, masks/ and val_fraction 0.1. Kills: the messages, the bounds (0 and 1 excluded), the
    default names and fraction."""
    root = tmp_path / "m"
    make_folder(root)
    err = _error({"root": str(root), "colour": 1, "a": 2}, tmp_path / "o")
    assert (err.path, err.problem) == (
        "--params",
        "unknown keys ['a', 'colour']; known: ['root', 'images', 'labels', 'masks', 'classes', 'val_fraction']",
    )
    for params in ({}, {"root": ""}, {"root": 3}):
        err = _error(params, tmp_path / "o")
        assert (err.path, err.problem) == ("--params", "root: required, the dataset folder")
    for fraction in (0, 1, 1.5, -0.1):
        err = _error({"root": str(root), "val_fraction": fraction}, tmp_path / "o")
        assert err.problem == f"val_fraction: must lie in (0, 1), got {fraction!r}"
    splits = prepare_folder({"root": str(root), "max_pixels": None}, tmp_path / "o")
    assert splits["val"] == [s for s in "abcde" if in_val(s, 0.1)] and splits["val"]
    ds = VOCLayoutDataset(tmp_path / "o")
    assert ds.has_mask("a") and ds.label_names("b") == ("dog", "cat")
    assert yaml.safe_load((tmp_path / "o" / "dataset.yaml").read_text()) == {
        "kind": "folder",
        "source": str(root),
        "num_classes": 3,
    }
    err = _error({"root": str(tmp_path / "nowhere")}, tmp_path / "o2")
    assert (err.path, err.problem) == (str(tmp_path / "nowhere"), "dataset root is not a directory")


def test_other_folder_names_and_the_output_files(tmp_path: Path, caplog) -> None:
    """images/labels/masks under other names; the output: absolute links to the user's files, split lists,
    classes.txt, labels.tsv (repeated labels once), dataset.yaml with max_pixels, one log line per split."""
    root = tmp_path / "m"
    make_folder(root)
    (root / "images").rename(root / "pics")
    (root / "masks").rename(root / "gt")
    (root / "labels.csv").unlink()
    (root / "tags.csv").write_text("image,labels\na.jpg,cat cat\nb,dog;cat\nc.PNG,dog\nd,cat dog\ne.png,cat\n")
    out = tmp_path / "out"
    params = {"root": str(root), "images": "pics", "labels": "tags.csv", "masks": "gt", "val_fraction": 0.4}
    with caplog.at_level("INFO", logger="wsss.data.folder"):
        splits = prepare_folder({**params, "max_pixels": 5000}, out)
    assert os.readlink(out / "JPEGImages" / "a.jpg") == str(root / "pics" / "a.jpg")
    assert os.readlink(out / "SegmentationClass" / "c.png") == str(root / "gt" / "c.png")
    assert sorted(p.name for p in (out / "SegmentationClass").iterdir()) == ["a.png", "c.png"]
    for split, ids in splits.items():
        assert (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_text() == "".join(f"{i}\n" for i in ids)
    assert (out / "classes.txt").read_text() == "background\ncat\ndog\n"
    assert (out / "labels.tsv").read_text().splitlines()[1:] == [
        "a\tcat",
        "b\tdog cat",
        "c\tdog",
        "d\tcat dog",
        "e\tcat",
    ]
    assert yaml.safe_load((out / "dataset.yaml").read_text())["max_pixels"] == 5000
    source = "hash of the file stem, val_fraction 0.4"
    expected = [
        f"split {split}: {len(ids)} images, {sum(i in 'ac' for i in ids)} with masks ({source})"
        for split, ids in splits.items()
    ]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("split ")] == expected


def test_in_val_is_the_sha256_prefix_below_the_fraction() -> None:
    """Independent implementation: the first 8 bytes of SHA-256 (big-endian) compared with fraction · 2**64."""
    import hashlib

    for stem in [f"img{i}" for i in range(300)] + ["a", "é"]:
        prefix = int(hashlib.sha256(stem.encode()).hexdigest()[:16], 16)
        for fraction in (0.05, 0.1, 0.5, 0.9):
            assert in_val(stem, fraction) == (prefix < fraction * 2**64), (stem, fraction)
    assert sum(in_val(f"img{i}", 0.5) for i in range(300)) in range(120, 181)


def test_image_and_mask_folders_skip_other_entries_and_refuse_empty_or_twice(tmp_path: Path) -> None:
    """Non-image files and sub-folders named like images are skipped in images/ and masks/; a missing or empty
    image folder and two masks of one stem are one-line errors; no masks/ folder means no masks."""
    root = tmp_path / "m"
    make_folder(root)
    (root / "images" / "0notes.txt").write_text("not an image")  # sorted first: a skip that stopped the scan fails
    (root / "images" / "sub.png").mkdir()
    (root / "masks" / "0readme.txt").write_text("x")
    (root / "masks" / "d.png").mkdir()
    prepare_folder({"root": str(root)}, tmp_path / "o1")
    ds = VOCLayoutDataset(tmp_path / "o1")
    assert sorted(ds.ids("train") + ds.ids("val")) == list("abcde") and not ds.has_mask("d")
    write_label_png(root / "masks" / "a.PNG", np.zeros((40, 60), np.uint8))
    err = _error({"root": str(root)}, tmp_path / "o2")
    assert (Path(err.path).name, err.problem) == ("a.png", "two masks share the stem 'a' (a.PNG, a.png)")
    (root / "masks" / "a.PNG").unlink()
    for name in ("b.jpeg", "b.JPG"):
        _image(root / "masks" / name, (33, 50))
        err = _error({"root": str(root)}, tmp_path / "o2")
        assert (Path(err.path).name, err.problem) == (
            name,
            "mask is a JPEG; lossy compression changes class ids: save masks as PNG",
        )
        (root / "masks" / name).unlink()
    for p in (root / "masks").iterdir():
        p.unlink() if p.is_file() else p.rmdir()
    (root / "masks").rmdir()
    assert prepare_folder({"root": str(root), "val_fraction": 0.4}, tmp_path / "o3")["train"]
    assert not VOCLayoutDataset(tmp_path / "o3").has_mask("a")
    err = _error({"root": str(root), "images": "none"}, tmp_path / "o4")
    assert (err.path, err.problem) == (str(root / "none"), "image folder is missing")
    (root / "empty").mkdir()
    (root / "empty" / "x.gif").write_bytes(b"GIF89a")
    err = _error({"root": str(root), "images": "empty"}, tmp_path / "o5")
    assert (err.path, err.problem) == (str(root / "empty"), "no images (.jpg, .jpeg, .png)")


CSV_CASES = {
    "empty file": ("", "labels.csv", "first line must be the header 'image,labels'"),
    "three columns": ("image,labels\na,cat,x\n", "labels.csv:2", "expected 2 columns (image, labels), got 3"),
    "one column": ("image,labels\na\n", "labels.csv:2", "expected 2 columns (image, labels), got 1"),
    "label 'background'": (
        "image,labels\na,background\nb,dog\nc,dog\nd,cat\ne,cat\n",
        "labels.csv",
        "image 'a': labels ['background'] not in classes ['cat', 'dog']",
    ),
    "a '..' name": (
        "image,labels\na,cat\nb,x..y\nc,dog\nd,cat\ne,cat\n",
        "labels.csv:3",
        "class name 'x..y' contains '..' (separate labels by spaces or ';'; a quoted cell is one name)",
    ),
    "a '.' name": ("image,labels\na,.\nb,dog\n", "labels.csv:2", "class name '.' contains '..'"),
    "a backslash": ("image,labels\na,c\\at\nb,dog\n", "labels.csv:2", "class name 'c\\\\at' contains '\\\\'"),
    "an unknown image": ("image,labels\nzz,cat\n", "labels.csv:2", "no image 'zz' in "),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_labels_csv_errors_name_the_line(tmp_path: Path, case: str) -> None:
    """Each CSV problem is one line naming file:line and what is wrong (classes given, so only the CSV decides)."""
    root = tmp_path / "m"
    make_folder(root)
    text, where, problem = CSV_CASES[case]
    (root / "labels.csv").write_text(text)
    err = _error({"root": str(root), "classes": ["cat", "dog"]}, tmp_path / "o")
    assert err.path.endswith(where) and err.problem.startswith(problem), str(err)
    if case == "an unknown image":
        assert err.problem == f"no image 'zz' in {root / 'images'}"


def test_labels_csv_accepts_a_bom_padded_header_and_blank_rows(tmp_path: Path) -> None:
    """A BOM (Excel), spaces around the header cells and blank or comma-only rows are fine. Kills: utf-8-sig, the
    header strip, the blank-row skip."""
    root = tmp_path / "m"
    make_folder(root)
    text = "\ufeff image , labels \n\na.jpg,cat\n , \nb,dog;cat\nc.PNG,dog\nd,cat dog\ne.png,cat\n,\n"
    (root / "labels.csv").write_text(text, encoding="utf-8")
    prepare_folder({"root": str(root), "val_fraction": 0.4}, tmp_path / "o")
    assert VOCLayoutDataset(tmp_path / "o").label_names("b") == ("dog", "cat")


CLASSES_CASES = {
    "background not first": (["cat", "background"], "classes: 'background' may only come first (it is id 0)"),
    "duplicate": (["cat", "dog", "cat"], "classes: duplicate names"),
    "empty name": (["cat", ""], "classes: name '' is empty"),
    "semicolon": (["cat", "d;og"], "classes: name 'd;og' contains ';'"),
    "space": (["cat", "hot dog"], "classes: name 'hot dog' contains a control or space character"),
}


@pytest.mark.parametrize("case", sorted(CLASSES_CASES))
def test_bad_class_lists_are_refused(tmp_path: Path, case: str) -> None:
    root = tmp_path / "m"
    make_folder(root)
    classes, problem = CLASSES_CASES[case]
    err = _error({"root": str(root), "classes": classes}, tmp_path / "o")
    assert (err.path, err.problem) == ("--params", problem)


def test_class_list_background_first_nfc_and_no_foreground(tmp_path: Path) -> None:
    """A leading 'background' is the one id 0 (not a second one); names given decomposed are stored NFC; no
    foreground class is an error naming the CSV. Kills: the background drop, the NFC of the classes, the
    empty-list check."""
    root = tmp_path / "m"
    make_folder(root)
    (root / "labels.csv").write_text("image,labels\na,caf\u00e9\nb,dog\nc,dog\nd,dog\ne,dog\n")
    prepare_folder({"root": str(root), "classes": ["background", "cafe\u0301", "dog"]}, tmp_path / "o")
    assert (tmp_path / "o" / "classes.txt").read_text() == "background\ncaf\u00e9\ndog\n"
    for classes in ([], ["background"]):
        err = _error({"root": str(root), "classes": classes}, tmp_path / "o2")
        assert (err.path, err.problem) == (str(root / "labels.csv"), "no foreground class")


def test_mask_labels_and_mask_only_images(tmp_path: Path, caplog) -> None:
    """Labels from masks are the ids present other than 0 and 255, in id order; a mask of only 0 and 255 leaves its
    image without labels (the error names the mask); the warning counts images per class, sorted. Kills: the id
    range ``0 < v < 255``, the derived order, the count arithmetic."""
    root = tmp_path / "m"
    make_folder(root)
    mask = np.zeros((40, 60), np.uint8)
    mask[:5], mask[5:10], mask[10:12] = 2, 1, 255
    write_label_png(root / "masks" / "a.png", mask)
    write_label_png(root / "masks" / "b.png", np.full((33, 50), 2, np.uint8))
    write_label_png(root / "masks" / "d.png", np.full((30, 70), 2, np.uint8))
    (root / "labels.csv").write_text("image,labels\na,dog\nb,cat\nc,dog\nd,cat\ne,dog\n")
    with caplog.at_level("WARNING", logger="wsss.data.folder"):
        prepare_folder({"root": str(root), "val_fraction": 0.4}, tmp_path / "o")
    assert [r.getMessage() for r in caplog.records] == [
        f"{root / 'labels.csv'}: masks hold classes their image's row does not list (images per class: cat 1, dog 2); "
        "training uses the CSV's labels, evaluation the masks"
    ]
    (root / "labels.csv").unlink()
    for stem in "e":
        (root / "images" / f"{stem}.png").unlink()
    write_label_png(root / "masks" / "c.png", np.full((48, 48), 1, np.uint8))
    prepare_folder({"root": str(root), "classes": ["cat", "dog"], "val_fraction": 0.4}, tmp_path / "o2")
    assert (tmp_path / "o2" / "labels.tsv").read_text().splitlines()[1:] == ["a\tcat dog", "b\tdog", "c\tcat", "d\tdog"]
    empty = np.zeros((40, 60), np.uint8)
    empty[0] = 255
    write_label_png(root / "masks" / "a.png", empty)
    err = _error({"root": str(root), "classes": ["cat", "dog"]}, tmp_path / "o3")
    assert (err.path, err.problem) == (str(root / "masks" / "a.png"), "image 'a' has no labels")


def test_max_pixels_is_inclusive(tmp_path: Path) -> None:
    """An image of exactly max_pixels pixels is accepted (the largest, a, has 40·60 = 2400)."""
    root = tmp_path / "m"
    make_folder(root)
    prepare_folder({"root": str(root), "max_pixels": 2400}, tmp_path / "o")
    assert yaml.safe_load((tmp_path / "o" / "dataset.yaml").read_text())["max_pixels"] == 2400
    err = _error({"root": str(root), "max_pixels": 2399}, tmp_path / "o2")
    assert err.problem.startswith("image has 2400 pixels (60x40), above max_pixels 2399")


def test_other_lists_alone_fall_back_to_the_hash_split_and_empty_splits_are_refused(tmp_path: Path, caplog) -> None:
    """Split lists other than train/val (e.g. test.txt alone) do not replace the hash split; hidden and non-.txt
    files there are ignored; an empty train or val split is an error naming its source."""
    root = tmp_path / "m"
    make_folder(root)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "test.txt").write_text("e\n")
    (lists / "train.csv").write_text("a\n")
    (lists / "._train.txt").write_bytes(b"\x00\x05")
    with caplog.at_level("INFO"):
        splits = prepare_folder({"root": str(root), "val_fraction": 0.4}, tmp_path / "o")
    assert f"split lists: skipped 1 hidden file(s) in {lists}, e.g. ._train.txt" in [
        r.getMessage() for r in caplog.records
    ]
    assert splits["val"] == [s for s in "abcde" if in_val(s, 0.4)]
    assert splits["train"] == [s for s in "abcde" if not in_val(s, 0.4)]
    err = _error({"root": str(root), "val_fraction": 1e-9}, tmp_path / "o2")
    assert (err.path, err.problem) == (
        str(root),
        "split 'val' is empty (hash of the file stem, val_fraction 1e-09); add images or change val_fraction",
    )
    (lists / "val.txt").write_text("a\nb\nc\nd\ne\n")
    err = _error({"root": str(root)}, tmp_path / "o3")
    assert err.problem == (
        f"split 'train' is empty (val.txt in {lists}, train = the other images); add images or change val_fraction"
    )


def test_root_overlapping_the_output_and_the_progress_line(tmp_path: Path, capsys) -> None:
    """In-process: a root containing the output folder is refused naming the root as "dataset root"; the image
    check shows a "check images" progress bar counting the images. Kills: check_apart's label, the bar's desc."""
    root = tmp_path / "m"
    make_folder(root)
    err = _error({"root": str(root)}, root / "out")
    assert err.path == str(root) and err.problem.startswith("dataset root overlaps the output folder")
    capsys.readouterr()
    prepare_folder({"root": str(root)}, tmp_path / "o")
    err = capsys.readouterr().err
    assert "check images: 100%" in err and "img/s" in err
