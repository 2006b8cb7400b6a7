"""Multi-scale + flip CAM inference (docs/method.md#cam-inference) and CAM post-processing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.models.backbone import build_resnet
from wsss.models.vwl import VWLNet
from wsss.ops.cam import (
    cam_to_labels,
    fuse_flip,
    label_keys,
    multiscale_cam,
    multiscale_cams,
    pack_cam,
    resize_image,
    scaled_size,
    stride4_size,
    upsample_cam,
)


class CountingCam:
    """Wrap a CAM function and record the batch shapes it was called with."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(batch.shape))
        return self.fn(batch)


def _asymmetric_cam(batch: torch.Tensor) -> torch.Tensor:
    """A stride-2 CAM function that is not flip-equivariant (asymmetric kernel, strided grid)."""
    w = torch.linspace(-1, 1, 5 * 3 * 9).reshape(5, 3, 3, 3)
    return F.relu(F.conv2d(batch, w, stride=2, padding=1))


def _pointwise_cam(batch: torch.Tensor) -> torch.Tensor:
    """A per-pixel CAM function (1×1 conv), hence exactly flip-equivariant."""
    w = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.3, 0.3], [-1.0, 0.4, 0.9]])[:, :, None, None]
    return F.relu(F.conv2d(batch, w))


@pytest.fixture(scope="module")
def vwl_cam():
    torch.manual_seed(0)
    net = VWLNet(build_resnet(18), num_classes=4, k_words=8).eval()
    return net.forward_cam


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_sizes() -> None:
    assert scaled_size((375, 500), 0.5) == (188, 250)  # 187.5 rounds half to even, like np.round
    assert scaled_size((10, 3), 0.1) == (1, 1)
    assert stride4_size(37, 40) == (10, 10) and stride4_size(1, 4) == (1, 1)


def test_fuse_flip_by_hand() -> None:
    cams = torch.tensor([[[[1.0, 5.0, 0.0]]], [[[2.0, 2.0, 4.0]]]])  # 2×1×1×3: image, flipped image
    assert fuse_flip(cams, "max").flatten().tolist() == [4.0, 5.0, 2.0]
    assert fuse_flip(cams, "sum").flatten().tolist() == [5.0, 7.0, 2.0]


def test_pointwise_cam_flip_symmetry() -> None:
    x = _image(12, 10, 0)
    cam = _pointwise_cam(x[None])
    torch.testing.assert_close(_pointwise_cam(x.flip(-1)[None]), cam.flip(-1))
    # an equivariant CAM fused with its flip gives itself (max) — the flip is undone before fusing
    pair = _pointwise_cam(torch.stack([x, x.flip(-1)]))
    torch.testing.assert_close(fuse_flip(pair, "max"), cam[0])
    torch.testing.assert_close(fuse_flip(pair, "sum"), 2 * cam[0])


