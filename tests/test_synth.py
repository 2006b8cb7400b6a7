"""The synthetic dataset: determinism, the VOC-layout contract, and that colour alone cannot solve it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from wsss.data.dataset import VOCLayoutDataset
from wsss.data.kinds import get_kind
from wsss.data.synth import (
    _RECORDED_IF_SET,
    GENERATOR_VERSION,
    MAX_CLASSES,
    SYNTH_CLASSES,
    _sample_object,
    class_names,
    generate_dataset,
    layout_objects,
    min_visible_pixels,
    parse_params,
    render_sample,
)
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE, OUTPUT_MARKER, read_label_png

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "seed": 0,
    "image_size": 96,
    "num_classes": 6,
    "num_train_aug": 120,
    "num_train": 40,
    "num_val": 40,
    "max_objects": 3,
}


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != OUTPUT_MARKER
    }


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "synth"
    generate_dataset(root, PARAMS, progress=False)
    return root


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(synth_root, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    generate_dataset(again, PARAMS, progress=False)
    generate_dataset(other, {**PARAMS, "seed": 1}, progress=False)
    ref = file_hashes(synth_root)
    assert len(ref) == 2 * (120 + 40) + 3 + 3
    assert file_hashes(again) == ref
    changed = file_hashes(other)
    assert changed.keys() == ref.keys()
    images = [k for k in ref if k.startswith("JPEGImages/")]
    assert all(changed[k] != ref[k] for k in images)
    assert not list(synth_root.parent.glob(".*")), "no temporary files or folders left behind"


def test_an_image_does_not_depend_on_generation_order(synth_root):
    """Image i of a split comes from rng([seed, split, i]) alone: rendering it by itself gives the stored mask."""
    for split_index, image_id, index in ((0, "synth_train_000077", 77), (1, "synth_val_000013", 13)):
        _, mask, _ = render_sample([0, split_index, index], 96, 6, 3)
        np.testing.assert_array_equal(mask, read_label_png(synth_root / "SegmentationClass" / f"{image_id}.png"))


def test_layout_follows_the_voc_contract(synth_root):
    ds = VOCLayoutDataset(synth_root)
    assert ds.classes == class_names(6) and ds.classes[0] == "background" and len(set(ds.classes)) == 7
    train_aug, train, val = ds.ids("train_aug"), ds.ids("train"), ds.ids("val")
    assert train_aug == [f"synth_train_{i:06d}" for i in range(120)]
    assert train == train_aug[:40]
    assert val == [f"synth_val_{i:06d}" for i in range(40)]
    meta = yaml.safe_load((synth_root / "dataset.yaml").read_text())
    assert {k: meta[k] for k in ("name", "images", "masks", "seed", "generator_version")} == {
        "name": "synth",
        "images": "JPEGImages",
        "masks": "SegmentationClass",
        "seed": 0,
        "generator_version": GENERATOR_VERSION,
    }


def test_samples_masks_and_labels_agree(synth_root):
    ds = VOCLayoutDataset(synth_root)
    seen: dict[str, set[int]] = {}
    min_pixels = min_visible_pixels(96)
    for split in ("train_aug", "val"):
        seen[split] = set()
        for image_id in ds.ids(split):
            s = ds.sample(image_id)
            assert s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8
            assert s.mask.shape == (96, 96) and s.mask.dtype == np.uint8
            values = set(np.unique(s.mask).tolist())
            assert values <= set(range(7)) | {IGNORE}
            present = sorted(values - {0, IGNORE})
            labelled = (np.flatnonzero(s.labels) + 1).tolist()
            assert labelled == present, image_id
            assert 1 <= len(present) <= 3
            assert all((s.mask == c).sum() >= min_pixels for c in present)
            ignore_share = (s.mask == IGNORE).mean()
            assert 0 < ignore_share < 0.15, "a thin boundary band, not whole regions"
            seen[split] |= set(present)
    assert seen["train_aug"] == seen["val"] == set(range(1, 7))


def test_objects_are_large_and_never_fully_hidden():
    counts = []
    for i in range(60):
        rng = np.random.default_rng([3, 0, i])
        objects = layout_objects(rng, 96, 6, 3)
        counts.append(len(objects))
        top = np.full((96, 96), -1)
        for k, (_, mask) in enumerate(objects):
            assert mask.sum() >= 0.02 * 96 * 96
            top[mask] = k
        for k, (_, mask) in enumerate(objects):
            assert (top == k).sum() >= 0.4 * mask.sum()
    assert min(counts) == 1 and max(counts) == 3
    assert np.mean(np.array(counts) > 1) > 0.4, "occlusion needs several objects per image"


def _miou_present(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    gt, pred = cm.sum(1), cm.sum(0)
    present = gt > 0
    return float((tp[present] / (gt + pred - tp)[present]).mean())


def test_nearest_class_mean_colour_classifier_fails(synth_root):
    """The required bar: per-pixel nearest class-mean colour, fitted on train_aug, scores val mIoU < 0.35."""
    ds = VOCLayoutDataset(synth_root)
    c = ds.num_classes
    sums, counts = np.zeros((c, 3)), np.zeros(c)
    for image_id in ds.ids("train_aug"):
        s = ds.sample(image_id)
        keep = s.mask != IGNORE
        sums += np.stack([np.bincount(s.mask[keep], s.image[keep][:, k].astype(float), c) for k in range(3)], 1)
        counts += np.bincount(s.mask[keep], minlength=c)
    means = sums / counts[:, None]
    cm = np.zeros((c, c), np.int64)
    for image_id in ds.ids("val"):
        s = ds.sample(image_id)
        pred = np.argmin(((s.image[:, :, None, :].astype(float) - means) ** 2).sum(-1), -1)
        keep = s.mask != IGNORE
        cm += np.bincount(s.mask[keep].astype(np.int64) * c + pred[keep], minlength=c * c).reshape(c, c)
    miou = _miou_present(cm)
    assert miou < 0.35, f"colour alone reaches val mIoU {miou:.3f}"


def _single_object_features(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape+texture and colour descriptors of single, fully in-frame objects: (shape_tex, colour, class)."""
    feats, colours, classes = [], [], []
    for i in range(n):
        rgb, mask, labels = render_sample([seed, 9, i], 96, 6, 1)
        m = (mask == labels[0]).astype(np.uint8)
        if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue
        contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        outer = max(contours, key=cv2.contourArea)
        area, perimeter = cv2.contourArea(outer), cv2.arcLength(outer, True)
        solidity = area / cv2.contourArea(cv2.convexHull(outer))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        inner = cv2.erode(m, np.ones((5, 5), np.uint8)).astype(bool)
        magnitude, angle = np.hypot(gx, gy)[inner], np.arctan2(gy, gx)[inner] % np.pi
        orientation = np.bincount((angle / np.pi * 4).astype(int) % 4, weights=magnitude, minlength=4)
        feats.append(
            [
                4 * np.pi * area / perimeter**2,
                solidity,
                float(len(contours) > 1),
                *(orientation / (orientation.sum() + 1e-6)),
                magnitude.mean() / 100,
            ]
        )
        colours.append(rgb[m.astype(bool)].mean(0))
        classes.append(labels[0])
    return np.array(feats), np.array(colours), np.array(classes)


