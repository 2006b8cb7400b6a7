"""Config schema: defaults filled in, wrong types and unknown keys rejected with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsss.config import load_schema, validate_config
from wsss.errors import InputError


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
        ({"runs": {"r": {"dataset": "imagenet"}}}, "runs.r.dataset: 'imagenet' is not one of"),
    ],
)
def test_bad_values_name_the_key(schema: dict, patch: dict, message: str) -> None:
    cfg = {"runs": {"r": {"dataset": "synth"}}} | patch
    with pytest.raises(InputError) as err:
        validate_config(cfg, schema, "my.yaml")
    assert str(err.value).startswith("my.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_run_overrides_merge_over_section_defaults(schema: dict) -> None:
    from wsss.config import run_config

    raw = {"cls": {"lr": 0.05}, "runs": {"small": {"dataset": "synth", "cls": {"backbone": 18}}, "big": {"dataset": "voc"}}}
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
