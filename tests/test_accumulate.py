"""Gradient accumulation and bfloat16 autocast in wsss.engine.train.fit: ``accumulate`` micro-batches give the update of
the whole batch (per-sample means, pixel- and pair-normalised losses, the VWL-M memory bank), and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NoisyRegression, interrupt_at, schema_section

from wsss.engine.train import (
    AMP_DTYPE,
    Checkpoint,
    autocast_enabled,
    build_optimizer,
    check_batch_split,
    fit,
    load_state_dict_file,
    split_batch,
    training_autocast,
)
from wsss.models.deeplab import build_deeplab
from wsss.ops.path_index import PathIndex
from wsss.pipeline.classify import ClassifierObjective, build_classifier
from wsss.pipeline.classify import optimizer_groups as cls_groups
from wsss.pipeline.pseudo_labels import irn_loss, pair_label_counts
from wsss.pipeline.segment import SegObjective, msc_label_counts, msc_loss, output_names, output_sizes
from wsss.runtime.errors import InputError
from wsss.runtime.io import IGNORE

CPU = torch.device("cpu")
CLS = schema_section(
    "cls",
    backbone=18,
    pretrained="none",
    norm="fixed",
    freeze_stem=False,
    detach_stage2=False,
    k_words=8,
    gamma=2.0,
    tau=1.0,
    rho=0.1,
)


class _Images(torch.utils.data.Dataset):
    """Random images with segmentation labels whose ignore (255) share differs per image (so per-micro-batch
    pixel means would differ from the global one) and multi-hot image labels."""

    def __init__(self, n: int = 8, size: int = 32, classes: int = 3) -> None:
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, classes, (n, size, size), generator=g)
        for i in range(n):
            self.labels[i, : (i * size) // n] = IGNORE
        self.tags = (torch.rand(n, classes - 1, generator=g) > 0.5).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i, _ = key
        return {"image": self.images[i], "label": self.labels[i], "labels": self.tags[i], "id": f"im{i}"}


def _fit(
    tmp: Path,
    model,
    objective,
    dataset,
    *,
    batch_size: int,
    accumulate: int,
    steps: int = 3,
    lr: float = 0.05,
    groups=None,
    fail_at: int | None = None,
    amp: bool = False,
) -> tuple[dict, str]:
    opt = build_optimizer(groups or [{"params": model.parameters()}], "sgd", lr, 1e-4, 0.9)
    fit(
        model,
        dataset,
        interrupt_at(objective, fail_at),
        opt,
        batch_size=batch_size,
        max_steps=steps,
        seed=3,
        checkpoint=tmp / "ckpt.pt",
        checkpoint_every=2,
        final_weights=tmp / "model.pt",
        log_csv=tmp / "log.csv",
        device=CPU,
        fingerprint="f",
        accumulate=accumulate,
        amp=amp,
    )
    return load_state_dict_file(tmp / "model.pt"), (tmp / "log.csv").read_text()


def _mse(model, batch, step):
    loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
    return loss, {"mse": loss.item()}


def _assert_same_run(a: tuple[dict, str], b: tuple[dict, str], tol: float = 1e-5) -> None:
    for key in a[0]:
        torch.testing.assert_close(a[0][key], b[0][key], rtol=tol, atol=tol, msg=key)
    rows_a, rows_b = a[1].splitlines(), b[1].splitlines()
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        np.testing.assert_allclose([float(v) for v in ra.split(",")], [float(v) for v in rb.split(",")], rtol=1e-4)


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def test_accumulated_mean_loss_equals_the_whole_batch_and_resumes_exactly(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "a1", _linear(), _mse, NoisyRegression(), batch_size=8, accumulate=1, steps=6)
    acc = _fit(tmp_path / "a4", _linear(), _mse, NoisyRegression(), batch_size=8, accumulate=4, steps=6)
    _assert_same_run(whole, acc, tol=1e-6)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "r", _linear(), _mse, NoisyRegression(), batch_size=8, accumulate=4, steps=6, fail_at=5)
    assert Checkpoint.load(tmp_path / "r" / "ckpt.pt").step == 4
    resumed = _fit(tmp_path / "r", _linear(), _mse, NoisyRegression(), batch_size=8, accumulate=4, steps=6)
    for key in acc[0]:
        torch.testing.assert_close(resumed[0][key], acc[0][key], rtol=0, atol=0)
    assert resumed[1] == acc[1]


def test_batch_split_is_checked() -> None:
    check_batch_split("seg", 10, 2, 1)
    check_batch_split("seg", 8, 2, 2)
    with pytest.raises(InputError, match="config: seg.batch_size: 10 does not split into 2 micro-batch"):
        check_batch_split("seg", 10, 2, 2)
    parts = split_batch({"x": torch.arange(6), "id": list("abcdef")}, 3)
    assert [p["id"] for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert torch.equal(parts[2]["x"], torch.tensor([4, 5]))


def _deeplab(norm: str = "fixed"):
    torch.manual_seed(0)
    return build_deeplab(3, depth=18, weights="none", norm=norm, rates=[1, 2], msc_scales=[0.5, 0.75])


@pytest.mark.parametrize("style", ["torchvision", "caffe"])
def test_msc_label_counts_use_the_output_sizes(style: str) -> None:
    torch.manual_seed(0)
    depth = 50 if style == "caffe" else 18  # the Caffe layout (ceil-mode pooling) needs bottleneck blocks
    model = build_deeplab(3, depth=depth, weights="none", style=style, rates=[1], msc_scales=[0.5, 0.75]).train()
    labels = torch.randint(0, 3, (2, 29, 35))
    labels[0, :5] = IGNORE
    outputs = model(torch.randn(2, 3, 29, 35))
    assert [tuple(o.shape[-2:]) for o in outputs] == output_sizes(model, 29, 35)
    counts = msc_label_counts(model, labels)
    halves = msc_label_counts(model, labels[:1]) + msc_label_counts(model, labels[1:])
    torch.testing.assert_close(halves, counts)
    whole, _ = msc_loss(outputs, labels, output_names(model))
    shares = [
        msc_loss([o[i : i + 1] for o in outputs], labels[i : i + 1], output_names(model), totals=counts)[0]
        for i in range(2)
    ]
    torch.testing.assert_close(shares[0] + shares[1], whole)


def test_seg_accumulation_matches_the_whole_batch_with_uneven_ignore_pixels(tmp_path: Path) -> None:
    runs = []
    for accumulate in (1, 2):
        model = _deeplab()
        runs.append(
            _fit(
                tmp_path / f"a{accumulate}",
                model,
                SegObjective(CPU, "sum"),
                _Images(),
                batch_size=4,
                accumulate=accumulate,
                lr=0.01,
                groups=model.param_groups(10, 20),
            )
        )
    _assert_same_run(*runs, tol=2e-5)


def test_irn_pair_normalised_shares_sum_to_the_whole_batch() -> None:
    torch.manual_seed(0)
    index = PathIndex(3, 12, 12)
    edge = torch.randn(4, 1, 12, 12, requires_grad=True)
    disp = torch.randn(4, 2, 12, 12, requires_grad=True)
    labels = torch.randint(0, 3, (4, 12, 12))
    labels[0, :6] = IGNORE
    labels[3] = 0
    whole = irn_loss(edge, disp, labels, index)
    grads_whole = torch.autograd.grad(whole["total"], [edge, disp])
    totals = pair_label_counts(index.pair_labels(labels[:2])) + pair_label_counts(index.pair_labels(labels[2:]))
    shares = [irn_loss(edge[s], disp[s], labels[s], index, totals) for s in (slice(0, 2), slice(2, 4))]
    for name in whole:
        torch.testing.assert_close(shares[0][name] + shares[1][name], whole[name], msg=name)
    grads_shares = torch.autograd.grad(shares[0]["total"] + shares[1]["total"], [edge, disp])
    for a, b in zip(grads_whole, grads_shares):
        torch.testing.assert_close(a, b)
    naive = (
        irn_loss(edge[:2], disp[:2], labels[:2], index)["total"] / 2
        + irn_loss(edge[2:], disp[2:], labels[2:], index)["total"] / 2
    )
    assert not torch.allclose(naive, whole["total"])  # the counts really are needed


def test_vwl_m_accumulation_matches_the_whole_batch(tmp_path: Path) -> None:
    """Fixed BatchNorm: the memory bank (re-initialised at step 0, updated after) and the weights agree."""
    runs, banks = [], []
    for accumulate in (1, 2):
        torch.manual_seed(0)
        model = build_classifier(CLS, 2, "vwl_m")
        runs.append(
            _fit(
                tmp_path / f"a{accumulate}",
                model,
                ClassifierObjective(CPU, 5),
                _Images(8, size=64),
                batch_size=4,
                accumulate=accumulate,
                lr=0.01,
                groups=cls_groups(model, 10.0),
            )
        )
        banks.append(model.codebook.clone())
    assert int(runs[0][0]["bank_updates"]) == 3
    _assert_same_run(*runs, tol=2e-5)
    torch.testing.assert_close(banks[0], banks[1], rtol=1e-5, atol=1e-6)


def test_autocast_decision() -> None:
    cuda = torch.device("cuda", 0)
    assert autocast_enabled(cuda, True, bf16_supported=lambda: True)
    assert not autocast_enabled(cuda, False, bf16_supported=lambda: True)
    assert not autocast_enabled(cuda, True, bf16_supported=lambda: False)
    assert not autocast_enabled(CPU, True, bf16_supported=lambda: True)
    assert torch.bfloat16 == AMP_DTYPE


def test_fit_runs_the_forward_under_the_autocast_it_decides(tmp_path: Path, monkeypatch) -> None:
    """CPU: no autocast even with amp. With the decision forced on (as on a bf16 GPU) the step runs under
    bfloat16 autocast of the training device, and the backward outside it."""
    seen = []

    def step(model, batch, step):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return _mse(model, batch, step)

    _fit(tmp_path / "off", _linear(), step, NoisyRegression(), batch_size=4, accumulate=2, steps=1, amp=True)
    assert [s[0] for s in seen] == [False, False]
    seen.clear()
    monkeypatch.setattr("wsss.engine.train.autocast_enabled", lambda device, amp: amp)
    _fit(tmp_path / "on", _linear(), step, NoisyRegression(), batch_size=4, accumulate=2, steps=1, amp=True)
    assert seen == [(True, torch.bfloat16)] * 2
    with training_autocast(CPU, False):
        assert not torch.is_autocast_enabled("cpu")
