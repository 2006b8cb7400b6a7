"""Training machinery: poly LR, the step-indexed sampler, and exact resume after an interrupted run."""

from __future__ import annotations

import os
import random
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NoisyRegression

from wsss.engine.train import (
    Checkpoint,
    MicroBatch,
    Objective,
    StepBatchSampler,
    autocast_enabled,
    build_optimizer,
    check_batch_split,
    epoch_permutation,
    fit,
    load_state_dict_file,
    poly_lr,
    resolve_device,
    save_state_dict,
    seed_everything,
    set_poly_lr,
    split_batch,
    training_autocast,
)
from wsss.runtime.errors import InputError


def test_poly_lr_known_values() -> None:
    assert poly_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert poly_lr(0.1, 50, 100, power=1.0) == pytest.approx(0.05)
    assert poly_lr(0.01, 3965, 3966) == pytest.approx(0.01 * (1 / 3966) ** 0.9)


def test_optimizer_groups_carry_multipliers() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_mult": 10.0}], "sgd", 0.01, 1e-4, 1e-4)
    assert [g["initial_lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])
    assert opt.param_groups[0]["momentum"] == 1e-4


def test_sampler_covers_epochs_and_is_a_function_of_step() -> None:
    s = StepBatchSampler(num_items=10, batch_size=3, seed=7, max_steps=6)
    batches = list(s)
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)
    first_epoch = [i for b in batches[:3] for i, _ in b]
    assert len(set(first_epoch)) == 9  # drop_last: 3 steps per epoch, no repeats inside an epoch
    resumed = list(StepBatchSampler(10, 3, 7, 6, start_step=4))
    assert resumed == batches[4:]
    seeds = [sd for b in batches for _, sd in b]
    assert len(set(seeds)) == len(seeds)
    assert list(StepBatchSampler(10, 3, 8, 6)) != batches


def test_sampler_ranks_partition_the_global_batch() -> None:
    full = list(StepBatchSampler(20, 4, 1, 5))
    r0 = list(StepBatchSampler(20, 4, 1, 5, rank=0, world_size=2))
    r1 = list(StepBatchSampler(20, 4, 1, 5, rank=1, world_size=2))
    for g, a, b in zip(full, r0, r1):
        assert sorted(a + b) == sorted(g) and not set(a) & set(b)


def _step(model, batch, step):
    loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
    return loss, {"mse": loss.item()}


def _run(tmp: Path, fail_at: int | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 1e-4, 0.9)

    def step_fn(m, batch, step):
        if step == fail_at:
            raise KeyboardInterrupt("killed")
        return _step(m, batch, step)

    fit(
        model,
        NoisyRegression(),
        step_fn,
        opt,
        batch_size=4,
        max_steps=20,
        seed=3,
        checkpoint=tmp / "ckpt.pt",
        checkpoint_every=5,
        final_weights=tmp / "model.pt",
        log_csv=tmp / "log.csv",
        device=torch.device("cpu"),
        fingerprint="f1",
    )
    return load_state_dict_file(tmp / "model.pt")


def test_resume_after_interruption_gives_identical_weights(tmp_path: Path) -> None:
    straight = _run(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", fail_at=13)
    ckpt = Checkpoint.load(tmp_path / "b" / "ckpt.pt")
    assert ckpt.step == 10 and not (tmp_path / "b" / "model.pt").exists()
    resumed = _run(tmp_path / "b")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)
    log_a = (tmp_path / "a" / "log.csv").read_text()
    assert log_a == (tmp_path / "b" / "log.csv").read_text()
    assert log_a.splitlines()[0] == "step,lr,loss,mse" and len(log_a.splitlines()) == 21
    assert not (tmp_path / "b" / "ckpt.pt").exists()


def test_checkpoint_of_other_params_is_ignored(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 1)
    Checkpoint({k: v * 0 + 5 for k, v in model.state_dict().items()}, {}, 19, {"fingerprint": "other"}).save(
        tmp_path / "ckpt.pt"
    )
    weights = _run(tmp_path)
    assert not torch.all(weights["weight"] == 5)


def test_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="ckpt.pt: cannot load checkpoint"):
        Checkpoint.load(tmp_path / "ckpt.pt")


