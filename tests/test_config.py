"""Config schema: defaults filled in, wrong types and unknown keys rejected with the key named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from wsss.runtime.config import load_schema, validate_config
from wsss.runtime.errors import InputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(REPO / "schemas" / "config.schema.yaml")


def test_shipped_config_is_valid_and_complete(schema: dict, repo: Path) -> None:
    raw = yaml.safe_load((repo / "config.yaml").read_text())
    cfg = validate_config(raw, schema, "config.yaml")
    assert cfg["runs"]["synth"]["dataset"] == "synth"
    assert cfg["datasets"]["voc"]["voc_md5"] == "6cd6e144f989b92b3379bac3b3de84fd"


def test_defaults_fill_missing_sections(schema: dict) -> None:
    cfg = validate_config({"runs": {"r": {"dataset": "synth"}}}, schema)
    assert cfg["device"] == "auto"
    assert cfg["runs"]["r"]["method"] == "vwl_l"
    assert cfg["datasets"]["synth"]["seed"] == 0 and cfg["datasets"]["coco"]["root"] is None


def test_input_not_mutated(schema: dict) -> None:
    raw = {"runs": {"r": {"dataset": "synth"}}}
    validate_config(raw, schema)
    assert raw == {"runs": {"r": {"dataset": "synth"}}}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"datasets": {"synth": {"image_size": "big"}}}, "datasets.synth.image_size: 'big' is not of type 'integer'"),
        ({"datasets": {"synth": {"num_classes": 0}}}, "datasets.synth.num_classes: 0 is less than the minimum of 1"),
        ({"datasets": {"voc": {"voc_md5": "xyz"}}}, "datasets.voc.voc_md5: 'xyz' does not match"),
        ({"device": "tpu"}, "device: 'tpu' is not one of"),
        ({"datasets": {"synth": {"sede": 1}}}, "datasets.synth: Additional properties are not allowed ('sede'"),
        ({"runs": {"r": {"dataset": "imagenet"}}}, "runs.r.dataset: 'imagenet' is not a dataset"),
        ({"datasets": {"mine": {"root": "/x"}}}, "datasets.mine: 'kind' is a required property"),
        ({"datasets": {"mine": {"kind": "folder"}}}, "datasets.mine: 'root' is a required property"),
        (
            {"datasets": {"mine": {"kind": "folder", "root": "/x", "seed": 1}}},
            "datasets.mine: Additional properties are not allowed ('seed'",
        ),
        (
            {"datasets": {"mine": {"kind": "folder", "root": "/x", "val_fraction": 1}}},
            "datasets.mine.val_fraction: 1 is greater than or equal to the maximum of 1",
        ),
        (
            {"datasets": {"c": {"kind": "coco", "subsets": {"train": {"images": "i"}}}}},
            "datasets.c.subsets.train: 'annotations' is a required property",
        ),
        (
            {"runs": {"r": {"dataset": "synth", "cls": {"train_split": "test"}}}},
            "runs.r.cls.train_split: 'test' is not a split of dataset 'synth'",
        ),
        (
            {"runs": {"r": {"dataset": "synth", "cls": {"crop": 48}}}},
            "runs.r.cls.crop: 48 gives a 3x3 feature map at output stride 16, below the 4x4 level of hybrid pooling",
        ),
        (
            {"datasets": {"synth": {"classes": ["star_dots", "hexagon"]}}},
            "datasets.synth.classes.1: 'hexagon' is not one of",
        ),
        (
            {"datasets": {"synth": {"classes": ["star_dots", "star_dots"]}}},
            "datasets.synth.classes: ['star_dots', 'star_dots'] has non-unique elements",
        ),
        ({"datasets": {"synth": {"classes": []}}}, "datasets.synth.classes: []"),
        (
            {"datasets": {"synth": {"classes": ["star_dots"], "num_classes": 3}}},
            "datasets.synth.num_classes: 3 does not match datasets.synth.classes, which names 1",
        ),
        (
            {"datasets": {"synth": {"texture_scale": 8}}},
            "datasets.synth.texture_scale: 8 is greater than the maximum of 4",
        ),
        ({"datasets": {"synth": {"texture_scale": "x"}}}, "datasets.synth.texture_scale: 'x' is not of type 'number'"),
    ],
)
def test_bad_values_name_the_key(schema: dict, patch: dict, message: str) -> None:
    cfg = {"runs": {"r": {"dataset": "synth"}}} | patch
    with pytest.raises(InputError) as err:
        validate_config(cfg, schema, "my.yaml")
    assert str(err.value).startswith("my.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_synth_variants_validate_and_reach_the_generator(schema: dict) -> None:
    """A synth dataset with classes and texture_scale: num_classes comes from the list, and the preparer's params
    carry both keys (which the generator accepts); at their defaults they are left out, as before they existed."""
    from wsss.data.kinds import preparer_params
    from wsss.data.synth import parse_params

    names = ["star_dots", "ring_diagonal", "cross_solid", "crescent_hatch"]
    raw = {
        "datasets": {"nonconvex": {"kind": "synth", "classes": names, "texture_scale": 1.5}},
        "runs": {"r": {"dataset": "nonconvex"}},
    }
    cfg = validate_config(raw, schema)
    entry = cfg["datasets"]["nonconvex"]
    assert (entry["num_classes"], entry["classes"], entry["texture_scale"]) == (4, names, 1.5)
    assert validate_config(cfg, schema) == cfg  # a validated config validates again
    params = preparer_params(entry)
    assert (params["classes"], params["texture_scale"], params["num_classes"]) == (names, 1.5, 4)
    assert "kind" not in params
    synth = parse_params(params)
    assert (synth.classes, synth.texture_scale, synth.num_classes) == (tuple(names), 1.5, 4)
    same = validate_config(
        {"datasets": {"synth": {"classes": names, "num_classes": 4}}, "runs": {"r": {"dataset": "synth"}}}, schema
    )
    assert same["datasets"]["synth"]["num_classes"] == 4
    default = validate_config({"runs": {"r": {"dataset": "synth"}}}, schema)["datasets"]["synth"]
    assert (default["classes"], default["texture_scale"], default["num_classes"]) == (None, 1.0, 6)
    unchanged = {
        k: v
        for k, v in default.items()
        if k
        not in (
            "kind",
            "classes",
            "texture_scale",
            "frequent_class",
            "frequent_fraction",
            "paired_classes",
            "shared_body",
        )
    }
    assert preparer_params(default) == unchanged  # the params of a synth dataset before the keys existed
    assert parse_params(preparer_params(default)) == parse_params({})


def test_run_overrides_merge_over_section_defaults(schema: dict) -> None:
    from wsss.runtime.config import run_config

    raw = {
        "cls": {"lr": 0.05},
        "runs": {"small": {"dataset": "synth", "cls": {"backbone": 18}}, "big": {"dataset": "voc"}},
    }
    cfg = validate_config(raw, schema)
    small, big = run_config(cfg, "small"), run_config(cfg, "big")
    assert small["cls"]["backbone"] == 18 and big["cls"]["backbone"] == 101
    assert small["cls"]["lr"] == big["cls"]["lr"] == 0.05
    assert "backbone" not in cfg["runs"]["big"].get("cls", {})  # overrides stay sparse: no defaults injected
    assert small["cam"]["bg_score"] == 0.13
    with pytest.raises(InputError, match="runs.nope: no such run"):
        run_config(cfg, "nope")


def test_run_override_is_type_checked(schema: dict) -> None:
    with pytest.raises(InputError, match="runs.r.cls.backbone: 19 is not one of"):
        validate_config({"runs": {"r": {"dataset": "synth", "cls": {"backbone": 19}}}}, schema)


def test_datasets_by_name_and_kind(schema: dict, tmp_path: Path) -> None:
    """Any name with a kind; the built-in names are their kind and always exist; folder defaults are filled."""
    raw = {
        "datasets": {"shapes": {"kind": "folder", "root": str(tmp_path)}, "synth": {"seed": 3}},
        "runs": {"a": {"dataset": "shapes"}, "b": {"dataset": "synth"}},
    }
    cfg = validate_config(raw, schema)
    expected = {
        "kind": "folder",
        "root": str(tmp_path),
        "images": "images",
        "labels": "labels.csv",
        "masks": "masks",
        "classes": None,
        "val_fraction": 0.1,
    }
    assert {k: cfg["datasets"]["shapes"][k] for k in expected} == expected
    assert cfg["datasets"]["synth"]["kind"] == "synth" and cfg["datasets"]["synth"]["seed"] == 3
    assert {cfg["datasets"][n]["kind"] for n in ("voc", "coco")} == {"voc", "coco"}


def test_training_splits_follow_the_dataset(schema: dict, tmp_path: Path) -> None:
    """No split name is special: train_aug where the dataset has it (the VOC recipe), else train; the
    evaluation maps point train at train_aug only where both exist."""
    from wsss.runtime.config import run_config

    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "test.txt").write_text("a\n")
    raw = {
        "datasets": {
            "shapes": {"kind": "folder", "root": str(tmp_path)},
            "c17": {
                "kind": "coco",
                "subsets": {
                    "tr": {"images": "i", "annotations": "a.json"},
                    "val": {"images": "j", "annotations": "b.json"},
                },
            },
        },
        "runs": {
            "f": {"dataset": "shapes"},
            "v": {"dataset": "voc"},
            "c": {"dataset": "c17"},
            "t": {"dataset": "shapes", "seg": {"train_split": "test"}},
        },
    }
    cfg = validate_config(raw, schema)
    f, v, c, t = (run_config(cfg, r) for r in "fvct")
    assert [f[s]["train_split"] for s in ("cls", "irn", "seg")] == ["train"] * 3
    assert f["cam"]["eval"] == f["irn"]["eval"] == {}
    assert [v[s]["train_split"] for s in ("cls", "irn", "seg")] == ["train_aug"] * 3
    assert v["cam"]["eval"] == v["irn"]["eval"] == {"train": "train_aug"}
    assert c["cls"]["train_split"] == "tr"  # neither train_aug nor train: the first subset
    assert t["seg"]["train_split"] == "test" and t["cls"]["train_split"] == "train"
    with pytest.raises(InputError, match="runs.c.irn.train_split: 'train' is not a split of dataset 'c17'"):
        validate_config(raw | {"runs": {"c": {"dataset": "c17", "irn": {"train_split": "train"}}}}, schema)


BAD_SPLIT = "val; touch x #"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"summary": {"cam_split": BAD_SPLIT}}, "summary.cam_split"),
        ({"summary": {"seg_split": "../val"}}, "summary.seg_split"),
        ({"seg": {"train_split": BAD_SPLIT}}, "seg.train_split"),
        ({"irn": {"train_split": "$(id)"}}, "irn.train_split"),
        ({"cam": {"infer_splits": ["val", BAD_SPLIT]}}, "cam.infer_splits.1"),
        ({"cam": {"eval": {"val": BAD_SPLIT}}}, "cam.eval.val"),
        ({"cam": {"eval": {BAD_SPLIT: "val"}}}, "cam.eval"),
        ({"irn": {"eval": {"train": "train aug"}}}, "irn.eval.train"),
        ({"irn": {"pseudo_splits": ["-val"]}}, "irn.pseudo_splits.0"),
        ({"runs": {"r": {"dataset": "synth", "seg": {"train_split": BAD_SPLIT}}}}, "runs.r.seg.train_split"),
    ],
)
def test_split_names_must_be_ids(schema: dict, patch: dict, key: str) -> None:
    """Split names reach file names and shell commands: anything but a dataset id is a config error naming the key."""
    with pytest.raises(InputError) as err:
        validate_config({"runs": {"r": {"dataset": "synth"}}} | patch, schema, "my.yaml")
    assert str(err.value).startswith(f"my.yaml: {key}: ") and "\n" not in str(err.value)


def test_split_names_accept_dataset_ids(schema: dict) -> None:
    from wsss.data.dataset import _ID_RE

    names = ["train_aug", "val", "train-1.5", "_x", "2012"]
    cfg = validate_config(
        {
            "summary": {"cam_split": names[2]},
            "cam": {"infer_splits": names, "eval": {n: n for n in names}},
            "runs": {"r": {"dataset": "synth"}},
        },
        schema,
    )
    assert cfg["cam"]["infer_splits"] == names
    pattern = re.compile(schema["properties"]["summary"]["properties"]["cam_split"]["pattern"])
    for probe in [*names, BAD_SPLIT, "", ".hidden", "a/b", "a b", "é"]:  # the dataset's id rule, same answers
        assert bool(pattern.search(probe)) == bool(_ID_RE.match(probe)), probe
    assert not pattern.search("val\n")  # Python's $ also matches before a final newline: the schema excludes it


def test_precision_and_fidelity_switches_default_to_todays_behaviour(schema: dict) -> None:
    from wsss.runtime.config import run_config

    cfg = run_config(validate_config({"runs": {"r": {"dataset": "synth"}}}, schema), "r")
    assert cfg["cls"]["amp"] is False and cfg["irn"]["amp"] is False and cfg["seg"]["amp"] is True
    assert cfg["cam"]["high_res"] == "upsample" and cfg["irn"]["boundary_canvas"] is None
    with pytest.raises(InputError, match="irn.boundary_canvas: 500 is not a multiple of 16"):
        validate_config({"irn": {"boundary_canvas": 500}, "runs": {"r": {"dataset": "synth"}}}, schema)


def test_ir_label_thresholds_ordered_or_auto(schema: dict) -> None:
    from wsss.runtime.config import check_runs

    def cfg(**irn):
        return validate_config({"irn": irn, "runs": {"r": {"dataset": "synth"}}}, schema)

    with pytest.raises(InputError, match=r"runs.r.irn.conf_bg: 0.3 must be below irn.conf_fg 0.3"):
        check_runs(cfg(conf_fg=0.3, conf_bg=0.3))
    check_runs(cfg(conf_fg="auto", conf_bg=0.3))
    check_runs(cfg(conf_fg="auto", conf_bg="auto", bg_threshold="auto"))
    with pytest.raises(InputError, match="irn.bg_threshold"):
        cfg(bg_threshold="sometimes")


def test_roots_apart_from_outputs_pass(schema: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    validate_config(
        {
            "datasets": {
                "mine": {"kind": "folder", "root": "data/mine"},
                "voc": {"root": "resources/voc/VOCdevkit/VOC2012"},
            },
            "predict": {"new": "photos"},
            "runs": {"r": {"dataset": "mine"}},
        },
        schema,
    )
    with pytest.raises(InputError, match="predict.new: 'results/r/predict' overlaps the output folder 'results'"):
        validate_config({"predict": {"new": "results/r/predict"}, "runs": {"r": {"dataset": "synth"}}}, schema)


def test_folder_lists_named_like_builtin_splits_are_not_picked(schema: dict, tmp_path: Path, monkeypatch) -> None:
    """Issue 18: a user's train_aug.txt silently made every stage train on it (training_split prefers it, for VOC).
    A folder dataset trains on train unless a run's train_split says otherwise. Planted bug: the old default."""
    monkeypatch.chdir(tmp_path)
    lists = tmp_path / "data" / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for name in ("train", "val", "train_aug", ".hidden"):
        (lists / f"{name}.txt").write_text("a\n")
    cfg = validate_config(
        {
            "datasets": {"mine": {"kind": "folder", "root": "data"}},
            "runs": {"r": {"dataset": "mine"}, "aug": {"dataset": "mine", "seg": {"train_split": "train_aug"}}},
        },
        schema,
    )
    from wsss.runtime.config import dataset_splits, run_config

    assert dataset_splits(cfg["datasets"]["mine"]) == ["train", "val", "train_aug"]
    r = run_config(cfg, "r")
    assert [r[s]["train_split"] for s in ("cls", "irn", "seg")] == ["train"] * 3 and r["cam"]["eval"] == {}
    assert run_config(cfg, "aug")["seg"]["train_split"] == "train_aug"


