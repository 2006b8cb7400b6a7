"""Typed stage configs (wsss/runtime/stage_config.py): every view field is a schema key, every schema key is read by some
stage view or by the Snakefile, and the rules send exactly the views' keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from wsss.methods import get_method, method_names
from wsss.runtime.config import load_schema, run_config, validate_config
from wsss.runtime.errors import InputError
from wsss.runtime.stage_config import RULE_KEYS, STAGES, TrainCls, parse_view, stage_params, view_keys

SCHEMA = load_schema(REPO / "schemas" / "config.schema.yaml")


def _section_keys(section: str) -> set[str]:
    node = SCHEMA["definitions"].get(section) or SCHEMA["properties"][section]
    return set(node["properties"])


def _read_keys() -> dict[str, set[str]]:
    read: dict[str, set[str]] = {}
    for view in STAGES.values():
        for section, keys in view_keys(view).items():
            read.setdefault(section, set()).update(keys)
    for name in method_names():
        read["cls"].update(get_method(name).cls_keys)
    return read


def test_every_view_field_is_a_schema_key() -> None:
    """Planted bug: a view field ``k_word`` (a typo of k_words) fails here."""
    for section, keys in _read_keys().items():
        assert keys <= _section_keys(section), (section, keys - _section_keys(section))


def test_every_schema_key_is_read_by_a_stage_or_the_dag() -> None:
    """Planted bug: dropping ``calibration_se`` from the calibrate view (the key would be configurable but read by
    nothing) fails here."""
    read = _read_keys()
    for section, rule_keys in RULE_KEYS.items():
        unread = _section_keys(section) - read.get(section, set()) - set(rule_keys)
        assert not unread, f"{section}: {sorted(unread)} read by no stage"
    summary = (REPO / "stages" / "summary.py").read_text()  # the rule sends the summary section whole
    assert all(f'params["{key}"]' in summary for key in _section_keys("summary"))


def test_the_stages_parse_exactly_what_the_rules_send() -> None:
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    for run in config["runs"]:
        cfg = run_config(config, run)
        for stage in STAGES:
            params = stage_params(stage, cfg, config)
            view = parse_view(stage, params)
            assert view.to_params() == params
    cam_run = run_config(config, "synth_cam")
    assert "k_words" not in stage_params("train_cls", cam_run, config)  # the cam method does not read it
    assert "k_words" in stage_params("train_cls", run_config(config, "synth"), config)
    calibrate = stage_params("calibrate", cam_run, config)
    assert set(calibrate["cam"]) == {"sweep", "calibration_images", "calibration_se", "bracket_area_ratio"}
    assert "lr" not in calibrate["cls"]  # a training key does not rerun calibration (the model does)


def test_a_missing_or_unknown_key_is_one_error() -> None:
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    params = stage_params("calibrate", run_config(config, "synth"), config)
    with pytest.raises(InputError, match=r"params.cam.sweep: required"):
        parse_view("calibrate", {**params, "cam": {k: v for k, v in params["cam"].items() if k != "sweep"}})
    with pytest.raises(InputError, match=r"unknown keys \['bogus'\]"):
        parse_view("calibrate", {**params, "bogus": 1})
    view = parse_view("train_cls", stage_params("train_cls", run_config(config, "synth"), config))
    assert isinstance(view, TrainCls) and view.batch_size == view["batch_size"]
    with pytest.raises(AttributeError):
        view.batch_size = 3  # type: ignore[misc]


def test_no_rule_lists_keys_itself() -> None:
    """The rules send stage_cfg(...) only: no hand-written key list or section dump remains."""
    for path in REPO.glob("rules/*.smk"):
        text = path.read_text()
        assert not re.search(r"_KEYS\b|run_cfg\(w\.run\)\[\"(cls|cam|irn|seg)\"\]\)", text), path.name
    params_lines = [
        line for p in REPO.glob("rules/*.smk") for line in p.read_text().splitlines() if re.match(r"\s+cfg=", line)
    ]
    allowed = re.compile(
        r"\s+cfg=(lambda w: stage_cfg\(\"\w+\", w\.run\)|lambda w: dataset_params"
        r"|as_json\(\{\*\*SUMMARY|lambda w: as_json\(\{\"run\"|lambda w: compare_cfg\(w\.name\))"
    )
    assert all(allowed.match(line) for line in params_lines), [line for line in params_lines if not allowed.match(line)]


def test_no_defaults_outside_the_schema() -> None:
    """Planted bug: ``params.get("accumulate", 1)`` back in stages/train_cls.py fails here."""
    pattern = re.compile(r"""(params|cfg|irn|seg|cam|cls)\.get\(["'][a-z_]+["'],""")
    for path in [*REPO.glob("stages/*.py"), *REPO.glob("wsss/**/*.py")]:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{number}: {line.strip()}"
    assert "CRF_DEFAULTS" not in (REPO / "wsss" / "pipeline" / "crf.py").read_text()