@pytest.mark.parametrize("fusion", ["max", "sum"])
def test_multiscale_cam_is_flip_equivariant(fusion: str) -> None:
    """max/sum fusion symmetrises any CAM function: CAMs of flip(x) are the flipped CAMs of x."""
    x = _image(21, 30, 1)
    kw = dict(scales=(1.0, 0.5, 1.5), fusion=fusion)
    a = multiscale_cam(_asymmetric_cam, x, [4, 1], **kw)
    b = multiscale_cam(_asymmetric_cam, x.flip(-1), [4, 1], **kw)
    torch.testing.assert_close(b.cam, a.cam.flip(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.high_res, a.high_res.flip(-1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_asymmetric_cam(x.flip(-1)[None]), _asymmetric_cam(x[None]).flip(-1))


def test_symmetric_image_gives_symmetric_cam(vwl_cam) -> None:
    half = _image(48, 24, 2)
    x = torch.cat([half, half.flip(-1)], dim=-1)  # 48×48, mirror-symmetric
    res = multiscale_cam(vwl_cam, x, [0, 1, 2, 3], scales=(1.0, 0.75))
    torch.testing.assert_close(res.cam, res.cam.flip(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.high_res, res.high_res.flip(-1), rtol=1e-5, atol=1e-6)


def test_single_scale_known_answer() -> None:
    """Identity CAM function at scale 1: high_res is the image channels `keys`, max-normalised."""
    x = _image(9, 14, 3).abs()
    res = multiscale_cam(lambda b: b, x, torch.tensor([2, 0]), scales=(1.0,))
    assert res.keys.tolist() == [2, 0]
    expected = x[[2, 0]] / (x[[2, 0]].amax(dim=(1, 2), keepdim=True) + 1e-5)
    torch.testing.assert_close(res.high_res, expected)
    h4, w4 = stride4_size(9, 14)
    low = F.interpolate(x[None, [2, 0]], size=(h4, w4), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(res.cam, low / (low.amax(dim=(1, 2), keepdim=True) + 1e-5))
    assert res.cam.shape == (2, 3, 4) and float(res.cam.amax()) < 1.0


def test_scales_are_summed_before_normalising() -> None:
    """A CAM function that is constant per image gives each scale's constant; the sum is then normalised."""

    def const(b: torch.Tensor) -> torch.Tensor:  # value = image height, at stride 1
        return torch.full((b.shape[0], 2, *b.shape[-2:]), float(b.shape[-2]))

    x = torch.zeros(3, 8, 8)
    res = multiscale_cam(const, x, [1], scales=(1.0, 0.5), fusion="sum", with_high_res=False)
    assert res.high_res is None
    total = 2 * 8.0 + 2 * 4.0  # flip pair summed at each scale, then scales summed
    torch.testing.assert_close(res.cam, torch.full((1, 2, 2), total / (total + 1e-5)))


def test_batched_equals_per_scale(vwl_cam) -> None:
    images = [_image(32, 40, 4), _image(32, 40, 5), _image(25, 22, 6)]
    keys = [[0, 3], [1], [2, 3, 0]]
    scales = (1.0, 0.5, 1.5, 1.0)
    batched, single = CountingCam(vwl_cam), CountingCam(vwl_cam)
    a = multiscale_cams(batched, images, keys, scales=scales, batch_scales=True, max_batch=16)
    b = multiscale_cams(single, images, keys, scales=scales, batch_scales=False)
    for ra, rb in zip(a, b, strict=True):
        assert torch.equal(ra.keys, rb.keys)
        torch.testing.assert_close(ra.cam, rb.cam, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ra.high_res, rb.high_res, rtol=1e-5, atol=1e-5)
    assert len(single.calls) == 12 and all(c[0] == 2 for c in single.calls)
    # images 0 and 1 share all shapes, scale 1.0 is listed twice: 3 shapes for them, 3 for image 2
    # (25×22 at 0.5 and 1.5 rounds half to even: 12×11 and 38×33)
    assert len(batched.calls) == 6 and sorted(c[0] for c in batched.calls) == [2, 2, 4, 4, 4, 8]
    one = multiscale_cam(vwl_cam, images[2], keys[2], scales=scales)
    torch.testing.assert_close(one.cam, a[2].cam, rtol=1e-5, atol=1e-5)
    assert a[0].cam.shape == (2, 8, 10) and a[0].high_res.shape == (2, 32, 40)


def test_max_batch_keeps_flip_pairs() -> None:
    cam = CountingCam(_asymmetric_cam)
    images = [_image(16, 16, s) for s in range(5)]
    res = multiscale_cams(cam, images, [[0]] * 5, scales=(1.0,), max_batch=2)
    assert [c[0] for c in cam.calls] == [4, 4, 2]
    ref = multiscale_cam(_asymmetric_cam, images[4], [0], scales=(1.0,))
    torch.testing.assert_close(res[4].cam, ref.cam)


def test_no_keys_skips_forward() -> None:
    cam = CountingCam(_asymmetric_cam)
    res = multiscale_cam(cam, _image(10, 12, 0), [])
    assert cam.calls == [] and res.cam.shape == (0, 3, 3) and res.high_res.shape == (0, 10, 12)


def test_bad_keys_and_options() -> None:
    with pytest.raises(ValueError, match="out of range"):
        multiscale_cam(_asymmetric_cam, _image(8, 8, 0), [5])
    with pytest.raises(ValueError, match="fusion"):
        multiscale_cam(_asymmetric_cam, _image(8, 8, 0), [0], fusion="mean")


def test_bicubic_resize_matches_pil() -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((60, 80, 3)) * 255).astype(np.uint8), (0, 0), 2)
    for scale in (0.5, 1.5):
        h, w = scaled_size((60, 80), scale)
        pil = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.float32)
        ours = resize_image(torch.from_numpy(img).permute(2, 0, 1).float(), (h, w)).permute(1, 2, 0).numpy()
        assert np.abs(pil - ours).mean() < 0.5 and np.abs(pil - ours).max() < 1.5  # PIL rounds to uint8


def test_cam_to_labels_by_hand() -> None:
    cams = np.array([[[0.05, 0.5, 0.2, 0.13]], [[0.10, 0.2, 0.9, 0.0]]], dtype=np.float32)  # 2×1×4
    labels = cam_to_labels(cams, np.array([4, 11]), bg_score=0.13)
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[0, 5, 12, 0]]  # a tie with the background score goes to background
    assert cam_to_labels(np.zeros((0, 2, 2)), [], 0.13).tolist() == [[0, 0], [0, 0]]
    assert label_keys(np.array([0, 1, 0, 1.0])).tolist() == [1, 3]