def _nearest_centroid_accuracy(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> float:
    mu, sd = xa.mean(0), xa.std(0) + 1e-6
    a, b = (xa - mu) / sd, (xb - mu) / sd
    classes = np.unique(ya)
    centroids = np.stack([a[ya == k].mean(0) for k in classes])
    pred = classes[np.argmin(((b[:, None] - centroids[None]) ** 2).sum(-1), 1)]
    return float((pred == yb).mean())


def test_classes_differ_by_shape_and_texture_not_colour():
    """A cheap learnability check: crude silhouette + texture-orientation features separate the classes of
    isolated objects well; their mean colour is near chance (1/6)."""
    fa, ca, ya = _single_object_features(0, 200)
    fb, cb, yb = _single_object_features(1, 200)
    assert set(ya.tolist()) == set(yb.tolist()) == set(range(1, 7))
    shape_texture = _nearest_centroid_accuracy(fa, ya, fb, yb)
    colour = _nearest_centroid_accuracy(ca, ya, cb, yb)
    assert shape_texture > 0.7, shape_texture
    assert colour < 0.3, colour


def test_all_supported_classes_render_at_small_sizes():
    seen = set()
    for i in range(80):
        rgb, mask, labels = render_sample([0, 0, i], 48, MAX_CLASSES, 2)
        assert rgb.shape == (48, 48, 3) and mask.shape == (48, 48) and 1 <= len(labels) <= 2
        assert labels == tuple(sorted(set(np.unique(mask).tolist()) - {0, IGNORE}))
        seen |= set(labels)
    assert seen == set(range(1, MAX_CLASSES + 1))
    assert len(class_names(MAX_CLASSES)) == MAX_CLASSES + 1 >= 9


@pytest.mark.parametrize(
    "params, key",
    [
        ({"seed": "0"}, "seed"),
        ({"image_size": 96.5}, "image_size"),
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_train": 300, "num_train_aug": 200}, "num_train"),
        ({"max_objects": 0}, "max_objects"),
        ({"image_size": 8}, "image_size"),
        ({"num_class": 6}, "num_class"),
        ({"texture_scale": 0.2}, "texture_scale"),
        ({"texture_scale": 4.5}, "texture_scale"),
        ({"texture_scale": True}, "texture_scale"),
        ({"texture_scale": "2"}, "texture_scale"),
        ({"texture_scale": float("nan")}, "texture_scale"),
        ({"texture_scale": None}, "texture_scale"),
        ({"classes": []}, "classes"),
        ({"classes": ["star_dots", "ring_diagonal", "star_dots"]}, "classes"),
        ({"classes": ["star_dots", "hexagon"]}, "classes"),
        ({"classes": "star_dots"}, "classes"),
        ({"classes": [1, 2]}, "classes"),
        ({"classes": {"star_dots": 1}}, "classes"),
        ({"classes": ["star_dots", "ring_diagonal"], "num_classes": 3}, "num_classes"),
    ],
)
def test_bad_params_are_input_errors_naming_the_key(params, key):
    with pytest.raises(InputError) as err:
        parse_params(params)
    assert str(err.value).startswith("--params: ") and key in str(err.value) and "\n" not in str(err.value)
    if key != "num_class":
        assert str(err.value).startswith(f"--params: {key}: ")


def test_defaults():
    p = parse_params({})
    assert (p.seed, p.image_size, p.num_classes, p.num_train_aug, p.num_train, p.num_val, p.max_objects) == (
        0,
        160,
        6,
        2000,
        200,
        200,
        3,
    )
    assert (p.texture_scale, p.classes) == (1.0, None)
    # The keys left out of dataset.yaml (and of prepare_synth's params) at their defaults are at the defaults.
    neutral = get_kind("synth").neutral
    assert _RECORDED_IF_SET == neutral == {k: getattr(p, k) for k in neutral}


def test_variant_params_are_accepted():
    assert parse_params({"texture_scale": 2}).texture_scale == 2.0  # an integer for a float key
    assert isinstance(parse_params({"texture_scale": 2}).texture_scale, float)
    assert parse_params({"texture_scale": np.float32(0.25)}).texture_scale == 0.25
    assert parse_params({"texture_scale": 4.0}).texture_scale == 4.0
    names = ["star_dots", "ring_diagonal", "cross_solid", "crescent_hatch"]
    p = parse_params({"classes": names})
    assert (p.classes, p.num_classes) == (tuple(names), 4)  # num_classes taken from the list
    assert parse_params({"classes": names, "num_classes": 4}) == p
    assert parse_params({"classes": None, "num_classes": 4}).classes is None


# ---------------------------------------------------------------------------------------------------- variants


def test_texture_scale_multiplies_the_period_and_draws_the_same_numbers():
    specs = SYNTH_CLASSES[:6]
    for i in range(20):
        rng = np.random.default_rng([0, 0, i])
        ref = _sample_object(rng, 96, specs)
        ref_state = rng.bit_generator.state
        assert ref.period > 6.0  # 96 * U(0.07, 0.11) >= 6.72: above the 3-pixel floor
        for scale, expected in ((2.0, ref.period * 2.0), (1.5, ref.period * 1.5), (0.25, 3.0)):
            rng = np.random.default_rng([0, 0, i])
            obj = _sample_object(rng, 96, specs, scale)
            assert obj.period == expected  # exactly; 0.25 hits the floor (96 * 0.11 / 4 < 3)
            assert dataclasses.replace(obj, period=ref.period) == ref, "only the period changes"
            assert rng.bit_generator.state == ref_state, "the same draws"


def test_texture_scale_coarsens_the_rendered_texture_and_keeps_the_layout():
    """Ink/fill transitions inside objects along image rows: about 1/scale as many as at scale 1."""

    def transitions(scale: float) -> tuple[float, list[np.ndarray]]:
        count = pairs = 0
        masks = []
        for i in range(20):
            rgb, mask, labels = render_sample([5, 0, i], 96, 6, 1, texture_scale=scale)
            masks.append(mask)
            inner = cv2.erode((mask == labels[0]).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            both = inner[:, 1:] & inner[:, :-1]
            step = np.abs(np.diff(rgb.astype(float).mean(2), axis=1))[both]
            count, pairs = count + int((step > 40).sum()), pairs + int(both.sum())
        return count / pairs, masks

    (fine, fine_masks), (base, base_masks), (coarse, coarse_masks) = (transitions(s) for s in (0.5, 1.0, 2.0))
    assert 1.5 < fine / base < 2.7 and 1.5 < base / coarse < 2.7, (fine, base, coarse)
    for a, b, c in zip(fine_masks, base_masks, coarse_masks):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)


def test_default_variant_params_give_the_default_dataset_byte_for_byte(synth_root, tmp_path):
    explicit = tmp_path / "explicit"
    generate_dataset(
        explicit,
        {
            **PARAMS,
            "texture_scale": 1.0,
            "classes": None,
            "frequent_class": None,
            "frequent_fraction": 0.97,
            "paired_classes": None,
        },
        progress=False,
    )
    assert file_hashes(explicit) == file_hashes(synth_root)
    meta = yaml.safe_load((synth_root / "dataset.yaml").read_text())
    assert not {"texture_scale", "classes", "frequent_class", "frequent_fraction", "paired_classes"} & set(
        meta["params"]
    )
    coarse = tmp_path / "coarse"
    generate_dataset(coarse, {**PARAMS, "num_train_aug": 40, "num_val": 5, "texture_scale": 2.0}, progress=False)
    coarse_meta = yaml.safe_load((coarse / "dataset.yaml").read_text())
    assert coarse_meta["params"]["texture_scale"] == 2.0
    ref, changed = file_hashes(synth_root), file_hashes(coarse)
    assert all(changed[k] != ref[k] for k in changed if k.startswith("JPEGImages/"))
    assert all(changed[k] == ref[k] for k in changed if k.startswith("SegmentationClass/")), "same layouts"


def test_classes_pick_the_named_classes_in_order(tmp_path):
    names = ["star_dots", "ring_diagonal"]
    assert class_names(classes=names) == class_names(2, names) == ["background", *names]
    root = tmp_path / "picked"
    cfg = generate_dataset(
        root,
        {"image_size": 64, "num_train_aug": 40, "num_train": 10, "num_val": 10, "max_objects": 1, "classes": names},
        progress=False,
    )
    assert cfg.num_classes == 2
    assert (root / "classes.txt").read_text().split() == ["background", *names]
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta["params"]["classes"] == names and meta["params"]["num_classes"] == 2
    ds = VOCLayoutDataset(root)
    assert ds.classes == ["background", *names]
    seen = dict.fromkeys(names, 0)
    for image_id in ds.ids("train_aug") + ds.ids("val"):
        s = ds.sample(image_id)
        (label,) = np.flatnonzero(s.labels) + 1  # one object per image
        assert set(np.unique(s.mask).tolist()) <= {0, int(label), IGNORE}
        # Mask id 2 is ring_diagonal: a ring fully in the frame encloses background; a star never does.
        background = (s.mask == 0).astype(np.uint8)
        count, components = cv2.connectedComponents(background, connectivity=4)
        border = set(np.unique(np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]])))
        enclosed = any(k not in border for k in range(1, count))
        obj = s.mask == label
        in_frame = not (obj[0].any() or obj[-1].any() or obj[:, 0].any() or obj[:, -1].any())
        if label == 1:
            assert not enclosed, image_id
        elif in_frame:
            assert enclosed, image_id
        seen[ds.classes[label]] += 1
    assert min(seen.values()) >= 10, seen
    labels_tsv = (root / "labels.tsv").read_text()
    assert "star_dots" in labels_tsv and "ring_diagonal" in labels_tsv and "circle_rings" not in labels_tsv