# The config surface's bad inputs, one row each: YAML text -> the one line validate_config raises (after
# "config.yaml: "). A new case is one row. Rows marked 18 passed validation on the old code (then deleted a user's
# folder, failed hours later at stage start, or crashed with a TypeError).
BAD_CONFIG = {
    # 18: a dataset root equal to, inside or containing an output folder
    "root is the output folder": (
        "datasets: {mine: {kind: folder, root: resources/mine}}\nruns: {r: {dataset: mine}}",
        "datasets.mine.root: 'resources/mine' overlaps the output folder 'resources/mine'",
    ),
    "root inside the output folder": (
        "datasets: {mine: {kind: folder, root: resources/mine/raw}}\nruns: {r: {dataset: mine}}",
        "datasets.mine.root: 'resources/mine/raw' overlaps the output folder 'resources/mine'",
    ),
    "root containing the outputs": (
        "datasets: {mine: {kind: folder, root: .}}\nruns: {r: {dataset: mine}}",
        "datasets.mine.root: '.' overlaps the output folder 'resources/coco'",
    ),
    "root inside results": (
        "datasets: {mine: {kind: folder, root: results/x}}\nruns: {r: {dataset: mine}}",
        "datasets.mine.root: 'results/x' overlaps the output folder 'results'",
    ),
    "coco root is another dataset's output": (
        "datasets: {mine: {kind: coco, root: resources/synth}}\nruns: {r: {dataset: mine}}",
        "datasets.mine.root: 'resources/synth' overlaps the output folder 'resources/synth'",
    ),
    "predict folder inside results": (
        "runs: {r: {dataset: synth}}\npredict: {new: results/r/predict}",
        "predict.new: 'results/r/predict' overlaps the output folder 'results'",
    ),
    # 18: cross-key constraints the stages checked at start
    "scale_range order": (
        "runs: {r: {dataset: synth, irn: {scale_range: [1.5, 0.5]}}}",
        "runs.r.irn.scale_range: [1.5, 0.5] must be [low, high] with low <= high",
    ),
    "resize_long order": (
        "runs: {r: {dataset: synth, cls: {resize_long: [640, 320]}}}",
        "runs.r.cls.resize_long: [640, 320] must be [low, high] with low <= high",
    ),
    "batch vs accumulate": (
        "runs: {r: {dataset: synth, seg: {batch_size: 10, accumulate: 3}}}",
        "runs.r.seg.batch_size: 10 does not split into seg.accumulate 3 micro-batches; make batch_size a multiple of 3",
    ),
    "batch vs gpus": (
        "runs: {r: {dataset: synth, cls: {batch_size: 6, gpus: 4}}}",
        "runs.r.cls.batch_size: 6 does not split into cls.accumulate 1 micro-batches on each of 4 GPUs (cls.gpus)",
    ),
    "irn crop vs radius": (
        "runs: {r: {dataset: synth, irn: {crop: 16, radius: 10}}}",
        "runs.r.irn.crop: 16 is too small for irn.radius 10: crop/4 must exceed 2*(radius-1), so crop > 72",
    ),
    "epochs auto without holdout": (
        "runs: {r: {dataset: synth, cls: {epochs: auto, holdout_fraction: 0}}}",
        "runs.r.cls.epochs: auto needs held-out images",
    ),
    "caffe style with imagenet weights": (
        "runs: {r: {dataset: synth, seg: {style: caffe, pretrained: imagenet}}}",
        "runs.r.seg.style: 'caffe' expects converted Caffe weights",
    ),
    # 18: names
    "number as a dataset name": (
        "runs: {r: {dataset: synth}}\ndatasets: {2024: {kind: synth}}",
        "datasets.2024: YAML reads this name as a int; names are strings: quote it ('2024':)",
    ),
    "boolean as a run name": ("runs: {yes: {dataset: synth}}", "runs.True: YAML reads this name as a bool"),
    "run name ending in a newline": ('runs: {"r\\n": {dataset: synth}}', "runs: 'r\\n' does not match"),
    "predict name ending in a newline": (
        'runs: {r: {dataset: synth}}\npredict: {"p\\n": photos}',
        "predict: 'p\\n' does not match",
    ),
    "dataset name ending in a newline": (
        'runs: {r: {dataset: synth}}\ndatasets: {"d\\n": {kind: synth}}',
        "datasets: 'd\\n' does not match",
    ),
    # earlier rows
    "wrong type": (
        "runs: {r: {dataset: synth}}\ndatasets: {synth: {seed: x}}",
        "datasets.synth.seed: 'x' is not of type 'integer'",
    ),
    "unknown dataset": ("runs: {r: {dataset: nope}}", "runs.r.dataset: 'nope' is not a dataset"),
    "conf thresholds order": (
        "runs: {r: {dataset: synth, irn: {conf_fg: 0.2, conf_bg: 0.3}}}",
        "runs.r.irn.conf_bg: 0.3 must be below irn.conf_fg 0.2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_bad_config_is_one_line(schema: dict, tmp_path: Path, monkeypatch, case: str) -> None:
    """Planted bugs: drop check_output_paths, check_stage_keys or _check_name_types, or the (?!\\n) of the
    name patterns: the issue-18 rows then validate (or raise a TypeError)."""
    text, expected = BAD_CONFIG[case]
    monkeypatch.chdir(tmp_path)  # relative roots start here
    with pytest.raises(InputError) as err:
        validate_config(yaml.safe_load(text), schema, "config.yaml")
    assert str(err.value).startswith(f"config.yaml: {expected}"), str(err.value)
    assert "\n" not in str(err.value).replace("\\n", "")
