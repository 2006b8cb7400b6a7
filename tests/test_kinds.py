"""The dataset-kind registry (wsss/data/kinds.py): the schema's kind enum and per-kind definitions, the splits, the
preparer's inputs and the single prepare rule all come from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

from wsss.data.kinds import builtin_datasets, dataset_splits, get_kind, kind_names, preparer_params
from wsss.runtime.config import load_schema, run_config, validate_config
from wsss.runtime.errors import InputError

SCHEMA = REPO / "schemas" / "config.schema.yaml"


def test_the_four_kinds_are_registered_with_a_schema_definition_each() -> None:
    schema = load_schema(SCHEMA)
    assert kind_names() == ("synth", "voc", "coco", "folder") and builtin_datasets() == ("synth", "voc", "coco")
    assert schema["definitions"]["dataset"]["properties"]["kind"]["enum"] == list(kind_names())
    for kind in kind_names():
        assert schema["definitions"][kind]["properties"]["kind"] == {"const": kind}


def test_each_kind_validates_against_its_own_definition() -> None:
    """Planted bug: load_schema leaving out the per-kind allOf lets the synth typo below through."""
    schema = load_schema(SCHEMA)
    with pytest.raises(InputError, match="datasets.synth: Additional properties are not allowed .'num_clases'"):
        validate_config({"datasets": {"synth": {"num_clases": 3}}, "runs": {"r": {"dataset": "synth"}}}, schema)
    with pytest.raises(InputError, match="is not one of"):
        validate_config({"datasets": {"x": {"kind": "nosuch"}}, "runs": {"r": {"dataset": "synth"}}}, schema)


def test_splits_and_inputs_come_from_the_kind(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "extra.txt").write_text("a\n")
    config = validate_config(
        {
            "datasets": {
                "own": {"kind": "folder", "root": str(tmp_path)},
                "coco": {"subsets": {"s1": {"images": "i", "annotations": "a.json"}}},
            },
            "runs": {"r": {"dataset": "own"}},
        },
        load_schema(SCHEMA),
    )
    datasets = config["datasets"]
    assert dataset_splits(datasets["own"]) == ["train", "val", "extra"]
    assert dataset_splits(datasets["synth"]) == ["train_aug", "train", "val"]
    assert dataset_splits(datasets["voc"]) == ["train_aug", "train", "val"]
    assert dataset_splits(datasets["coco"]) == ["s1"]
    assert run_config(config, "r")["cls"]["train_split"] == "train"
    assert get_kind("folder").inputs(datasets["own"]) == [
        str(tmp_path / "images"),
        str(tmp_path / "ImageSets" / "Segmentation"),
    ]
    assert get_kind("synth").inputs(datasets["synth"]) == []
    assert "kind" not in preparer_params(datasets["own"]) and "texture_scale" not in preparer_params(datasets["synth"])
    assert get_kind("voc").local and not get_kind("synth").local
    assert get_kind("coco").threads(dict(datasets["coco"], workers=3)) == 3


def test_one_prepare_rule_and_no_kind_names_outside_the_registry() -> None:
    """Planted bug: a copied ``rule prepare_voc`` or ``entry["kind"] == "synth"`` in a rule fails here."""
    rules = "".join(path.read_text() for path in REPO.glob("rules/*.smk"))
    assert re.findall(r"^rule (prepare\w*)", rules, re.M) == ["prepare_dataset"]
    for path in REPO.glob("rules/*.smk"):
        assert not re.search(r"""["'](synth|voc|coco|folder)["']""", path.read_text()), path.name
    assert not list((REPO / "stages").glob("prepare_[!d]*.py"))
