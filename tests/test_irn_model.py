"""IRNet (wsss.models.irn): output shapes, the frozen backbone, parameter groups, from_cls weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import schema_section

from wsss.engine.train import build_optimizer
from wsss.models.backbone import build_resnet, classifier_backbone_state
from wsss.models.irn import IRNet
from wsss.ops.path_index import PathIndex
from wsss.pipeline.classify import build_classifier
from wsss.pipeline.pseudo_labels import build_irn, irn_loss, optimizer_groups
from wsss.runtime.errors import InputError

CLS_PARAMS = schema_section(
    "cls", backbone=18, pretrained="none", norm="batch", k_words=8, gamma=2.0, tau=1.0, rho=1e-3
)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("size", [(64, 80), (50, 70)])
def test_branch_outputs_are_at_stride_4(depth: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_irn({"pretrained": "none", "pretrained_sha256": None, "backbone": depth}, cls_depth=18).eval()
    edge, disp = model(torch.randn(2, 3, *size))
    h4, w4 = (size[0] + 3) // 4, (size[1] + 3) // 4
    assert edge.shape == (2, 1, h4, w4) and disp.shape == (2, 2, h4, w4)
    assert torch.isfinite(edge).all() and torch.isfinite(disp).all()
    torch.testing.assert_close(model.edge_logits(torch.zeros(1, 3, *size)), model(torch.zeros(1, 3, *size))[0])


def test_backbone_stays_frozen_through_training_steps() -> None:
    """Even an ordinary-BatchNorm backbone keeps its weights and running statistics: eval mode, no grads."""
    torch.manual_seed(0)
    model = IRNet(build_resnet(18, norm="batch", freeze_stem=False))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = build_optimizer(optimizer_groups(model, 10.0), "sgd", 0.1, 1e-4, 0.9)
    model.train()
    assert model.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    path_index = PathIndex(10, 20, 20)
    labels = torch.randint(0, 3, (2, 20, 20))
    for _ in range(2):
        edge, disp = model(torch.randn(2, 3, 80, 80) * 3 + 1)
        loss = irn_loss(edge, disp, labels, path_index)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    edge_params, disp_params = model.param_groups()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge_params + disp_params)


def test_param_groups_split_the_trainable_parameters() -> None:
    model = build_irn({"pretrained": "none", "pretrained_sha256": None, "backbone": 18}, cls_depth=18)
    edge, disp = model.param_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in edge} | {id(p) for p in disp} == trainable
    assert not {id(p) for p in edge} & {id(p) for p in disp}
    assert len(edge) == 5 * 3 + 2  # five units (conv weight, GroupNorm weight and bias) + the output conv with bias
    assert len(disp) == 7 * 3 + 1  # seven units + the output conv without bias
    groups = build_optimizer(optimizer_groups(model, 10.0), "sgd", 0.1, 1e-4, 1e-4).param_groups
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.1, 1.0])


def test_from_cls_loads_the_classifier_backbone_exactly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    classifier = build_classifier(CLS_PARAMS, num_classes=3, method="vwl_l", pretrained=False)
    with torch.no_grad():  # distinctive BatchNorm statistics, so equality is not the default init
        for module in classifier.backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    path = tmp_path / "model.pt"
    torch.save(classifier.state_dict(), path)
    torch.manual_seed(2)
    model = build_irn(
        {"pretrained": "from_cls", "pretrained_sha256": None, "backbone": 50}, cls_depth=18, cls_model=path
    )
    assert model.backbone.depth == 18  # from_cls takes the classifier's depth
    source = classifier.backbone.state_dict()
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(source)
    for key, value in source.items():
        assert torch.equal(loaded[key], value), key
    scratch = build_irn(
        {"pretrained": "none", "pretrained_sha256": None, "backbone": 18}, cls_depth=18
    ).backbone.state_dict()
    assert not torch.equal(scratch["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])


def test_classifier_backbone_keys_strip_prefixes() -> None:
    state = {
        "module.backbone.conv1.weight": torch.ones(1),
        "backbone.layer1.x": torch.zeros(1),
        "classifier.weight": torch.ones(2),
    }
    assert set(classifier_backbone_state(state, "m.pt")) == {"conv1.weight", "layer1.x"}
    with pytest.raises(InputError, match="no backbone"):
        classifier_backbone_state({"classifier.weight": torch.ones(2)}, "m.pt")


def test_from_cls_with_a_wrong_depth_is_an_input_error(tmp_path: Path) -> None:
    classifier = build_classifier(CLS_PARAMS, num_classes=3, method="cam", pretrained=False)
    path = tmp_path / "model.pt"
    torch.save(classifier.state_dict(), path)
    with pytest.raises(InputError, match="ResNet-34"):
        build_irn({"pretrained": "from_cls", "pretrained_sha256": None, "backbone": 18}, cls_depth=34, cls_model=path)
    with pytest.raises(InputError, match="from_cls"):
        build_irn({"pretrained": "from_cls", "pretrained_sha256": None, "backbone": 18}, cls_depth=18, cls_model=None)