def test_fit_logs_the_poly_schedule_computed_by_hand(tmp_path: Path) -> None:
    """The lr logged at step s is 0.05·(1 − s/7)^0.9 (the first group's); a ×10 group follows the same curve."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    head = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": model.parameters()}, {"params": [head], "lr_mult": 10.0}], "sgd", 0.05, 0.0, 0.0)
    seen = []

    def step_fn(m, batch, step):
        seen.append([g["lr"] for g in opt.param_groups])
        loss, parts = _step(m, batch, step)
        return loss + 0 * head.sum(), parts

    fit(
        model,
        NoisyRegression(),
        step_fn,
        opt,
        batch_size=4,
        max_steps=7,
        seed=3,
        checkpoint=tmp_path / "ckpt.pt",
        checkpoint_every=100,
        final_weights=tmp_path / "model.pt",
        log_csv=tmp_path / "log.csv",
        device=torch.device("cpu"),
        fingerprint="f",
        poly_power=0.9,
    )
    rows = [line.split(",") for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    hand = [0.05 * (1.0 - s / 7) ** 0.9 for s in range(7)]  # 0.05, 0.04352, …, 0.008677
    assert [int(r[0]) for r in rows] == list(range(7))
    assert [float(r[1]) for r in rows] == pytest.approx(hand, rel=1e-5)
    assert hand[-1] == pytest.approx(0.0086772, rel=1e-4)
    assert [lr for pair in seen for lr in pair] == pytest.approx([x for h in hand for x in (h, 10 * h)], rel=1e-12)


def test_non_finite_loss_raises_and_writes_no_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 1e-4, 0.9)
    before = {}

    def step_fn(m, batch, step):
        loss, parts = _step(m, batch, step)
        if step == 3:
            before.update({k: v.clone() for k, v in m.state_dict().items()})
            return loss * float("nan"), parts
        return loss, parts

    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        fit(
            model,
            NoisyRegression(),
            step_fn,
            opt,
            batch_size=4,
            max_steps=10,
            seed=3,
            checkpoint=tmp_path / "ckpt.pt",
            checkpoint_every=2,
            final_weights=tmp_path / "model.pt",
            log_csv=tmp_path / "log.csv",
            device=torch.device("cpu"),
            fingerprint="f",
        )
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "log.csv").exists()
    assert Checkpoint.load(tmp_path / "ckpt.pt").step == 2  # the last good state stays resumable
    for k, v in model.state_dict().items():  # the NaN gradients were never applied
        assert torch.equal(v, before[k]) and torch.isfinite(v).all()


class _MovesToFloat64(torch.nn.Linear):
    """A stand-in for a model moved to another device: ``fit``'s ``model.to(device)`` makes it float64 (a dtype,
    like a device, that ``Optimizer.load_state_dict`` casts the loaded state to from the parameters it sees then)."""

    def to(self, *args, **kwargs):
        return super().to(torch.float64)


def _state_off_its_parameter(optimizer: torch.optim.Optimizer) -> list[str]:
    """Optimizer state tensors not on their parameter's device and dtype (``step`` counters stay CPU scalars)."""
    bad = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and key != "step" and (value.device, value.dtype) != (p.device, p.dtype):
                    bad.append(f"{key}: {value.device}/{value.dtype} vs parameter {p.device}/{p.dtype}")
    return bad


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("where", ["float64_stand_in", "cuda"])
def test_resumed_optimizer_state_follows_the_parameters_device(tmp_path: Path, name: str, where: str) -> None:
    """Resume onto another device (CUDA, or a float64 move observable on CPU): before the first step every optimizer
    state tensor sits with its parameter. Fails when fit loads the optimizer state before moving the model (the
    state then stays where the CPU-built parameters were, and the first CUDA step meets two devices)."""
    if where == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    source = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": source.parameters()}], name, 0.05, 1e-4, 0.9)
    batch = NoisyRegression()[(0, 1)]
    loss, _ = _step(source, {"x": batch["x"][None], "y": batch["y"][None]}, 0)
    loss.backward()
    opt.step()
    assert opt.state_dict()["state"], "the checkpoint must carry optimizer state"
    Checkpoint(source.state_dict(), opt.state_dict(), 2, {"fingerprint": "f1"}).save(tmp_path / "ckpt.pt")

    model = (_MovesToFloat64 if where == "float64_stand_in" else torch.nn.Linear)(4, 1)
    device = torch.device("cuda" if where == "cuda" else "cpu")
    resumed = build_optimizer([{"params": model.parameters()}], name, 0.05, 1e-4, 0.9)
    seen: list[list[str]] = []
    original_step = resumed.step

    def checked_step(*args, **kwargs):
        seen.append(_state_off_its_parameter(resumed))
        return original_step(*args, **kwargs)

    resumed.step = checked_step

    def step_fn(m, b, step):
        p = next(m.parameters())
        return _step(m, {k: v.to(p.device, p.dtype) for k, v in b.items()}, step)

    fit(
        model,
        NoisyRegression(),
        step_fn,
        resumed,
        batch_size=4,
        max_steps=4,
        seed=3,
        checkpoint=tmp_path / "ckpt.pt",
        checkpoint_every=5,
        final_weights=tmp_path / "model.pt",
        log_csv=tmp_path / "log.csv",
        device=device,
        fingerprint="f1",
    )
    assert len(seen) == 2, "fit resumes at step 2 of 4"
    assert seen[0] == [], seen[0]
    assert _state_off_its_parameter(resumed) == []


def test_fit_learns_a_learnable_problem_loss_falls_tenfold_and_weights_move(tmp_path: Path) -> None:
    """A loop that does not train must fail here. On NoisyRegression (y = x·[1, −2, 0.5, 3], input noise σ 0.1) a
    linear model trained 40 steps of SGD lr 0.05 from zero weights: the mean loss of the last 5 steps is at least 10×
    below that of the first 5 (measured: 46×), every trained weight moved, and the final weights are within
    0.5 of the true coefficients. Mutants killed: ``optimizer.step()`` removed from ``fit`` (loss flat, weights
    unchanged), ``optimizer.zero_grad`` removed (gradients pile up: diverges), the loss not backpropagated."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 0.0, 0.9)
    fit(
        model,
        NoisyRegression(),
        _step,
        opt,
        batch_size=4,
        max_steps=40,
        seed=3,
        checkpoint=tmp_path / "ckpt.pt",
        checkpoint_every=1000,
        final_weights=tmp_path / "model.pt",
        log_csv=tmp_path / "log.csv",
        device=torch.device("cpu"),
        fingerprint="f",
        poly_power=0.9,
    )
    losses = [float(line.split(",")[2]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 10, f"loss fell only from {first:.4g} to {last:.4g}"
    saved = load_state_dict_file(tmp_path / "model.pt")
    for k, v in saved.items():
        assert (v - before[k]).abs().min() > 1e-3, f"{k} did not move"
    torch.testing.assert_close(saved["weight"].squeeze(0), torch.tensor([1.0, -2.0, 0.5, 3.0]), rtol=0, atol=0.5)


# --- mutation testing (issue 23): each test below names the mutants of wsss/engine/train.py it kills ---------------


def _fit_linear(
    tmp: Path, step_fn, *, steps: int = 4, batch_size: int = 4, data=None, **kwargs
) -> tuple[torch.nn.Module, dict]:
    """A zero-initialised linear model fitted on NoisyRegression with SGD (lr 0.05, momentum 0.9)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 0.0, 0.9)
    options = {
        "seed": 3,
        "checkpoint": tmp / "ckpt.pt",
        "checkpoint_every": 1000,
        "final_weights": tmp / "model.pt",
        "log_csv": tmp / "log.csv",
        "device": torch.device("cpu"),
        "fingerprint": "f",
        **kwargs,
    }
    data = NoisyRegression() if data is None else data
    result = fit(model, data, step_fn, opt, batch_size=batch_size, max_steps=steps, **options)
    return model, result


