"""Fully connected CRF (pydensecrf) and IRN's confident-region labels from CAMs (docs/method.md#ir-labels).

Two unaries are offered:

* ``crf_from_labels``: a hard label map as unary (``unary_from_labels`` with probability ``gt_prob`` on the given
  label, no "unsure" label), IRN's ``cam_to_ir_label`` setting: 10 iterations, Gaussian sxy 3 / compat 3,
  bilateral sxy 50 / srgb 5 / compat 10.
* ``crf_from_probs``: class probabilities as unary (−log p), the DeepLab post-processing setting: 10 iterations,
  Gaussian sxy 1 / compat 3, bilateral sxy 67 / srgb 3 / compat 4.

``crf_labels_from_probs`` runs ``crf_from_probs`` over the labels that can win only (:func:`candidate_labels`:
background plus the classes whose probability reaches ``eps`` somewhere in the image, optionally at most
``top_k`` of them) and maps the result back to class ids. Mean-field time grows linearly with the number of
labels, so a COCO image (81 classes, a handful present) is refined an order of magnitude faster;
``bench/bench_crf_labels.py`` measures the speed-up and the pixels that differ from the all-class CRF.

``ir_label`` combines two label-CRF passes of the high-resolution CAM into IRN's training labels
{0 = confident background, class id = confident foreground, 255 = unsure}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from wsss.runtime.io import IGNORE

CONF_FG = 0.30
CONF_BG = 0.05
GT_PROB = 0.7
ITERS = 10
LABEL_POS = (3.0, 3.0)  # (sxy, compat)
LABEL_BI = (50.0, 5.0, 10.0)  # (sxy, srgb, compat)


def _check_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3 uint8, got {image.dtype} {image.shape}")
    if image.shape[:2] != tuple(size):
        raise ValueError(f"image is {image.shape[:2]}, labels/probabilities are {tuple(size)}")
    return np.ascontiguousarray(image)


def _inference(
    image: np.ndarray, unary: np.ndarray, n_labels: int, iters: int, pos: Sequence[float], bi: Sequence[float]
) -> np.ndarray:
    """Mean-field inference with one Gaussian (sxy, compat) and one bilateral (sxy, srgb, compat) kernel → n×H×W."""
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=float(pos[0]), compat=float(pos[1]))
    crf.addPairwiseBilateral(sxy=float(bi[0]), srgb=float(bi[1]), rgbim=image, compat=float(bi[2]))
    q = crf.inference(int(iters))
    return np.asarray(q, dtype=np.float32).reshape(n_labels, height, width)


def crf_from_labels(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    gt_prob: float = GT_PROB,
    iters: int = ITERS,
    pos: Sequence[float] = LABEL_POS,
    bi: Sequence[float] = LABEL_BI,
) -> np.ndarray:
    """Refine an H×W label map (values 0..n_labels−1) with a dense CRF on the RGB uint8 image; returns H×W int64.

    ``pos`` = (sxy, compat) of the Gaussian kernel, ``bi`` = (sxy, srgb, compat) of the bilateral kernel. With a
    single label there is nothing to refine and the map is returned as is.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an H×W integer map, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}")
    image = _check_image(image, labels.shape)
    if n_labels < 2:
        return labels.astype(np.int64)
    unary = unary_from_labels(labels.astype(np.int32), n_labels, gt_prob=gt_prob, zero_unsure=False)
    return np.argmax(_inference(image, unary, n_labels, iters, pos, bi), axis=0)