def test_classes_map_mask_ids_to_the_named_classes():
    names = ["cross_solid", "square_checker"]
    ids = set()
    for i in range(10):
        picked = layout_objects(np.random.default_rng([2, 0, i]), 64, None, 2, classes=names)
        assert [o.spec.name for o, _ in picked] == [names[o.class_id - 1] for o, _ in picked]
        ids |= {o.class_id for o, _ in picked}
    assert ids == {1, 2}
    with pytest.raises(ValueError):
        render_sample([0, 0, 0], 64, 3, 1, classes=["star_dots", "ring_diagonal"])


def test_stage_script_writes_the_dataset_and_rejects_bad_params(tmp_path):
    script = [str(REPO / "stages" / "prepare_dataset.py"), "--kind", "synth"]
    small = {"image_size": 48, "num_classes": 2, "num_train_aug": 6, "num_train": 2, "num_val": 3}
    out = tmp_path / "synth"
    done = subprocess.run(
        [sys.executable, *script, "--params", json.dumps(small), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(VOCLayoutDataset(out).ids("val")) == 3
    bad = subprocess.run(
        [sys.executable, *script, "--params", json.dumps({"num_classes": 99}), "--out", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --params: num_classes")
    assert not (tmp_path / "bad").exists()


def test_label_bias_variants_make_a_class_frequent_and_a_pair_inseparable(tmp_path):
    """frequent_class: present in about frequent_fraction of the images; paired_classes: whenever one is labelled,
    the other is too (planted bugs caught: forcing the class on every image, or placing the partner only for the
    first of the pair)."""
    base = {"image_size": 64, "num_classes": 4, "num_train_aug": 120, "num_train": 10, "num_val": 10, "max_objects": 2}
    root = tmp_path / "frequent"
    generate_dataset(root, {**base, "frequent_class": "square_checker", "frequent_fraction": 0.9}, progress=False)
    ds = VOCLayoutDataset(root)
    labels = np.stack([ds.label_vector(i) for i in ds.ids("train_aug")]) > 0.5
    assert 0.8 < labels[:, 1].mean() < 0.99, labels.mean(axis=0)
    assert yaml.safe_load((root / "dataset.yaml").read_text())["params"]["frequent_fraction"] == 0.9
    root = tmp_path / "paired"
    generate_dataset(root, {**base, "paired_classes": ["circle_rings", "hexagon_vstripes"]}, progress=False)
    ds = VOCLayoutDataset(root)
    labels = np.stack([ds.label_vector(i) for i in ds.ids("train_aug")]) > 0.5
    a, b = labels[:, 0], labels[:, 3]
    assert a.sum() >= 20 and (a & b).sum() / (a | b).sum() > 0.95, (a.sum(), b.sum(), (a & b).sum())
    with pytest.raises(InputError, match="paired_classes: \\['star_dots'\\] not among the dataset's classes"):
        parse_params({**base, "paired_classes": ["circle_rings", "star_dots"]})


# ------------------------------------------------------------------------------ shared_body (mechanism test data)


# sha256 over render_sample([0, 0, i], 96, 6, 3) for i < 6 (image, mask, labels) by the generator before
# shared_body existed: the default draws must not change
DEFAULT_RENDER_DIGEST = "2a076f495915e4caae88bce74f4fe9d4bef12043d5a9e6a31e0b267b32246a70"


def test_shared_body_false_gives_the_default_dataset_byte_for_byte(synth_root, tmp_path):
    """Planted bug: drawing the part's direction for every object (not only with shared_body) fails the digest."""
    digest = hashlib.sha256()
    for i in range(6):
        rgb, mask, labels = render_sample([0, 0, i], 96, 6, 3)
        digest.update(rgb.tobytes())
        digest.update(mask.tobytes())
        digest.update(bytes(labels))
    assert digest.hexdigest() == DEFAULT_RENDER_DIGEST
    explicit = tmp_path / "explicit"
    generate_dataset(explicit, {**PARAMS, "shared_body": False}, progress=False)
    assert file_hashes(explicit) == file_hashes(synth_root)
    assert "shared_body" not in yaml.safe_load((explicit / "dataset.yaml").read_text())["params"]


def test_shared_body_class_is_told_only_by_the_part():
    """Every object is the shared body plus its class's part; the mask labels both with the class; swapping the
    class changes no pixel outside the two parts. Planted bugs: the class texture painted on the whole body, or
    the mask leaving the part out, fail here."""
    from wsss.data.synth import BODY_SHAPE, _paint_object, layout_objects, render_background, shape_mask

    rng = np.random.default_rng([4, 0, 0])
    render_background(rng, 96)  # render_sample's draws before the layout
    objects = layout_objects(rng, 96, 4, 1, shared_body=True)
    obj, mask = objects[0]
    body = shape_mask(BODY_SHAPE, 96, obj.centre, obj.radius, obj.aspect, obj.angle)
    part = obj.part_mask(96)
    np.testing.assert_array_equal(mask, body | part)
    assert 0 < (part & ~body).sum() < 0.3 * mask.sum()
    others = [s for s in SYNTH_CLASSES[:4] if s != obj.spec]
    for other in others:
        swapped = dataclasses.replace(obj, spec=other)
        a, b = np.zeros((96, 96, 3), np.float32), np.zeros((96, 96, 3), np.float32)
        _paint_object(a, obj, obj.mask(96))
        _paint_object(b, swapped, swapped.mask(96))
        outside = ~(part | swapped.part_mask(96))
        np.testing.assert_array_equal(a[outside], b[outside])
    _, ids, labels = render_sample([4, 0, 0], 96, 4, 1, shared_body=True)
    assert labels == (obj.class_id,)
    inner = cv2.erode(part.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~body
    assert inner.any() and (ids[inner] == obj.class_id).all()


def test_shared_body_must_be_a_boolean():
    assert parse_params({"shared_body": True}).shared_body is True
    with pytest.raises(InputError, match="shared_body: must be true or false"):
        parse_params({"shared_body": 1})