def test_seed_everything_seeds_every_generator() -> None:
    """Known answers: after seed_everything(s) python, numpy (seed mod 2**32) and torch draw what a fresh generator
    seeded the same way draws. Kills: any of the three seeds dropped or changed, ``% 2**32`` changed (2**32 + 5 must
    seed numpy with 5), cuDNN flags flipped."""
    seed = 2**32 + 5
    seed_everything(seed)
    drawn = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    assert drawn[0] == random.Random(seed).random()
    assert drawn[1] == np.random.RandomState(5).random_sample()
    assert drawn[2] == torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False


def test_resolve_device(monkeypatch) -> None:
    """auto → cpu without CUDA, cuda with it; an explicit cuda without a GPU is a one-line config error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError) as err:
        resolve_device("cuda:1")
    assert (err.value.path, err.value.problem) == (
        "config: device",
        "'cuda:1' requested but no CUDA device is available",
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_autocast_decision_and_context(monkeypatch, caplog) -> None:
    """bfloat16 autocast only with amp on a CUDA device that supports bfloat16 (the default probe is
    torch.cuda.is_bf16_supported); a GPU without bfloat16 is warned about; the context is a no-op when off."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_enabled(cuda, True) is True
    assert autocast_enabled(torch.device("cpu"), True) is False
    assert autocast_enabled(cuda, False) is False
    with caplog.at_level("WARNING", logger="wsss.engine.train"):
        assert autocast_enabled(cuda, True, bf16_supported=lambda: False) is False
    assert [r.getMessage() for r in caplog.records] == [
        "amp requested but this GPU has no bfloat16 support: training in float32"
    ]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_enabled(cuda, True) is False
    with training_autocast(torch.device("cpu"), True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with training_autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")


def test_poly_lr_default_power_and_set_poly_lr() -> None:
    """The default power is 0.9 in both; set_poly_lr decays each group from its own initial_lr."""
    assert poly_lr(1.0, 1, 2) == pytest.approx(0.5**0.9)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_mult": 4.0}], "sgd", 0.1, 0.0, 0.0)
    set_poly_lr(opt, 1, 2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * 0.5**0.9, 0.4 * 0.5**0.9], rel=1e-12)
    set_poly_lr(opt, 1, 4, power=2.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * 0.75**2, 0.4 * 0.75**2], rel=1e-12)


def test_build_optimizer_groups_decay_frozen_and_names() -> None:
    """Frozen parameters and empty groups are dropped; a group's own weight_decay wins over the default; SGD gets the
    momentum, AdamW the lr and decay; an unknown name is an error naming it."""
    a, b, frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    frozen.requires_grad_(False)
    groups = [{"params": [a, frozen]}, {"params": [frozen]}, {"params": [b], "lr_mult": 2.0, "weight_decay": 0.0}]
    sgd = build_optimizer(groups, "sgd", 0.1, 1e-3, 0.9)
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 2
    assert [len(g["params"]) for g in sgd.param_groups] == [1, 1] and sgd.param_groups[0]["params"][0] is a
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-3, 0.0]
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.1, 0.2])
    assert [g["momentum"] for g in sgd.param_groups] == [0.9, 0.9]
    adamw = build_optimizer(groups, "adamw", 0.1, 1e-3, 0.9)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([0.1, 0.2])
    assert [g["initial_lr"] for g in adamw.param_groups] == pytest.approx([0.1, 0.2])
    assert [g["weight_decay"] for g in adamw.param_groups] == [1e-3, 0.0]
    with pytest.raises(ValueError, match="^unknown optimizer 'lbfgs'$"):
        build_optimizer(groups, "lbfgs", 0.1, 1e-3, 0.9)


def test_sampler_known_batches_seeds_length_and_errors() -> None:
    """Batch t is slice t mod steps_per_epoch of epoch_permutation(t // steps_per_epoch); aug seed =
    seed·1000003 + step·batch_size + slot; len is the steps left; too few items or an uneven rank split are errors."""
    s = StepBatchSampler(num_items=7, batch_size=3, seed=11, max_steps=5, start_step=1)
    assert len(s) == 4 and len(StepBatchSampler(7, 3, 11, 5, start_step=9)) == 0
    for step in range(5):
        epoch, k = divmod(step, 2)
        order = epoch_permutation(7, 11, epoch)[3 * k : 3 * k + 3]
        assert s.global_batch(step) == [(int(i), 11 * 1_000_003 + step * 3 + j) for j, i in enumerate(order)]
    assert list(s) == [s.global_batch(t) for t in range(1, 5)]
    assert epoch_permutation(7, 11, 0).tolist() == np.random.default_rng([11, 0]).permutation(7).tolist()
    assert sorted(epoch_permutation(7, 11, 1).tolist()) == list(range(7))
    assert list(StepBatchSampler(8, 4, 1, 2, rank=1, world_size=2)) == [
        StepBatchSampler(8, 4, 1, 2).global_batch(t)[1::2] for t in range(2)
    ]
    StepBatchSampler(3, 3, 0, 1)  # exactly one batch is enough
    with pytest.raises(ValueError, match="^2 training items are fewer than one batch of 3$"):
        StepBatchSampler(2, 3, 0, 1)
    with pytest.raises(ValueError, match="^batch size 3 is not divisible by 2 processes$"):
        StepBatchSampler(8, 3, 0, 1, world_size=2)