def test_pack_and_upsample() -> None:
    cam = torch.rand(3, 5, 6)
    packed = pack_cam(cam)
    assert packed.dtype == np.float16 and np.abs(packed.astype(np.float32) - cam.numpy()).max() < 5e-4
    up = upsample_cam(np.array([[[0.0, 1.0]]], dtype=np.float16), (1, 4), normalize=False)
    assert up.dtype == np.float32
    np.testing.assert_allclose(up, [[[0.0, 0.25, 0.75, 1.0]]])
    up = upsample_cam(np.array([[[0.0, 0.5]]]), (2, 4))
    np.testing.assert_allclose(up[0, 1], np.array([0.0, 0.125, 0.375, 0.5]) / (0.5 + 1e-5), rtol=1e-6)


def test_max_pixels_bounds_each_forward_call_and_changes_no_cam() -> None:
    """Same-size 16×16 images at scales 1 and 2: with a bound of 2 flipped 32×32 images per call, the scale-2 calls
    carry ≤ 4 rows (one image at least, even when one alone exceeds the bound), the scale-1 calls the 8 of
    max_batch; every CAM equals the unbounded one. Planted bug caught: ignoring max_pixels (8 rows at scale 2)."""
    images = [_image(16, 16, s) for s in range(4)]
    unbounded = multiscale_cams(_asymmetric_cam, images, [[0]] * 4, scales=(1.0, 2.0), max_batch=4)
    cam = CountingCam(_asymmetric_cam)
    bounded = multiscale_cams(cam, images, [[0]] * 4, scales=(1.0, 2.0), max_batch=4, max_pixels=2 * 2 * 32 * 32)
    assert sorted((tuple(c[-2:]), c[0]) for c in cam.calls) == [((16, 16), 8), ((32, 32), 4), ((32, 32), 4)]
    assert all(c[0] * c[-2] * c[-1] <= 2 * 2 * 32 * 32 for c in cam.calls)
    for a, b in zip(bounded, unbounded):
        assert torch.equal(a.cam, b.cam) and torch.equal(a.high_res, b.high_res)
    cam = CountingCam(_asymmetric_cam)
    multiscale_cams(cam, images[:2], [[0]] * 2, scales=(2.0,), max_pixels=10)
    assert [c[0] for c in cam.calls] == [2, 2]  # one image (with its flip) per call at least