def crf_from_probs(
    image: np.ndarray,
    probs: np.ndarray,
    iters: int = 10,
    pos_xy_std: float = 1.0,
    pos_w: float = 3.0,
    bi_xy_std: float = 67.0,
    bi_rgb_std: float = 3.0,
    bi_w: float = 4.0,
) -> np.ndarray:
    """Refine C×H×W class probabilities (each pixel sums to 1) with a dense CRF; returns the C×H×W marginals."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be C×H×W, got {probs.shape}")
    image = _check_image(image, probs.shape[1:])
    if probs.shape[0] == 1:
        return np.ones_like(probs)
    unary = unary_from_softmax(probs)
    return _inference(image, unary, probs.shape[0], iters, (pos_xy_std, pos_w), (bi_xy_std, bi_rgb_std, bi_w))


def candidate_labels(
    probs: np.ndarray, eps: float = 0.0, top_k: int | None = None, always: Sequence[int] = (0,)
) -> np.ndarray:
    """Sorted int64 indices of the labels of C×H×W probabilities that can win a CRF: those in ``always``
    (background) plus every label whose probability reaches ``eps`` at some pixel (``eps`` 0: all labels);
    ``top_k`` keeps only the ``top_k`` of those other labels with the highest peak probability (ties: lower index)."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be C×H×W, got {probs.shape}")
    if not 0.0 <= eps <= 1.0 or (top_k is not None and top_k < 0):
        raise ValueError(f"eps must lie in [0, 1] and top_k be >= 0, got {eps}, {top_k}")
    peak = probs.reshape(probs.shape[0], -1).max(axis=1) if probs[0].size else np.zeros(probs.shape[0])
    fixed = np.zeros(probs.shape[0], bool)
    fixed[[a for a in always if 0 <= a < probs.shape[0]]] = True
    others = np.flatnonzero(~fixed & (peak >= eps))
    if top_k is not None and others.size > top_k:
        others = others[np.argsort(-peak[others], kind="stable")[:top_k]]
    return np.union1d(np.flatnonzero(fixed), others).astype(np.int64)


def crf_labels_from_probs(
    image: np.ndarray, probs: np.ndarray, eps: float = 0.0, top_k: int | None = None, **crf: float
) -> np.ndarray:
    """H×W int64 class ids (indices into ``probs``' C labels) after :func:`crf_from_probs` restricted to
    :func:`candidate_labels` (``eps``, ``top_k``; the kept probabilities renormalised per pixel, which leaves the
    mean-field updates of the kept labels unchanged) and mapped back to ids. ``eps=0`` and no ``top_k`` is the
    all-class CRF. ``crf``: the keyword settings of :func:`crf_from_probs`."""
    probs = np.asarray(probs, dtype=np.float32)
    keep = candidate_labels(probs, eps, top_k)
    if keep.size == probs.shape[0]:
        return np.argmax(crf_from_probs(image, probs, **crf), axis=0)
    sub = probs[keep]
    sub = sub / np.maximum(sub.sum(axis=0, keepdims=True), np.float32(1e-20))
    return keep[np.argmax(crf_from_probs(image, sub, **crf), axis=0)]


def ir_label(
    image: np.ndarray,
    cam_hr: np.ndarray,
    keys: np.ndarray | Sequence[int],
    conf_fg: float = CONF_FG,
    conf_bg: float = CONF_BG,
    gt_prob: float = GT_PROB,
    iters: int = ITERS,
    pos: Sequence[float] = LABEL_POS,
    bi: Sequence[float] = LABEL_BI,
) -> np.ndarray:
    """IRN's training label of one image: uint8 H×W with 0 (background), class ids (keys + 1) and 255 (unsure).

    ``cam_hr`` is the Cv×H×W max-normalised CAM of the classes ``keys`` (0-based foreground indices). Two passes,
    each = prepend a constant background score, argmax, label-CRF, map through [0] + (keys + 1):
    ``fg`` with score ``conf_fg`` and ``bg`` with ``conf_bg`` (< conf_fg). Foreground pixels of ``fg`` keep their
    class; pixels background in both passes are 0; the rest (background only at the high threshold) are 255.
    An image without keys is all background.
    """
    cam_hr = np.asarray(cam_hr, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if cam_hr.ndim != 3 or cam_hr.shape[0] != keys.size:
        raise ValueError(f"cam_hr must be Cv×H×W with Cv = len(keys) = {keys.size}, got {cam_hr.shape}")
    if keys.size and (keys.min() < 0 or keys.max() + 1 >= IGNORE):
        raise ValueError(f"keys {keys.tolist()} must be 0-based class indices below {IGNORE - 1}")
    size = cam_hr.shape[1:]
    _check_image(image, size)
    if keys.size == 0:
        return np.zeros(size, np.uint8)
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)

    def one_pass(bg_score: float) -> np.ndarray:
        scores = np.concatenate([np.full((1, *size), bg_score, np.float32), cam_hr], axis=0)
        refined = crf_from_labels(image, np.argmax(scores, axis=0), keys.size + 1, gt_prob, iters, pos, bi)
        return lut[refined]

    fg, bg = one_pass(conf_fg), one_pass(conf_bg)
    out = fg.copy()
    out[fg == 0] = IGNORE
    out[(fg == 0) & (bg == 0)] = 0
    return out


__all__ = [
    "CONF_BG",
    "CONF_FG",
    "candidate_labels",
    "crf_from_labels",
    "crf_from_probs",
    "crf_labels_from_probs",
    "ir_label",
]