def test_check_batch_split_and_split_batch() -> None:
    """The global batch must split into accumulate micro-batches per process (one-line config error naming the
    key); split_batch cuts consecutive equal parts and refuses ragged or uneven batches."""
    check_batch_split("seg", 8, 2, 2)
    check_batch_split("seg", 8, 1, 1)
    for accumulate, world in ((0, 1), (3, 1), (2, 3)):
        with pytest.raises(InputError) as err:
            check_batch_split("seg", 8, accumulate, world)
        assert err.value.path == "config: seg.batch_size"
        assert err.value.problem == (
            f"8 does not split into {accumulate} micro-batch(es) on each of {world} process(es)"
        )
    with pytest.raises(InputError, match="6 does not split into 1 micro-batch"):
        check_batch_split("seg", 6, 1, 4)  # 4 processes: 6 % 4 (a world-size quotient would pass)
    batch = {"x": torch.arange(6), "names": list("abcdef")}
    assert split_batch(batch, 1)[0] is batch
    parts = split_batch(batch, 3)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert [p["names"] for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"]]
    with pytest.raises(ValueError, match=r"^cannot split a batch with entry lengths \[6\] into 4 equal parts$"):
        split_batch(batch, 4)
    with pytest.raises(ValueError, match=r"entry lengths \[5, 6\] into 2"):
        split_batch({"x": torch.arange(6), "y": torch.arange(5)}, 2)


def test_state_dict_files_and_checkpoint_round_trip(tmp_path: Path) -> None:
    """load_state_dict_file reads bare state dicts and {"model": ...} checkpoints; anything else, or an unreadable
    file, is an InputError naming the file; a checkpoint round-trips with its step and extra."""
    state = {"w": torch.arange(3.0)}
    save_state_dict(tmp_path / "bare.pt", state)
    assert torch.equal(load_state_dict_file(tmp_path / "bare.pt")["w"], state["w"])
    Checkpoint(state, {"lr": 1}, 7, {"fingerprint": "x"}).save(tmp_path / "ckpt.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "ckpt.pt")["w"], state["w"])
    ckpt = Checkpoint.load(tmp_path / "ckpt.pt")
    assert (ckpt.step, ckpt.extra, ckpt.optimizer) == (7, {"fingerprint": "x"}, {"lr": 1})
    torch.save({"model": [1, 2]}, tmp_path / "odd.pt")  # "model" that is not a dict: kept as the dict it is in
    assert load_state_dict_file(tmp_path / "odd.pt") == {"model": [1, 2]}
    torch.save({"model": {"a": 1}, "optimizer": {}, "step": 3}, tmp_path / "no_extra.pt")
    assert Checkpoint.load(tmp_path / "no_extra.pt").extra == {}
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(InputError) as err:
        load_state_dict_file(tmp_path / "list.pt")
    assert (err.value.path, err.value.problem) == (str(tmp_path / "list.pt"), "not a state dict")
    # files cut short: an empty one (EOFError with no message), 4 stray bytes (struct.error), a zip header
    # (RuntimeError); planted bug: the old except tuples without EOFError and struct.error let both escape
    for junk, first_line in ((b"", "EOFError"), (b"junk", "unpack requires"), (b"PK\x03\x04", "PytorchStreamReader")):
        (tmp_path / "junk.pt").write_bytes(junk)
        with pytest.raises(InputError) as err:
            load_state_dict_file(tmp_path / "junk.pt")
        assert err.value.path == str(tmp_path / "junk.pt")
        assert err.value.problem.startswith(f"cannot load weights ({first_line}")
        with pytest.raises(InputError) as err:
            Checkpoint.load(tmp_path / "junk.pt")
        assert err.value.problem.startswith(f"cannot load checkpoint ({first_line}")
    torch.save({"model": {}}, tmp_path / "half.pt")
    with pytest.raises(InputError) as err:
        Checkpoint.load(tmp_path / "half.pt")
    assert err.value.problem == "cannot load checkpoint ('optimizer')"


class _SumOverCount(Objective):
    """A count-normalised loss (as pixel-normalised ones): the sum of squared errors of the samples with y > 0,
    divided by their number over the whole global batch (``MicroBatch.totals``). Records what fit hands over."""

    def __init__(self) -> None:
        self.micros: list[MicroBatch] = []
        self.ended: list[int] = []

    def counts(self, model, batch):
        return torch.tensor([float((batch["y"] > 0).sum()), 1.0])

    def loss(self, model, batch, micro):
        self.micros.append(micro)
        err = (model(batch["x"]).squeeze(1) - batch["y"]) ** 2 * (batch["y"] > 0)
        share = err.sum() / micro.totals[0]
        return share, {"share": share.item(), "one": 1.0}

    def end_step(self, model, step):
        self.ended.append(step)


def test_micro_batches_give_the_whole_batch_update_with_exact_shares(tmp_path: Path) -> None:
    """accumulate = 1, 2, 4 give the same weights and log (up to float rounding); each micro-batch sees its step,
    its positions in the global batch, the global size and the count totals of the whole batch (float64);
    end_step runs once per step after the micro-batches; logged parts are summed over micro-batches.
    Kills: positions/micro_size/fraction arithmetic, totals not summed or not float64, parts not summed, end_step
    skipped or given another step, loss_sum not accumulated."""
    runs = {}
    for accumulate in (1, 2, 4):
        objective = _SumOverCount()
        model, result = _fit_linear(tmp_path / str(accumulate), objective, steps=3, batch_size=8, accumulate=accumulate)
        runs[accumulate] = (model.state_dict(), (tmp_path / str(accumulate) / "log.csv").read_text(), objective)
        assert result == {"steps": 3, "max_steps": 3, "stopped_early": False}
        assert objective.ended == [0, 1, 2]
        size = 8 // accumulate
        assert [m.step for m in objective.micros] == [s for s in range(3) for _ in range(accumulate)]
        assert [m.positions for m in objective.micros[:accumulate]] == [
            tuple(range(k * size, (k + 1) * size)) for k in range(accumulate)
        ]
        assert {m.global_size for m in objective.micros} == {8}
        assert {m.fraction for m in objective.micros} == {1 / accumulate}
        for m in objective.micros:
            assert m.totals.dtype == torch.float64 and m.totals[1] == 1.0  # counts of the whole batch, once
        rows = [line.split(",") for line in runs[accumulate][1].splitlines()]
        assert rows[0] == ["step", "lr", "loss", "share", "one"]
        assert [float(r[4]) for r in rows[1:]] == [accumulate] * 3  # the parts are summed over micro-batches
        assert [float(r[2]) for r in rows[1:]] == pytest.approx([float(r[3]) for r in rows[1:]], rel=1e-5)
    for accumulate in (2, 4):
        for k, v in runs[1][0].items():
            torch.testing.assert_close(runs[accumulate][0][k], v, rtol=1e-5, atol=1e-6)
        losses = [[float(r.split(",")[2]) for r in runs[a][1].splitlines()[1:]] for a in (1, accumulate)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert 0 < float(runs[1][1].splitlines()[-1].split(",")[2]) < float(runs[1][1].splitlines()[1].split(",")[2])


def test_mean_loss_shares_give_the_whole_batch(tmp_path: Path, caplog) -> None:
    """A per-sample mean loss (MeanLoss) in 2 micro-batches: same weights and log as one batch; the setup line
    states the micro-batch size. Kills: the share not multiplied by the fraction (divided), the parts likewise, the
    micro-batch size of the log line."""
    logs, states = [], []
    for accumulate in (1, 2):
        with caplog.at_level("INFO", logger="wsss.engine.train"):
            model, _ = _fit_linear(tmp_path / str(accumulate), _step, steps=3, batch_size=8, accumulate=accumulate)
        states.append(model.state_dict())
        logs.append(
            [
                [float(c) for c in r.split(",")]
                for r in (tmp_path / str(accumulate) / "log.csv").read_text().splitlines()[1:]
            ]
        )
    assert "1 process(es) × 2 micro-batch(es) of 4 per step; bfloat16 autocast off" in [
        r.getMessage() for r in caplog.records
    ]
    for k, v in states[0].items():
        torch.testing.assert_close(states[1][k], v, rtol=1e-5, atol=1e-6)
    assert [x for r in logs[1] for x in r] == pytest.approx([x for r in logs[0] for x in r], rel=1e-5)


def test_train_step_as_one_of_two_processes(monkeypatch) -> None:
    """_train_step as rank 1 of 2 (the process group faked; the all-reduce an identity): with a global batch of 8
    and 2 micro-batches the rank's 4 samples are at global positions (1, 3) and (5, 7); the backward runs on
    share × world, so DDP's average over the 2 processes leaves the sum. Kills: positions computed without rank or
    world, the share not scaled by the world size (or divided by it)."""
    from wsss.engine import train

    monkeypatch.setattr(train.distributed, "rank_world", lambda: (1, 2))
    monkeypatch.setattr(train.distributed, "all_reduce_sum", lambda t: t)
    objective = _SumOverCount()
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(4, 4, generator=torch.Generator().manual_seed(2)), torch.tensor([1.0, 2.0, 3.0, 4.0])
    loss, parts = train._train_step(
        model,
        objective,
        {"x": x, "y": y},
        5,
        batch_size=8,
        accumulate=2,
        device=torch.device("cpu"),
        use_amp=False,
    )
    assert [m.positions for m in objective.micros] == [(1, 3), (5, 7)]
    assert [m.step for m in objective.micros] == [5, 5] and objective.ended == [5]
    expected = ((model(x).squeeze(1) - y) ** 2).sum() / 4
    assert loss == pytest.approx(expected.detach().item(), rel=1e-6) and parts["one"] == 2.0
    grad = torch.autograd.grad(expected * 2, model.weight)[0]
    torch.testing.assert_close(model.weight.grad, grad, rtol=1e-5, atol=1e-6)


class _Evaluator:
    """A held-out evaluator with a scripted score per call; remembers the weights it saw."""

    columns = ("heldout_map", "half")

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.seen = scores, []

    def __call__(self, model):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        score = self.scores[len(self.seen) - 1]
        return {"heldout_map": score, "half": score / 2}


def _fit_evaluated(tmp: Path, scores: list[float], fail_at: int | None = None, **kwargs):
    from wsss.pipeline.heldout import HeldoutTracker

    evaluator, tracker = _Evaluator(scores), HeldoutTracker("heldout_map", patience=2, keep_best=True)

    def step_fn(m, batch, step):
        if step == fail_at:
            raise KeyboardInterrupt("killed")
        return _step(m, batch, step)

    options = {"steps": 20, "eval_every": 3, "checkpoint_every": 4, **kwargs}
    _, result = _fit_linear(tmp, step_fn, evaluator=evaluator, tracker=tracker, **options)
    return evaluator, tracker, result


def test_fit_evaluates_keeps_the_best_and_stops_when_patience_is_used_up(tmp_path: Path, caplog) -> None:
    """eval_every 3 of 20 steps: evaluations after steps 2, 5, 8, 11 (scores 0.5, 0.7, 0.6, 0.6); patience 2 ends
    training after step 11; the final weights are those of the best (step 5); the log's extra columns are filled on
    the evaluated rows only. Kills: the eval schedule (``%``, ``+ 1``, ``and``/``or``), the stop flag not read, the
    best state ignored, the columns mis-filled, the info line's ``(best so far)``."""
    with caplog.at_level("INFO", logger="wsss.engine.train"):
        evaluator, tracker, result = _fit_evaluated(tmp_path, [0.5, 0.7, 0.6, 0.6])
    assert result == {"steps": 12, "max_steps": 20, "stopped_early": True}
    assert [h["step"] for h in tracker.history] == [2, 5, 8, 11]
    final = load_state_dict_file(tmp_path / "model.pt")
    for k, v in evaluator.seen[1].items():
        assert torch.equal(final[k], v)
    assert not torch.equal(final["weight"], evaluator.seen[3]["weight"])
    rows = [line.split(",") for line in (tmp_path / "log.csv").read_text().splitlines()]
    assert rows[0] == ["step", "lr", "loss", "mse", "heldout_map", "half"] and len(rows) == 13
    filled = {int(r[0]): r[4:] for r in rows[1:] if r[4]}
    assert filled == {2: ["0.5", "0.25"], 5: ["0.7", "0.35"], 8: ["0.6", "0.3"], 11: ["0.6", "0.3"]}
    assert all(r[4:] == ["", ""] for r in rows[1:] if int(r[0]) not in filled)
    messages = [r.getMessage() for r in caplog.records]
    assert "step 5: heldout_map 0.7000, half 0.3500 (best so far)" in messages
    assert "step 8: heldout_map 0.6000, half 0.3000" in messages
    assert "1 process(es) × 1 micro-batch(es) of 4 per step; bfloat16 autocast off" in messages
    assert not (tmp_path / "ckpt.pt").exists() and not (tmp_path / "log.csv.partial").exists()


def test_fit_evaluates_after_the_last_step_and_resumes_the_tracker(tmp_path: Path, caplog) -> None:
    """eval_every 0: one evaluation, after the last step. A run killed at step 10 resumes from the checkpoint of
    step 8, which carries the tracker's state: it stops at the same step with the same weights as the straight
    run. Kills: the checkpoint's "evaluation" entry or its loading dropped, the resume log line, the
    ``step < max_steps`` and ``step % checkpoint_every`` conditions."""
    _, tracker, result = _fit_evaluated(tmp_path / "last", [0.3], steps=7, eval_every=0)
    assert [h["step"] for h in tracker.history] == [6] and result["stopped_early"] is False
    scores = [0.5, 0.7, 0.6, 0.6]
    _, straight, _ = _fit_evaluated(tmp_path / "a", scores)
    with pytest.raises(KeyboardInterrupt):
        _fit_evaluated(tmp_path / "b", scores, fail_at=10)
    ckpt = Checkpoint.load(tmp_path / "b" / "ckpt.pt")
    assert ckpt.step == 8 and ckpt.extra["fingerprint"] == "f"
    assert [h["step"] for h in ckpt.extra["evaluation"]["history"]] == [2, 5]
    with caplog.at_level("INFO", logger="wsss.engine.train"):
        _, resumed, result = _fit_evaluated(tmp_path / "b", scores[2:])
    assert f"resuming from {tmp_path / 'b' / 'ckpt.pt'} at step 8" in [r.getMessage() for r in caplog.records]
    assert result == {"steps": 12, "max_steps": 20, "stopped_early": True}
    assert resumed.history == straight.history
    a, b = (load_state_dict_file(tmp_path / d / "model.pt") for d in "ab")
    for k in a:
        assert torch.equal(a[k], b[k])
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()


def test_a_checkpoint_with_evaluation_state_resumes_without_a_tracker(tmp_path: Path) -> None:
    """A checkpoint written with a tracker resumes a run without one (its evaluation state is then not read).
    Kills: ``tracker is not None or ...`` (a None tracker asked to load it)."""
    model = torch.nn.Linear(4, 1)
    extra = {"fingerprint": "f", "evaluation": {"history": [], "best_index": -1, "since_best": 0, "best_state": {}}}
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 0.0, 0.9)
    Checkpoint(model.state_dict(), opt.state_dict(), 2, extra).save(tmp_path / "ckpt.pt")
    _, result = _fit_linear(tmp_path, _step, steps=3)
    assert result["steps"] == 3 and len((tmp_path / "log.csv").read_text().splitlines()) == 2  # header + step 2


def test_fit_makes_its_folders_trains_the_model_and_ignores_foreign_checkpoints(tmp_path: Path, caplog) -> None:
    """Output folders are created (nested, or existing); the model is put in train mode; the partial log exists
    while training; a checkpoint with another fingerprint is ignored with a warning; a final checkpoint
    (step == max_steps) is not written; the progress bar counts the steps. Kills: the mkdir arguments, .train()
    dropped, the partial name, the warning text, the steps-left total of the progress bar."""
    seen = []

    def step_fn(m, batch, step):
        seen.append((m.training, (tmp_path / "logs" / "deep" / "log.csv.partial").exists()))
        return _step(m, batch, step)

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).eval()
    Checkpoint(model.state_dict(), {}, 2, {"fingerprint": "other"}).save(tmp_path / "ckpt" / "ckpt.pt")
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 0.0, 0.9)
    with caplog.at_level("INFO", logger="wsss.engine.train"):
        fit(
            model,
            NoisyRegression(),
            step_fn,
            opt,
            batch_size=4,
            max_steps=4,
            seed=3,
            checkpoint=tmp_path / "ckpt" / "ckpt.pt",
            checkpoint_every=2,
            final_weights=tmp_path / "w" / "x" / "model.pt",
            log_csv=tmp_path / "logs" / "deep" / "log.csv",
            device=torch.device("cpu"),
            fingerprint="f",
        )
    assert seen == [(True, True)] * 4
    assert (tmp_path / "w" / "x" / "model.pt").is_file() and not (tmp_path / "ckpt" / "ckpt.pt").exists()
    warning = f"ignoring {tmp_path / 'ckpt' / 'ckpt.pt'}: it was written with other hyper-parameters"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]


