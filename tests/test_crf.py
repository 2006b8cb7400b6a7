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


def _noisy_scene(height: int = 16, width: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy two-region image and noisy 3-class probabilities (class 2 faint everywhere)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 60, np.int64)
    image[:, width // 2 :] = 190
    image = np.clip(image + rng.integers(-25, 25, image.shape), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1.0, (3, height, width)).astype(np.float32)
    logits[1, :, width // 2 :] += 1.0
    logits[2] -= 9.0
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, probs.astype(np.float32)


def test_image_and_shape_checks_name_the_problem() -> None:
    """Planted bugs caught: ``and`` for ``or`` in the image check (an RGBA or a float image accepted), messages
    replaced by None or showing the wrong shape."""
    labels = np.zeros((8, 10), np.int64)
    for bad, text in [
        (np.zeros((8, 10, 4), np.uint8), r"uint8 \(8, 10, 4\)"),
        (np.zeros((8, 10, 3), np.float32), r"float32 \(8, 10, 3\)"),
    ]:
        with pytest.raises(ValueError, match=rf"^image must be H×W×3 uint8, got {text}$"):
            crf_from_labels(bad, labels, 2)
    with pytest.raises(ValueError, match=r"^image is \(8, 12\), labels/probabilities are \(8, 10\)$"):
        crf_from_labels(np.zeros((8, 12, 3), np.uint8), labels, 2)
    with pytest.raises(ValueError, match=r"^probs must be C×H×W, got \(8, 10\)$"):
        crf_from_probs(np.zeros((8, 10, 3), np.uint8), np.ones((8, 10)))
    with pytest.raises(ValueError, match=r"^probs must be C×H×W, got \(8, 10\)$"):
        candidate_labels(np.ones((8, 10)))
    with pytest.raises(ValueError, match=r"^eps must lie in \[0, 1\] and top_k be >= 0, got 2\.0, None$"):
        candidate_labels(np.ones((2, 8, 10)), eps=2.0)


def test_label_crf_checks_its_label_range() -> None:
    """Labels must lie in 0..n−1: n itself is rejected, as is a map without negatives that exceeds n − 1, a 3-D
    map; a single label returns the map as int64. Planted bugs caught: ``>`` for ``>=``, ``and`` for ``or``, the
    bound in the message off by one, ``astype(None)`` (float64) for one label."""
    image = np.zeros((4, 5, 3), np.uint8)
    labels = np.zeros((4, 5), np.int32)
    labels[0, 0] = 4
    with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.3$"):
        crf_from_labels(image, labels, 4)
    with pytest.raises(ValueError, match=r"^labels must be an H×W integer map, got int64 \(1, 4, 5\)$"):
        crf_from_labels(image, np.zeros((1, 4, 5), np.int64), 4)
    single = crf_from_labels(image, np.zeros((4, 5), np.int32), 1)
    assert single.dtype == np.int64 and (single == 0).all()


def test_crf_from_probs_defaults_are_the_deeplab_setting() -> None:
    """The defaults are 10 iterations, Gaussian sxy 1 / compat 3, bilateral sxy 67 / srgb 3 / compat 4 (module
    docstring): bit-identical to passing them. Planted bug caught: any one default changed by one."""
    image, probs = _noisy_scene()
    explicit = crf_from_probs(
        image, probs, iters=10, pos_xy_std=1.0, pos_w=3.0, bi_xy_std=67.0, bi_rgb_std=3.0, bi_w=4.0
    )
    np.testing.assert_array_equal(crf_from_probs(image, probs), explicit)
    for name, value in [
        ("iters", 11),
        ("pos_xy_std", 2.0),
        ("pos_w", 4.0),
        ("bi_xy_std", 68.0),
        ("bi_rgb_std", 4.0),
        ("bi_w", 5.0),
    ]:  # each one-off change is visible, so the comparison above can fail
        assert not np.array_equal(crf_from_probs(image, probs, **{name: value}), explicit), name


def test_crf_from_probs_float64_input_and_one_row() -> None:
    """float64 probabilities give exactly the float32 result (the unary is computed in float32); a single class
    gives float32 ones; a one-row image is refined like any other. Planted bugs caught: no float32 cast of the
    probabilities; testing ``shape[1] == 1`` (height) instead of the class count."""
    image, probs = _noisy_scene()
    np.testing.assert_array_equal(crf_from_probs(image, probs.astype(np.float64)), crf_from_probs(image, probs))
    one = crf_from_probs(image, np.ones((1, 16, 20)))
    assert one.dtype == np.float32 and (one == 1).all()
    row = crf_from_probs(image[:1], probs[:, :1])
    assert row.shape == (3, 1, 20) and not (row == 1).all()
    np.testing.assert_allclose(row.sum(0), 1.0, atol=1e-4)


def test_candidate_labels_edges() -> None:
    """eps 1 keeps labels that reach probability 1; a peak equal to eps counts; a single label; an image without
    pixels; ``always`` indices beyond C are ignored; ties for the ``top_k`` places go to the lower index on a large
    label set (brute force). Planted bugs caught: ``<`` for ``<=`` on eps or the always bound, ``>`` for ``>=`` on
    the peak, class count read from the height, peaks of an empty image computed anyway, a default eps other than
    0, an unstable argsort."""
    peaks = np.zeros((4, 1, 2), np.float32)
    peaks[:, 0, 0] = [0.0, 1.0, 0.5, 0.25]
    assert candidate_labels(peaks, eps=1.0).tolist() == [0, 1]
    assert candidate_labels(peaks, eps=0.5).tolist() == [0, 1, 2]
    assert candidate_labels(peaks).tolist() == [0, 1, 2, 3]
    assert candidate_labels(peaks, eps=0.9, always=(2, 4)).tolist() == [1, 2]
    assert candidate_labels(np.ones((1, 2, 2))).tolist() == [0]
    assert candidate_labels(np.zeros((3, 0, 4)), eps=0.1).tolist() == [0]
    assert candidate_labels(np.zeros((3, 0, 4))).tolist() == [0, 1, 2]
    rng = np.random.default_rng(0)
    many = rng.choice(np.array([0.2, 0.5, 0.8], np.float32), size=(200, 1, 1))
    want = sorted(sorted(range(1, 200), key=lambda c: (-float(many[c, 0, 0]), c))[:30])
    assert candidate_labels(many, top_k=30).tolist() == [0, *want]


def test_crf_labels_from_probs_wiring() -> None:
    """Without iterations the CRF returns its unary, so the labels are the argmax over the kept labels: the
    default (eps 0) and the pruned path both pass the CRF settings on; top_k=1 on a 2-row image (kept labels =
    height) never shows the dropped class. Planted bugs caught: ``**crf`` dropped on either path, the kept labels
    renormalised over the height axis, the all-label test made against the height, a default eps other than 0."""
    image, probs = _noisy_scene()
    np.testing.assert_array_equal(crf_labels_from_probs(image, probs, iters=0), probs.argmax(0))
    keep = candidate_labels(probs, eps=1e-3)
    assert keep.tolist() == [0, 1]
    np.testing.assert_array_equal(crf_labels_from_probs(image, probs, eps=1e-3, iters=0), probs[:2].argmax(0))
    np.testing.assert_array_equal(crf_labels_from_probs(image, probs), np.argmax(crf_from_probs(image, probs), 0))
    two_rows = np.empty((3, 2, 6), np.float32)  # class 1 peaks at 0.75 in column 0, class 2 wins columns 1..5
    two_rows[0], two_rows[1], two_rows[2] = 0.2, 0.3, 0.5
    two_rows[1:, :, 0] = [[0.75], [0.05]]
    flat = np.full((2, 6, 3), 128, np.uint8)
    assert 2 in crf_labels_from_probs(flat, two_rows)  # the all-class CRF shows class 2
    out = crf_labels_from_probs(flat, two_rows, top_k=1)
    assert 2 not in out and 1 in out


def test_ir_label_keys_bounds_dtypes_and_ties() -> None:
    """Keys up to 253 (class id 254) are valid, 254 is not (its id would be 255 = unsure); keys may come as a
    column; an image without keys gives uint8 zeros; a CAM equal to a threshold is not above it, in float32 and
    float64. Planted bugs caught: every off-by-one and ``and``/``or`` in the key check, its message, the
    ``reshape(None)`` of the keys, float64 zeros, the CAMs or the background plane kept in float64."""
    image = np.zeros((2, 3, 3), np.uint8)
    cam = np.full((1, 2, 3), 0.9, np.float32)
    assert (ir_label(image, cam, [253], iters=0) == 254).all()
    with pytest.raises(ValueError, match=r"^keys \[254\] must be 0-based class indices below 254$"):
        ir_label(image, cam, [254], iters=0)
    with pytest.raises(ValueError, match=r"^cam_hr must be Cv×H×W with Cv = len\(keys\) = 2, got \(1, 2, 3\)$"):
        ir_label(image, cam, [1, 2], iters=0)
    assert (ir_label(image, cam, np.argwhere(np.array([0, 0, 1]) > 0.5), iters=0) == 3).all()
    empty = ir_label(image, np.zeros((0, 2, 3)), [])
    assert empty.dtype == np.uint8 and (empty == 0).all()
    # 0.1 rounds up and 0.13 down in float32: equal to conf_fg is unsure, not foreground
    assert (ir_label(image, np.full((1, 2, 3), 0.1, np.float32), [0], conf_fg=0.1, iters=0) == 255).all()
    assert (ir_label(image, np.full((1, 2, 3), 0.13), [0], conf_fg=0.13, iters=0) == 255).all()


def test_ir_label_passes_pos_and_bi_to_both_passes() -> None:
    """ir_label equals its two label-CRF passes written out with crf_from_labels, for non-default kernels; swapping
    the kernels changes the result (so the comparison can fail). Planted bugs caught: ``pos`` or ``bi`` dropped
    or shifted in the call, one label too many."""
    rng = np.random.default_rng(4)
    image, _ = _noisy_scene(12, 16, seed=4)
    cam = np.clip(rng.normal(0.25, 0.2, (2, 12, 16)), 0, 1).astype(np.float32)
    keys, pos, bi = [0, 6], (2.0, 4.0), (9.0, 20.0, 6.0)

    def one_pass(bg: float, pos, bi) -> np.ndarray:
        scores = np.concatenate([np.full((1, 12, 16), bg, np.float32), cam])
        return np.array([0, 1, 7], np.uint8)[crf_from_labels(image, scores.argmax(0), 3, 0.7, 5, pos, bi)]

    def reference(pos, bi) -> np.ndarray:
        fg, bg = one_pass(0.30, pos, bi), one_pass(0.05, pos, bi)
        return np.where(fg > 0, fg, np.where(bg == 0, 0, 255)).astype(np.uint8)

    out = ir_label(image, cam, keys, iters=5, pos=pos, bi=bi)
    np.testing.assert_array_equal(out, reference(pos, bi))
    assert not np.array_equal(out, reference((bi[0], bi[2]), (pos[0], 20.0, pos[1])))


def test_pruned_labels_renormalised_per_pixel_before_the_clip() -> None:
    """pydensecrf clips probabilities at 1e-5 before −log, so the kept labels must be renormalised per pixel first:
    at a pixel where a dropped class (top_k=1) holds nearly everything, background 0.6e-5 and class 1 0.8e-5 become
    0.43 and 0.57 and class 1 wins (without iterations the CRF returns its unary). Planted bugs caught: multiplying
    by the sum, dividing by a global sum, or not at all (both clipped to 1e-5: a tie, background)."""
    probs = np.zeros((3, 1, 2), np.float32)
    probs[:, 0, 0] = [0.0, 1.0, 0.0]
    probs[:, 0, 1] = [0.6e-5, 0.8e-5, 1 - 1.4e-5]
    assert candidate_labels(probs, top_k=1).tolist() == [0, 1]
    out = crf_labels_from_probs(np.zeros((1, 2, 3), np.uint8), probs, top_k=1, iters=0)
    assert out.tolist() == [[1, 1]]


def test_crf_labels_from_float64_probs_are_those_of_their_float32_copy() -> None:
    """The labels depend on the float32 values only (the CRF's type), also where the rounding crosses ``eps``:
    label 1 peaks at 0.099999999 (float32: 0.1), eps = 0.1, so it is kept and wins its pixel (without iterations the
    CRF returns its unary). Planted bug caught: comparing the float64 peaks (label 1 dropped, background wins)."""
    probs = np.full((11, 1, 1), 0.09)
    probs[1], probs[0] = 0.099999999, 1 - 0.099999999 - 9 * 0.09
    image = np.zeros((1, 1, 3), np.uint8)
    want = crf_labels_from_probs(image, probs.astype(np.float32), eps=0.1, iters=0)
    assert want.tolist() == [[1]]
    np.testing.assert_array_equal(crf_labels_from_probs(image, probs, eps=0.1, iters=0), want)
