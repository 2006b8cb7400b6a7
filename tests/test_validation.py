"""Image-level validation without pixel labels: the held-out slice, average precision by hand, and fit's early stop
(the step a scripted metric sequence dictates, the best weights kept, exact resume with the evaluation state)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import NoisyRegression, interrupt_at
from wsss.data.folder import in_val
from wsss.train import Checkpoint, build_optimizer, fit, load_state_dict_file
from wsss.validation import (HeldoutTracker, average_precision, holdout_split, mean_average_precision, micro_f1)


# ------------------------------------------------------------------------------------------ held-out slice
def test_holdout_is_a_salted_hash_of_the_id_stable_under_additions() -> None:
    ids = [f"img_{k:04d}" for k in range(2000)]
    train, held = holdout_split(ids, 0.1)
    assert sorted(train + held) == sorted(ids) and not set(train) & set(held)
    assert 150 < len(held) < 250  # ~10 %
    assert train == [i for i in ids if i in set(train)]  # order kept
    # adding images never moves the others
    train2, held2 = holdout_split(ids + [f"new_{k}" for k in range(500)], 0.1)
    assert set(held) <= set(held2) and set(train) <= set(train2)
    # independent of the folder dataset's val hash (same fraction): a folder's train split still holds ~10 % out
    folder_train = [i for i in ids if not in_val(i, 0.1)]
    _, held3 = holdout_split(folder_train, 0.1)
    assert 0.05 < len(held3) / len(folder_train) < 0.15
    # the hash is the documented one
    h = int.from_bytes(hashlib.sha256(b"wsss-cls-holdout\0img_0000").digest()[:8], "big") / 2.0 ** 64
    assert ("img_0000" in held) == (h < 0.1)


def test_holdout_keeps_one_image_of_a_tiny_split_and_none_at_fraction_zero() -> None:
    ids = ["a", "b", "c"]
    train, held = holdout_split(ids, 0.01)
    assert len(held) == 1 and len(train) == 2
    assert holdout_split(ids, 0.0) == (ids, [])


# ------------------------------------------------------------------------------------------ AP and F1 by hand
def test_average_precision_hand_worked() -> None:
    # ranks: + - + -  -> P@1 = 1 (R .5), P@3 = 2/3 (R 1): AP = .5·1 + .5·2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # perfect ranking
    assert average_precision([0.1, 0.9, 0.8], [0, 1, 1]) == pytest.approx(1.0)
    # worst ranking of 1 positive in 4: P@4 = 1/4
    assert average_precision([0.9, 0.8, 0.7, 0.1], [0, 0, 0, 1]) == pytest.approx(0.25)
    # ties enter together: all scores equal -> precision = prevalence
    assert average_precision([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 1]) == pytest.approx(0.5)
    # a tie between the top positive and a negative: one threshold with P = 1/2 at R = 1/2, then 2/3 at R = 1
    assert average_precision([0.9, 0.9, 0.5], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))


def test_map_skips_classes_without_positives_and_f1_counts_micro() -> None:
    scores = np.array([[0.9, 0.2, 0.6], [0.8, 0.7, 0.1], [0.1, 0.6, 0.4]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # class 0: ranks + - +  -> 5/6 ; class 1: ranks + -  (0.7 pos, 0.6 neg) -> 1 ; class 2: no positive
    assert mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 1) / 2)
    # predictions > .5: tp = (0,0) (1,1) = 2; fp = (0,2) (1,0) (2,1) = 3; fn = (2,0) = 1 -> 2·2 / (4 + 3 + 1)
    assert micro_f1(scores, labels) == pytest.approx(0.5)


def test_average_precision_matches_a_brute_force_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        scores = rng.integers(0, 6, n) / 5.0  # many ties
        labels = rng.integers(0, 2, n)
        if labels.sum() == 0:
            continue
        # brute force: for each distinct threshold t (descending), precision/recall of score >= t
        ap, prev_r = 0.0, 0.0
        for t in sorted(set(scores), reverse=True):
            pred = scores >= t
            p = (pred & (labels == 1)).sum() / pred.sum()
            r = (pred & (labels == 1)).sum() / labels.sum()
            ap += (r - prev_r) * p
            prev_r = r
        assert average_precision(scores, labels) == pytest.approx(ap)


# ------------------------------------------------------------------------------------------ early stop in fit
class Scripted:
    """An evaluator whose heldout_map after training step s is ``values[s]`` (the step comes from the objective,
    which runs first in the same step), and which keeps a copy of the weights it saw."""

    columns = ("heldout_map", "heldout_f1")

    def __init__(self, values: dict[int, float]) -> None:
        self.values, self.step, self.seen = values, -1, {}

    def objective(self, model, batch, step):
        self.step = step
        loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        return loss, {"mse": loss.item()}

    def __call__(self, model):
        self.seen[self.step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"heldout_map": self.values[self.step], "heldout_f1": self.values[self.step] / 2}


def _fit(tmp: Path, scripted: Scripted, *, max_steps: int, eval_every: int, patience: int | None, min_delta: float,
         keep_best: bool, fail_at: int | None = None, checkpoint_every: int = 100) -> tuple[dict, HeldoutTracker]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer([{"params": model.parameters()}], "sgd", 0.05, 1e-4, 0.9)
    tracker = HeldoutTracker("heldout_map", min_delta=min_delta, patience=patience, keep_best=keep_best)
    result = fit(model, NoisyRegression(), interrupt_at(scripted.objective, fail_at), opt, batch_size=4,
                 max_steps=max_steps, seed=3, checkpoint=tmp / "ckpt.pt", checkpoint_every=checkpoint_every,
                 final_weights=tmp / "model.pt", log_csv=tmp / "log.csv", device=torch.device("cpu"),
                 fingerprint="f", evaluator=scripted, eval_every=eval_every, tracker=tracker)
    return result, tracker


def test_early_stop_at_the_step_the_metric_sequence_dictates(tmp_path: Path) -> None:
    # evaluations after steps 1, 3, 5, 7, …: 0.10 best, 0.30 best, 0.305 (< 0.30 + 0.01: no), 0.29 (no) -> patience 2
    # is used up at step 7: 8 steps trained of 40, the weights after step 3 kept
    values = {1: 0.10, 3: 0.30, 5: 0.305, 7: 0.29, 9: 0.9, 11: 0.9}
    scripted = Scripted({s: values.get(s, 0.0) for s in range(40)})
    result, tracker = _fit(tmp_path, scripted, max_steps=40, eval_every=2, patience=2, min_delta=0.01, keep_best=True)
    assert result == {"steps": 8, "max_steps": 40, "stopped_early": True}
    assert [h["step"] for h in tracker.history] == [1, 3, 5, 7]
    assert tracker.best["step"] == 3 and tracker.best["heldout_map"] == 0.30
    weights = load_state_dict_file(tmp_path / "model.pt")
    for k, v in scripted.seen[3].items():
        assert torch.equal(weights[k], v)
    assert not torch.equal(weights["weight"], scripted.seen[7]["weight"])
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()]
    assert rows[0] == ["step", "lr", "loss", "mse", "heldout_map", "heldout_f1"]
    assert len(rows) == 9  # header + steps 0..7
    filled = {int(r[0]): (float(r[4]), float(r[5])) for r in rows[1:] if r[4]}
    assert filled == {1: (0.1, 0.05), 3: (0.3, 0.15), 5: (0.305, 0.1525), 7: (0.29, 0.145)}
    assert all(r[4] == r[5] == "" for r in rows[1:] if int(r[0]) not in filled)


def test_fixed_steps_evaluate_at_the_end_and_keep_the_last_weights(tmp_path: Path) -> None:
    scripted = Scripted({s: 1.0 - s / 10 for s in range(7)})  # only gets worse: no stop without patience
    result, tracker = _fit(tmp_path, scripted, max_steps=7, eval_every=3, patience=None, min_delta=0.0,
                           keep_best=False)
    assert result == {"steps": 7, "max_steps": 7, "stopped_early": False}
    assert [h["step"] for h in tracker.history] == [2, 5, 6]  # every 3rd step and the last one
    weights = load_state_dict_file(tmp_path / "model.pt")
    assert torch.equal(weights["weight"], scripted.seen[6]["weight"])


def test_resume_with_evaluation_state_is_exact(tmp_path: Path) -> None:
    # best at step 5, then flat: patience 4 stops at step 13; a kill at step 12 resumes from the step-10 checkpoint
    values = {s: min(s, 5) / 10 for s in range(30)}
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    kw = dict(max_steps=30, eval_every=2, patience=4, min_delta=0.0, keep_best=True, checkpoint_every=5)
    straight, tracker_a = _fit(a, Scripted(values), **kw)
    assert straight == {"steps": 14, "max_steps": 30, "stopped_early": True}
    with pytest.raises(KeyboardInterrupt):
        _fit(b, Scripted(values), fail_at=12, **kw)
    ckpt = Checkpoint.load(b / "ckpt.pt")
    assert ckpt.step == 10 and ckpt.extra["evaluation"]["best_index"] == 2  # evaluations 1, 3, 5*, 7, 9
    resumed, tracker_b = _fit(b, Scripted(values), **kw)
    assert resumed == straight and tracker_b.history == tracker_a.history
    wa, wb = load_state_dict_file(a / "model.pt"), load_state_dict_file(b / "model.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k])
    assert (a / "log.csv").read_text() == (b / "log.csv").read_text()
    assert not (b / "ckpt.pt").exists()