def _as_if_saved_on_cuda(path: Path) -> None:
    """Rewrite a CPU torch.save zip so that its tensors say they were saved from ``cuda:0``."""
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") == 1
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info.filename, data)
    path.write_bytes(out.getvalue())


class _NotAWeight:
    """Any object a plain pickle would rebuild (weights_only=True must refuse it)."""


def test_weights_saved_on_a_gpu_load_on_the_cpu_and_only_weights_load(tmp_path: Path) -> None:
    """Files written on a GPU load onto the CPU (map_location="cpu"; without it torch.load tries CUDA and fails on a
    CPU-only machine, or keeps the tensors on the GPU); a pickle of arbitrary objects is refused (weights_only=True).
    Kills: map_location dropped or None, weights_only=False, in load_state_dict_file and Checkpoint.load."""
    save_state_dict(tmp_path / "w.pt", {"w": torch.arange(3.0)})
    _as_if_saved_on_cuda(tmp_path / "w.pt")
    loaded = load_state_dict_file(tmp_path / "w.pt")["w"]
    assert loaded.device == torch.device("cpu") and loaded.tolist() == [0.0, 1.0, 2.0]
    Checkpoint({"w": torch.arange(3.0)}, {}, 4, {}).save(tmp_path / "c.pt")
    _as_if_saved_on_cuda(tmp_path / "c.pt")
    assert Checkpoint.load(tmp_path / "c.pt").model["w"].device == torch.device("cpu")
    torch.save({"model": {}, "optimizer": {}, "step": 1, "extra": {"x": _NotAWeight()}}, tmp_path / "obj.pt")
    with pytest.raises(InputError, match="cannot load checkpoint"):
        Checkpoint.load(tmp_path / "obj.pt")
    with pytest.raises(InputError, match="cannot load weights"):
        load_state_dict_file(tmp_path / "obj.pt")