def test_stride4_size_is_the_ceiling_of_a_quarter() -> None:
    """Every H, W in 1..20 against ⌈n/4⌉ and against the output size of a stride-4 conv (kernel 1, no padding).
    Planted bug caught: (W − 2) // 4 + 1 (wrong for W ≡ 1 mod 4)."""
    for h in range(1, 21):
        for w in range(1, 21):
            conv = F.conv2d(torch.zeros(1, 1, h, w), torch.ones(1, 1, 1, 1), stride=4).shape[-2:]
            assert stride4_size(h, w) == (-(-h // 4), -(-w // 4)) == tuple(conv), (h, w)


def test_resize_image_returns_the_image_itself_at_its_own_size() -> None:
    """Planted bugs caught: comparing ``shape[2:]`` or ``shape[-3:]`` with the size (then it always resamples)."""
    x = _image(7, 9, 0)
    assert resize_image(x, (7, 9)) is x and resize_image(x, [7, 9], "bilinear") is x
    assert resize_image(x, (9, 7)).shape == (3, 9, 7)
    with pytest.raises(ValueError, match=r"^resize_mode must be one of \('bicubic', 'bilinear'\), got 'nearest'$"):
        resize_image(x, (9, 7), "nearest")


def test_fuse_flip_defaults_to_max_and_names_the_choices() -> None:
    """Planted bugs caught: a default other than ``"max"``; ``ValueError(None)``."""
    cams = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fuse_flip(cams), fuse_flip(cams, "max"))
    with pytest.raises(ValueError, match=r"^fusion must be one of \('max', 'sum'\), got 'mean'$"):
        fuse_flip(cams, "mean")


def test_multiscale_cam_one_forward_call_per_size() -> None:
    """Nine scales that round a 10×10 image to the same 10×10 go in one call of 18 rows (each with its flip) unless
    batch_scales=False (9 calls of 2); the CAMs are the same either way. Planted bugs caught: ``multiscale_cam``
    passing max_batch=8 (calls of 16 + 2), dropping or replacing its ``batch_scales`` argument, a default False."""
    x = _image(10, 10, 1)
    scales = tuple(1.0 + 0.005 * k for k in range(9))
    together, apart = CountingCam(_asymmetric_cam), CountingCam(_asymmetric_cam)
    a = multiscale_cam(together, x, [0, 2], scales=scales)
    b = multiscale_cam(apart, x, [0, 2], scales=scales, batch_scales=False)
    assert [c[0] for c in together.calls] == [18] and [c[0] for c in apart.calls] == [2] * 9
    torch.testing.assert_close(a.cam, b.cam)
    torch.testing.assert_close(a.high_res, b.high_res)


def test_label_keys_are_int64_indices_strictly_above_one_half() -> None:
    """Planted bugs caught: ``>= 0.5``; ``astype(None)`` (float64 indices)."""
    keys = label_keys([0.5, 0.51, 1.0, 0.0, 0.49])
    assert keys.dtype == np.int64 and keys.tolist() == [1, 2]


def test_cam_to_labels_ties_and_key_shapes() -> None:
    """A CAM equal to ``bg_score`` is background whatever the float types (the comparison is made in float32, the
    CAMs' storage type): 0.1 rounds up in float32, 0.13 rounds down. Keys may come as a column (``np.argwhere``).
    Planted bugs caught: the background plane or the CAMs left in float64; ``reshape(None)`` of the keys."""
    assert cam_to_labels(np.full((1, 1, 2), 0.1, np.float32), [3], bg_score=0.1).tolist() == [[0, 0]]
    assert cam_to_labels(np.full((1, 1, 2), 0.13), [3], bg_score=0.13).tolist() == [[0, 0]]
    assert cam_to_labels(np.full((1, 1, 2), 0.14), [3], bg_score=0.13).tolist() == [[4, 4]]
    vector = np.array([0, 1, 0, 1.0])
    cams = np.array([[[0.9, 0.0]], [[0.0, 0.8]]], np.float32)
    column = np.argwhere(vector > 0.5)
    assert column.shape == (2, 1) and cam_to_labels(cams, column, 0.5).tolist() == [[2, 4]]
    assert cam_to_labels(cams, label_keys(vector), 0.5).tolist() == [[2, 4]]


def test_cam_to_labels_rejects_maps_of_the_wrong_rank_or_count() -> None:
    """Planted bugs caught: ``and`` instead of ``or`` (a 2-D map with the right first axis passes); ``ValueError(None)``."""
    with pytest.raises(ValueError, match=r"^cams must be Cv×h×w with Cv = len\(keys\) = 2, got \(2, 4\)$"):
        cam_to_labels(np.zeros((2, 4)), [1, 2], 0.1)
    with pytest.raises(ValueError, match=r"^cams must be Cv×h×w with Cv = len\(keys\) = 1, got \(2, 1, 4\)$"):
        cam_to_labels(np.zeros((2, 1, 4)), [1], 0.1)


def test_upsample_cam_dtypes_empty_and_bad_shapes() -> None:
    """float16/float64 arrays and bfloat16 tensors give exactly the float32 computation; no channels give Cv = 0.
    Planted bugs caught: interpolating in the input's own dtype (``np.asarray(cam)`` without float32); sending a
    tensor through numpy (bfloat16 has no numpy type); a wrong empty result; an unformatted message."""
    cam = np.random.default_rng(0).random((3, 5, 6)).astype(np.float32)
    for dtype in (np.float16, np.float64):
        for normalize in (True, False):
            want = upsample_cam(cam.astype(dtype).astype(np.float32), (17, 23), normalize)
            got = upsample_cam(cam.astype(dtype), (17, 23), normalize)
            assert got.dtype == np.float32 and np.array_equal(got, want), (dtype, normalize)
    bf16 = torch.from_numpy(cam).to(torch.bfloat16)
    assert np.array_equal(upsample_cam(bf16, (17, 23)), upsample_cam(bf16.float().numpy(), (17, 23)))
    empty = upsample_cam(np.zeros((0, 2, 3), np.float16), (8, 12))
    assert empty.shape == (0, 8, 12) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"^cam must be Cv×h×w, got \(2, 3\)$"):
        upsample_cam(np.zeros((2, 3)), (8, 12))
