"""The method registry (wsss/methods/): the schema, the stages' --method choices and the classifier build all read it.

A new method needs exactly these files: its module in wsss/methods/ (a registered Method), its cls keys in
schemas/config.schema.yaml (definitions.cls), its tests and a README line. test_a_new_method_needs_only_its_module
drops a toy method's module into the package and runs config validation, the stages' argparse, the classifier
build and the training objective through it without editing anything else.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import REPO, schema_section

import wsss.methods
from wsss.methods import get_method, method_argument, method_names, registry
from wsss.pipeline.classify import build_classifier
from wsss.runtime.config import load_schema, run_config, validate_config
from wsss.runtime.errors import InputError

SCHEMA = REPO / "schemas" / "config.schema.yaml"


def test_the_methods_are_registered() -> None:
    assert method_names() == ("cam", "recam", "vwl_l", "vwl_m")


def test_schema_enum_is_the_registry() -> None:
    """Planted bug: load_schema no longer filling the enum (the YAML has none) fails here."""
    assert load_schema(SCHEMA)["definitions"]["run"]["properties"]["method"]["enum"] == list(method_names())
    with pytest.raises(InputError, match="runs.r.method: 'nosuch' is not one of"):
        validate_config({"runs": {"r": {"dataset": "synth", "method": "nosuch"}}}, load_schema(SCHEMA))


def test_every_method_key_is_in_the_schema() -> None:
    """Planted bug: a method reading ``cls.k_word`` (not a schema key) fails here."""
    cls_keys = set(load_schema(SCHEMA)["definitions"]["cls"]["properties"])
    for name in method_names():
        assert set(get_method(name).cls_keys) <= cls_keys, name


def test_stages_take_the_method_choices_from_the_registry() -> None:
    """No stage or rule lists method names itself. Planted bug: choices=["vwl_l", "vwl_m", "cam"] back in
    stages/calibrate.py fails here."""
    users = []
    for path in sorted((REPO / "stages").glob("*.py")):
        text = path.read_text()
        if "--method" in text:
            raise AssertionError(f"{path.name} defines --method itself; use wsss.methods.method_argument")
        if "method_argument(parser)" in text:
            users.append(path.stem)
    assert users == ["calibrate", "calibrate_pseudo", "cam_gate", "infer_cam", "train_cls"]
    pattern = re.compile(r"""["'](vwl_l|vwl_m)["']""")
    for path in [*REPO.glob("rules/*.smk"), *REPO.glob("wsss/*.py"), *REPO.glob("stages/*.py")]:
        assert not pattern.search(path.read_text()), f"{path.relative_to(REPO)} names a method"
    parser = argparse.ArgumentParser()
    method_argument(parser)
    assert parser.parse_args(["--method", "vwl_m"]).method == "vwl_m"
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "nosuch"])


def test_readme_names_every_method() -> None:
    readme = (REPO / "README.md").read_text()
    for name in method_names():
        assert f"`{name}`" in readme, name


TOY = '''
"""A toy method for tests: the plain CAM network with a half-weight loss and a key check."""
from wsss.methods.registry import Method, register_method


@register_method
class Toy(Method):
    name = "toy"
    cls_keys = ("gamma",)

    def build(self, backbone, num_classes, cls):
        from wsss.models.vwl import CAMNet

        net = CAMNet(backbone, num_classes)
        net.toy_gamma = cls["gamma"]
        return net

    def check_config(self, cls):
        return "gamma: the toy method needs gamma >= 1" if cls["gamma"] < 1 else None
'''


@pytest.fixture
def toy_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Drop ``toy.py`` into the wsss.methods package (a folder on its __path__) and discover it; undone after."""
    (tmp_path / "toy.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(wsss.methods, "__path__", [*wsss.methods.__path__, str(tmp_path)])
    monkeypatch.delitem(__import__("sys").modules, "wsss.methods.toy", raising=False)
    registry.discover()
    return "toy"


def test_a_new_method_needs_only_its_module(toy_method: str) -> None:
    """Planted bug: config.check_runs calling no method's check_config fails the gamma check below."""
    assert toy_method in method_names()
    schema = load_schema(SCHEMA)
    config = validate_config({"runs": {"r": {"dataset": "synth", "method": "toy", "cls": {"gamma": 3.0}}}}, schema)
    assert run_config(config, "r")["method"] == "toy"
    with pytest.raises(InputError, match="runs.r.cls.gamma: the toy method needs gamma >= 1"):
        validate_config({"runs": {"r": {"dataset": "synth", "method": "toy", "cls": {"gamma": 0.5}}}}, schema)
    parser = argparse.ArgumentParser()
    method_argument(parser)
    assert parser.parse_args(["--method", "toy"]).method == "toy"
    params = schema_section("cls", backbone=10, pretrained="none", norm="batch", gamma=3.0)
    model = build_classifier(params, 2, "toy", pretrained=False)
    assert model.toy_gamma == 3.0
    objective = get_method("toy").objective(torch.device("cpu"), 0)
    batch = {"image": torch.randn(2, 3, 64, 64), "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    from wsss.engine.train import MicroBatch

    loss, parts = objective.loss(model, batch, MicroBatch(0, (0, 1), 2, None))
    assert loss.requires_grad and set(parts) == {"cls"}
    cams, scores = get_method("toy").cams_and_scores(model.eval(), batch["image"])
    assert cams.shape == (2, 2, 4, 4) and scores.shape == (2, 2)
