"""Dense CRF wrappers and IRN's IR labels (wsss.ops.crf)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.ops.crf import candidate_labels, crf_from_labels, crf_from_probs, crf_labels_from_probs, ir_label


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


def _few_class_probs(n_classes: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image with background, class 17 (left block) and class 5 (right block) and C−3 classes with softmax
    below 1e-4 everywhere (the CRF's pruning case); noisy probabilities of the three present labels."""
    rng = np.random.default_rng(seed)
    height, width = 36, 48
    image = np.full((height, width, 3), 40, np.uint8)
    image[8:28, 4:20] = (200, 30, 30)
    image[10:30, 28:44] = (30, 200, 30)
    logits = rng.normal(0, 0.5, (n_classes, height, width)).astype(np.float32) - 12.0
    logits[0] = 0.0
    logits[17, 8:28, 4:20] = 1.5
    logits[5, 10:30, 28:44] = 1.5
    logits[[0, 5, 17]] += rng.normal(0, 1.0, (3, height, width)).astype(np.float32)
    probs = np.exp(logits - logits.max(0))
    return image, (probs / probs.sum(0)).astype(np.float32)


def test_candidate_labels() -> None:
    _, probs = _few_class_probs()
    assert candidate_labels(probs, eps=1e-3).tolist() == [0, 5, 17]
    assert candidate_labels(probs, eps=0.0).tolist() == list(range(24))  # eps 0: every label
    assert candidate_labels(probs, eps=1e-3, top_k=1).tolist() in ([0, 5], [0, 17])
    assert candidate_labels(probs, eps=1e-3, top_k=0).tolist() == [0]  # background always stays
    peaks = np.zeros((4, 1, 2), np.float32)
    peaks[:, 0, 0] = [1.0, 0.2, 0.5, 0.3]
    assert candidate_labels(peaks, eps=0.25, top_k=1).tolist() == [0, 2]  # highest peak among those ≥ eps
    assert candidate_labels(peaks, eps=0.25, always=()).tolist() == [0, 2, 3]
    peaks[:, 0, 0] = [1.0, 0.5, 0.5, 0.3]  # a tie for the one place: the lower index (mutant killed: the higher)
    assert candidate_labels(peaks, eps=0.25, top_k=1).tolist() == [0, 1]
    assert candidate_labels(peaks[[0, 3, 2, 1]], eps=0.25, top_k=1).tolist() == [0, 2]
    with pytest.raises(ValueError):
        candidate_labels(peaks, eps=2.0)


def test_pruned_crf_maps_back_to_class_ids_and_equals_all_class_crf() -> None:
    image, probs = _few_class_probs()
    full = np.argmax(crf_from_probs(image, probs), axis=0)
    pruned = crf_labels_from_probs(image, probs, eps=1e-3)
    assert set(np.unique(pruned).tolist()) == {0, 5, 17}  # ids of the original labels, not positions 0..2
    assert (pruned[12:24, 8:16] == 17).all() and (pruned[14:26, 32:40] == 5).all()
    np.testing.assert_array_equal(pruned, full)
    np.testing.assert_array_equal(crf_labels_from_probs(image, probs, eps=0.0), full)  # eps 0: the all-class CRF
    only_bg = crf_labels_from_probs(image, probs, eps=1e-3, top_k=0)  # a single label left: nothing to infer
    assert only_bg.shape == full.shape and (only_bg == 0).all()


def test_crf_from_probs_wires_every_kernel_parameter() -> None:
    """The marginals equal pydensecrf's DenseCRF2D called by hand with distinct values for every parameter, so a
    swapped sxy/srgb/compat is caught. Mutants killed (mutmut): Gaussian sxy from ``pos[1]``, bilateral sxy from
    ``bi[1]``, srgb from ``bi[2]``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    rng = np.random.default_rng(3)
    image = _bands(24, 36)
    image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1, (3, 24, 36)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    pos_xy, pos_w, bi_xy, bi_rgb, bi_w = 2.0, 5.0, 9.0, 13.0, 3.0

    def reference(bi_xy: float, bi_rgb: float) -> np.ndarray:
        crf = dcrf.DenseCRF2D(36, 24, 3)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        crf.addPairwiseGaussian(sxy=pos_xy, compat=pos_w)
        crf.addPairwiseBilateral(sxy=bi_xy, srgb=bi_rgb, rgbim=np.ascontiguousarray(image), compat=bi_w)
        return np.asarray(crf.inference(5), np.float32).reshape(3, 24, 36)

    ours = crf_from_probs(
        image, probs, iters=5, pos_xy_std=pos_xy, pos_w=pos_w, bi_xy_std=bi_xy, bi_rgb_std=bi_rgb, bi_w=bi_w
    )
    np.testing.assert_allclose(ours, reference(bi_xy, bi_rgb), atol=1e-6)
    assert np.abs(reference(bi_rgb, bi_xy) - ours).max() > 1e-2  # the comparison tells the parameters apart
