"""Augmentations: crop/pad placement, joint flips, resize ranges, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.data import transforms as T


def test_random_crop_of_larger_image_is_a_window() -> None:
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    rng = np.random.default_rng(0)
    (crop,) = T.random_crop([img], 8, [0.0], rng)
    y, x = divmod(int(crop[0, 0]), 30)
    np.testing.assert_array_equal(crop, img[y : y + 8, x : x + 8])


@pytest.mark.parametrize("mode", ["random", "bottom_right"])
def test_random_crop_pads_smaller_image(mode: str) -> None:
    img = np.ones((5, 6, 3), np.float32)
    mask = np.full((5, 6), 3, np.uint8)
    seen = set()
    for seed in range(20):
        ci, cm = T.random_crop([img, mask], 10, [0.0, 255], np.random.default_rng(seed), pad_mode=mode)
        assert ci.shape == (10, 10, 3) and cm.shape == (10, 10)
        ys, xs = np.nonzero(cm == 3)
        assert np.ptp(ys) == 4 and np.ptp(xs) == 5 and (cm != 3).sum() == (cm == 255).sum()
        np.testing.assert_array_equal(ci[..., 0] == 1, cm == 3)  # image and mask stay aligned
        seen.add((ys.min(), xs.min()))
    assert (seen == {(0, 0)}) == (mode == "bottom_right")


def test_hflip_is_joint() -> None:
    a = np.arange(12).reshape(3, 4)
    flips = [T.random_hflip([a, a * 10], np.random.default_rng(s)) for s in range(10)]
    assert any((f[0] == a[:, ::-1]).all() for f in flips) and any((f[0] == a).all() for f in flips)
    assert all((f[1] == f[0] * 10).all() for f in flips)


def test_resize_long_in_range_and_aspect_kept() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    for seed in range(10):
        out = T.random_resize_long(img, 60, 80, np.random.default_rng(seed))
        assert 60 <= out.shape[1] <= 80 and out.shape[0] == round(out.shape[1] / 2)


def test_normalize_imagenet() -> None:
    px = np.array([[[124, 116, 104]]], np.uint8)
    np.testing.assert_allclose(T.normalize(px)[0, 0], (px[0, 0] / 255 - T.IMAGENET_MEAN) / T.IMAGENET_STD, atol=1e-6)
    assert abs(T.normalize(px)).max() < 0.01
