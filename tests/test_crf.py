"""Dense CRF wrappers and IRN's IR labels (wsss.ops.crf)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.ops.crf import crf_from_labels, crf_from_probs, ir_label


def _bands(height: int = 48, width: int = 72) -> np.ndarray:
    """Three vertical colour bands (dark, grey, bright) of equal width."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 3 : 2 * width // 3] = (100, 100, 100)
    image[:, 2 * width // 3 :] = (220, 200, 180)
    return image


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([((pred == c) & (gt == c)).sum() / ((pred == c) | (gt == c)).sum() for c in np.unique(gt)]))


def test_label_crf_without_iterations_returns_the_labels() -> None:
    """The label unary puts the most probability on the given label (no CRF smoothing at 0 iterations)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (30, 40))
    np.testing.assert_array_equal(crf_from_labels(image, labels, 4, iters=0), labels)


def test_ir_label_combines_the_two_passes_exactly() -> None:
    """With the CRF switched off: foreground class from the 0.30 pass, 0 where both passes say background, 255 else."""
    image = np.zeros((8, 10, 3), np.uint8)
    cam = np.zeros((2, 8, 10), np.float32)  # keys [0, 3] -> ids 1 and 4
    cam[0, :, 0:2] = 0.9  # confident class 1
    cam[1, :, 2:4] = 0.6  # confident class 4
    cam[:, :, 4:6] = [[[0.5]], [[0.4]]]  # both above 0.30: the larger wins -> 1
    cam[1, :, 6:8] = 0.15  # between the thresholds -> unsure
    cam[0, :, 8:10] = 0.01  # below both -> background
    out = ir_label(image, cam, [0, 3], conf_fg=0.30, conf_bg=0.05, iters=0)
    expected = np.repeat(np.array([1, 1, 4, 4, 1, 1, 255, 255, 0, 0], np.uint8)[None], 8, axis=0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_ir_label_with_crf_keeps_colour_aligned_regions() -> None:
    """Background / unsure / foreground bands that follow the image's colour edges survive both CRF passes."""
    image = _bands()
    cam = np.zeros((1, 48, 72), np.float32)
    cam[0, :, :24], cam[0, :, 24:48], cam[0, :, 48:] = 0.02, 0.15, 0.9
    out = ir_label(image, cam, [1])
    assert (out[:, :24] == 0).all() and (out[:, 24:48] == 255).all() and (out[:, 48:] == 2).all()


def test_ir_label_crf_snaps_a_misaligned_cam_to_the_colour_edge() -> None:
    """A CAM spilling 4 px over a sharp colour edge is pulled back to the edge by the label CRF."""
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 200
    cam = np.zeros((1, 40, 60), np.float32)
    cam[0, :, 26:] = 0.9
    no_crf = ir_label(image, cam, [0], conf_bg=0.30, iters=0)
    out = ir_label(image, cam, [0], conf_bg=0.30)
    assert (no_crf[:, 26:30] == 1).all()
    assert (out[:, :30] == 0).all() and (out[:, 30:] == 1).all()


def test_ir_label_without_keys_is_background() -> None:
    out = ir_label(_bands(), np.zeros((0, 48, 72), np.float32), [])
    assert out.shape == (48, 72) and (out == 0).all()


def test_ir_label_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        ir_label(_bands(), np.zeros((2, 48, 72), np.float32), [1])
    with pytest.raises(ValueError):
        ir_label(_bands(), np.zeros((1, 40, 72), np.float32), [1])


def test_crf_from_probs_cleans_noisy_probabilities_at_a_sharp_edge() -> None:
    """Black left / white right; noisy probabilities with 20 % of pixels wrong → CRF IoU ≥ input IoU (here ~1)."""
    rng = np.random.default_rng(1)
    height, width = 40, 60
    image = np.zeros((height, width, 3), np.uint8)
    image[:, 30:] = 255
    gt = np.zeros((height, width), np.int64)
    gt[:, 30:] = 1
    p_right = np.where(gt == 1, 0.7, 0.3) + rng.normal(0, 0.05, gt.shape)
    flip = rng.random(gt.shape) < 0.2
    p_right = np.clip(np.where(flip, 1 - p_right, p_right), 0.01, 0.99)
    probs = np.stack([1 - p_right, p_right]).astype(np.float32)
    before = _iou(probs.argmax(0), gt)
    q = crf_from_probs(image, probs)
    after = _iou(q.argmax(0), gt)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert before < 0.75
    assert after >= before and after > 0.98