def test_training_autocast_on_cuda_is_bfloat16() -> None:
    """The CUDA context asks for bfloat16 (CUDA's own default would be float16). Kills: dtype dropped or None."""
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else nullcontext():
        ctx = training_autocast(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and ctx.device == "cuda"


class _Recording(torch.nn.Linear):
    """A linear model that records the devices it is moved to."""

    def __init__(self) -> None:
        super().__init__(4, 1)
        self.moves: list = []

    def to(self, *args, **kwargs):
        self.moves.append(args)
        return super().to(*args, **kwargs)


class _Pids(NoisyRegression):
    """NoisyRegression whose items say which process loaded them."""

    def __getitem__(self, key):
        return {**super().__getitem__(key), "pid": os.getpid()}


def test_fit_defaults_and_the_autocast_it_asks_for(tmp_path: Path, monkeypatch, caplog) -> None:
    """Defaults: data loaded in the training process (num_workers 0), no amp, poly power 0.9, an evaluator run after
    the last step only (eval_every 0), no pinned memory on the CPU (no warning); the model is moved to the device
    and trained under the autocast fit decides, logged. Kills: the default values, ``use_amp`` or its arguments
    replaced, ``model.to(None)``, ``pin_memory`` conditions."""
    asked = []

    def decide(device, amp):
        asked.append((device, amp))
        return True

    monkeypatch.setattr("wsss.engine.train.autocast_enabled", decide)
    seen = []

    def step_fn(m, batch, step):
        seen.append((set(batch["pid"].tolist()), torch.is_autocast_enabled("cpu")))
        return _step(m, batch, step)

    model = _Recording()
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 0.0, 0.9)
    evaluator = _Evaluator([0.1])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO", logger="wsss.engine.train"):
        warnings.simplefilter("always")
        fit(
            model,
            _Pids(),
            step_fn,
            opt,
            batch_size=4,
            max_steps=3,
            seed=3,
            checkpoint=tmp_path / "ckpt.pt",
            checkpoint_every=100,
            final_weights=tmp_path / "model.pt",
            log_csv=tmp_path / "log.csv",
            device=torch.device("cpu"),
            fingerprint="f",
            evaluator=evaluator,
        )
    pids = []
    _fit_linear(
        tmp_path / "workers",
        lambda m, b, s: (pids.append(set(b["pid"].tolist())), _step(m, b, s))[1],
        steps=1,
        data=_Pids(),
        num_workers=1,
    )
    assert pids and os.getpid() not in pids[0]  # num_workers reaches the DataLoader
    assert asked == [(torch.device("cpu"), False)] * 2
    assert seen == [({os.getpid()}, True)] * 3
    assert model.moves == [(torch.device("cpu"),)]
    assert len(evaluator.seen) == 1
    assert not [w for w in caught if "pin_memory" in str(w.message)]
    assert "1 process(es) × 1 micro-batch(es) of 4 per step; bfloat16 autocast on" in [
        r.getMessage() for r in caplog.records
    ]
    lr = [float(line.split(",")[1]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert lr == pytest.approx([0.05 * (1 - s / 3) ** 0.9 for s in range(3)], rel=1e-5)


class _FakeDDP(torch.nn.parallel.DistributedDataParallel):
    """A DDP stand-in (no process group): forwards to its module and records the micro-batches run under no_sync."""

    def __init__(self, module: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)
        self.module = module
        self.no_sync_calls = 0
        self.events: list[str] = []

    def forward(self, *args, **kwargs):
        self.events.append("forward")
        return self.module(*args, **kwargs)

    def no_sync(self):
        self.no_sync_calls += 1
        self.events.append("no_sync")
        return nullcontext()


class _Checked(_SumOverCount):
    """_SumOverCount that records which model counts and end_step get."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list = []

    def counts(self, model, batch):
        self.models.append(("counts", model))
        return super().counts(model, batch)

    def end_step(self, model, step):
        self.models.append(("end_step", model))
        super().end_step(model, step)


def test_train_step_under_ddp_syncs_only_the_last_micro_batch(monkeypatch) -> None:
    """Wrapped in DDP, all micro-batches but the last run under ``no_sync`` (one gradient all-reduce per step);
    ``counts`` reads the unwrapped model, ``end_step`` gets the wrapper; parts are summed in float64 (0.1 + 0.1 +
    0.1, not its float32 rounding). Kills: the ``last`` arithmetic, the no_sync condition, unwrap dropped, the
    models passed on, the float64 of the summed parts."""
    from wsss.engine import train

    model = torch.nn.Linear(4, 1)
    net = _FakeDDP(model)
    objective = _Checked()
    tenth = objective.loss

    def loss(m, batch, micro):
        share, parts = tenth(m, batch, micro)
        return share, {**parts, "tenth": 0.1}

    objective.loss = loss
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), torch.arange(1.0, 7.0)
    _, parts = train._train_step(
        net, objective, {"x": x, "y": y}, 0, batch_size=6, accumulate=3, device=torch.device("cpu"), use_amp=False
    )
    assert net.no_sync_calls == 2 and net.events == ["no_sync", "forward", "no_sync", "forward", "forward"]
    assert objective.models == [("counts", model), ("end_step", net)]
    assert parts["tenth"] == 0.1 + 0.1 + 0.1 and parts["one"] == 3.0


def test_fit_as_rank_one_of_two_writes_nothing_and_takes_its_half(tmp_path: Path, monkeypatch, capsys) -> None:
    """fit as rank 1 of 2 (process group faked: identity all-reduce, DDP wrap recorded): it trains on the odd
    positions of each global batch, writes no log, checkpoint or weights, shows no progress bar, checks the resume
    step with the others and wraps the model on its device; the batch split is checked against the world size.
    Rank 0 (the same fakes) shows the bar with the step count. Kills: ``main`` and every ``if main`` branch, the
    sampler's rank and world arguments, the wrap and check_same arguments, the progress bar's total/desc/disable."""
    from wsss.engine import train

    world = {"rank": 1}
    calls = []
    monkeypatch.setattr(train.distributed, "rank_world", lambda: (world["rank"], 2))
    monkeypatch.setattr(train.distributed, "all_reduce_sum", lambda t: t)
    monkeypatch.setattr(train.distributed, "check_same", lambda value, what: calls.append(("check_same", value, what)))

    def wrap(model, device, find_unused):
        calls.append(("wrap", device, find_unused))
        return model

    monkeypatch.setattr(train.distributed, "wrap", wrap)
    data = NoisyRegression()
    seen_y = []

    def step_fn(m, batch, step):
        seen_y.append(batch["y"].tolist())
        return _step(m, batch, step)

    for rank in (1, 0):
        world["rank"] = rank
        out = tmp_path / f"rank{rank}"
        _, result = _fit_linear(out, step_fn, steps=3, batch_size=4, checkpoint_every=1)
        assert result == {"steps": 3, "max_steps": 3, "stopped_early": False}
        err = capsys.readouterr().err
        if rank == 1:
            assert not out.exists() and "train" not in err
        else:
            assert (out / "model.pt").exists() and "train: 100%" in err and "3/3" in err
    sampler = StepBatchSampler(16, 4, 3, 3)
    expected = [[float(data.y[i]) for i, _ in sampler.global_batch(t)[1::2]] for t in range(3)]
    assert [y for ys in seen_y[:3] for y in ys] == pytest.approx([y for ys in expected for y in ys])
    assert calls[:2] == [("check_same", 0, "the step to resume from"), ("wrap", torch.device("cpu"), False)]
    with pytest.raises(ValueError, match=r"^batch size 6 does not split into 2 micro-batch\(es\) on each of 2 process"):
        _fit_linear(tmp_path / "uneven", step_fn, steps=1, batch_size=6, accumulate=2)
    with pytest.raises(ValueError, match="does not split into 0 micro-batch"):
        _fit_linear(tmp_path / "zero", step_fn, steps=1, batch_size=4, accumulate=0)


class _ConstantShares(Objective):
    """Shares 1, 1e-8, 1e-8 (float32 tensors): their float32 sum is 1 exactly, their float64 sum is not."""

    def loss(self, model, batch, micro):
        value = (1.0, 1e-8, 1e-8)[micro.positions[0] // len(micro.positions)]
        return model(batch["x"]).sum() * 0 + value, {}


def test_train_step_sums_the_shares_in_float64() -> None:
    """The global-batch loss is summed in float64 (tiny shares are not lost against a large one). Kills: the
    float64 of the running loss sum (its dtype dropped)."""
    from wsss.engine import train

    loss, _ = train._train_step(
        torch.nn.Linear(4, 1),
        _ConstantShares(),
        {"x": torch.zeros(3, 4)},
        0,
        batch_size=3,
        accumulate=3,
        device=torch.device("cpu"),
        use_amp=False,
    )
    tiny = float(torch.tensor(1e-8))  # 1e-8 as float32
    assert loss == 1.0 + tiny + tiny


def test_fit_passes_its_poly_power_and_skips_parameters_without_gradient(tmp_path: Path) -> None:
    """poly_power reaches the schedule (lr at step s = 0.05·(1 − s/3)^2); a parameter that gets a gradient only at
    step 0 is not moved afterwards (set_to_none: SGD skips a None gradient; a zeroed one would keep the
    momentum moving it). Kills: set_poly_lr without the power, zero_grad(set_to_none=False/None)."""
    extra = torch.nn.Parameter(torch.ones(1))
    after_first = []

    def step_fn(m, batch, step):
        loss, parts = _step(m, batch, step)
        if step == 0:
            return loss + extra.sum(), parts
        if step == 1:
            after_first.append(extra.detach().clone())
        return loss, parts

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": [*model.parameters(), extra]}], "sgd", 0.05, 0.0, 0.9)
    fit(
        model,
        NoisyRegression(),
        step_fn,
        opt,
        batch_size=4,
        max_steps=3,
        seed=3,
        checkpoint=tmp_path / "ckpt.pt",
        checkpoint_every=100,
        final_weights=tmp_path / "model.pt",
        log_csv=tmp_path / "log.csv",
        device=torch.device("cpu"),
        fingerprint="f",
        poly_power=2.0,
    )
    lr = [float(line.split(",")[1]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert lr == pytest.approx([0.05 * (1 - s / 3) ** 2 for s in range(3)], rel=1e-5)
    assert after_first[0].item() == pytest.approx(0.95) and torch.equal(extra.detach(), after_first[0])


class _MinimalTracker:
    """A tracker without ``best_state`` (fit must not require one): never stops."""

    should_stop = False

    def record(self, step, metrics, model):
        return False

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_fit_without_a_tracker_or_without_best_state_keeps_the_last_weights(tmp_path: Path, monkeypatch) -> None:
    """An evaluator without a tracker never stops training (and its last evaluation is no early stop); a tracker
    without ``best_state`` leaves the last weights as the final ones; no checkpoint is written after the last step
    (it would be deleted at once). Kills: the initial ``stop`` value, getattr without its default, ``step <=
    max_steps``."""
    saved_steps = []
    original_save = Checkpoint.save

    def save(self, path):
        saved_steps.append(self.step)
        return original_save(self, path)

    monkeypatch.setattr(Checkpoint, "save", save)
    for name, tracker in (("none", None), ("minimal", _MinimalTracker())):
        saved_steps.clear()
        model, result = _fit_linear(
            tmp_path / name,
            _step,
            steps=4,
            checkpoint_every=2,
            evaluator=_Evaluator([0.1] * 4),
            tracker=tracker,
            eval_every=1,
        )
        assert result == {"steps": 4, "max_steps": 4, "stopped_early": False}
        final = load_state_dict_file(tmp_path / name / "model.pt")
        for k, v in model.state_dict().items():
            assert torch.equal(final[k], v)
        assert saved_steps == [2]


def test_a_plain_function_evaluator_adds_no_columns(tmp_path: Path) -> None:
    """An evaluator without a ``columns`` attribute (a plain function) still feeds the tracker; the log keeps its
    four columns. Kills: ``getattr(evaluator, "columns")`` without its default (or with None)."""
    from wsss.pipeline.heldout import HeldoutTracker

    tracker = HeldoutTracker("m")
    _fit_linear(tmp_path, _step, steps=2, evaluator=lambda model: {"m": 0.5}, tracker=tracker, eval_every=1)
    assert [h["step"] for h in tracker.history] == [0, 1]
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "step,lr,loss,mse"
