"""Multi-scale + flip CAM inference and CAM post-processing (docs/method.md#cam-inference).

For an image of size H×W and each scale s the image is resized to (round(H·s), round(W·s)), stacked with its
horizontal flip and passed through a CAM function (a batch B×3×h×w → B×C×h'×w' callable, e.g.
``VWLNet.forward_cam``). The two CAMs are fused (``max`` for VWL, ``sum`` for IRN's own CAMs) into A_s. Then

    cam      = Σ_s bilinear(A_s → (⌊(H−1)/4⌋+1, ⌊(W−1)/4⌋+1))     (stride 4)
    high_res = Σ_s bilinear(A_s → (H, W))

(bilinear with align_corners=False), only the ground-truth classes (``keys``) are kept, and each channel is divided by
its own spatial maximum + 1e-5.

Resizing happens on the normalised float tensor: ``resize_mode="bicubic"`` uses antialiased bicubic interpolation,
which approximates the reference's PIL bicubic resize of the uint8 image (resizing commutes with the per-channel
mean/std normalisation; PIL additionally rounds and clips to uint8, this does not). ``"bilinear"`` is also offered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import scaled_size

CamFn = Callable[[torch.Tensor], torch.Tensor]
FUSIONS = ("max", "sum")
RESIZE_MODES = ("bicubic", "bilinear")
NORM_EPS = 1e-5


class MultiScaleCAM(NamedTuple):
    """CAMs of one image, restricted to its ground-truth classes ``keys`` and max-normalised per channel."""

    keys: torch.Tensor  # Cv int64, class indices (0-based foreground classes)
    cam: torch.Tensor  # Cv×h4×w4 float32 (stride 4)
    high_res: torch.Tensor | None  # Cv×H×W float32, None when not requested
    scores: torch.Tensor | None = None  # C float32 image-level scores at scale 1.0, unflipped (with_scores)


def stride4_size(height: int, width: int) -> tuple[int, int]:
    """The stride-4 CAM size (⌊(H−1)/4⌋+1, ⌊(W−1)/4⌋+1) = (⌈H/4⌉, ⌈W/4⌉)."""
    return (height - 1) // 4 + 1, (width - 1) // 4 + 1


def resize_image(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize a 3×H×W float image to ``size`` (antialiased, align_corners=False); returned as is when unchanged."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode=mode, align_corners=False, antialias=True)[0]


def fuse_flip(cams: torch.Tensor, fusion: str = "max") -> torch.Tensor:
    """Fuse the CAMs of an image (``cams[0]``) and of its horizontal flip (``cams[1]``) after flipping it back."""
    back = cams[1].flip(-1)
    if fusion == "max":
        return torch.maximum(cams[0], back)
    if fusion == "sum":
        return cams[0] + back
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")


def _resize_cam(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(cam[None], size=size, mode="bilinear", align_corners=False)[0]


def max_normalize(cam: torch.Tensor) -> torch.Tensor:
    """Divide each channel of a C×h×w map by its spatial maximum + 1e-5."""
    if cam.shape[0] == 0:
        return cam
    return cam / (cam.flatten(1).amax(dim=1)[:, None, None] + NORM_EPS)


@torch.no_grad()
def multiscale_cams(
    cam_fn: CamFn,
    images: Sequence[torch.Tensor],
    keys: Sequence[Sequence[int] | torch.Tensor],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    fusion: str = "max",
    resize_mode: str = "bicubic",
    batch_scales: bool = True,
    max_batch: int = 8,
    with_high_res: bool = True,
    with_scores: bool = False,
    max_pixels: int | None = None,
) -> list[MultiScaleCAM]:
    """Multi-scale + flip CAMs of several normalised 3×H×W images (sizes may differ), see the module docstring.

    batch_scales=True groups inputs of identical shape (across images and scales) into forward calls of at most
    ``max_batch`` images, each with its flip (2·max_batch rows); False makes one call per image and scale. Both give
    the same CAMs since the CAM of an image does not depend on the rest of its batch (eval-mode BatchNorm).
    ``max_pixels`` also bounds a forward call by its input pixels (rows × height × width, flips included; one
    image at least), so that large photos at scale 2.0 go one at a time while VOC-size ones still go 8 together.
    Images without keys are skipped (empty channel dimension).

    with_scores=True: ``cam_fn`` returns ``(cams, scores)`` (B×C×h'×w', B×C, e.g. :func:`wsss.pipeline.classify.cam_and_scores`)
    and each result's ``scores`` is the row of the unflipped image at scale 1.0, so the image-level scores cost no
    extra forward pass; None when 1.0 is not among the scales or the image has no keys."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    if len(images) != len(keys):
        raise ValueError(f"{len(images)} images but {len(keys)} key lists")
    max_batch = max(1, int(max_batch)) if batch_scales else 1
    key_tensors = [
        torch.as_tensor(np.asarray(k, dtype=np.int64).reshape(-1))
        if not isinstance(k, torch.Tensor)
        else k.to(torch.long).reshape(-1)
        for k in keys
    ]

    jobs: list[tuple[int, int, torch.Tensor]] = []
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image {i} must be 3×H×W, got {tuple(image.shape)}")
        if key_tensors[i].numel() == 0:
            continue
        h, w = image.shape[-2:]
        for si, s in enumerate(scales):
            jobs.append((i, si, resize_image(image, scaled_size((h, w), s), resize_mode)))

    groups: dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]] = {}
    for job in jobs:
        groups.setdefault(tuple(job[2].shape[-2:]), []).append(job)
    fused: dict[tuple[int, int], torch.Tensor] = {}
    image_level: dict[int, torch.Tensor] = {}
    for shape, group in groups.items():
        per_call = max_batch
        if max_pixels is not None:
            per_call = max(1, min(per_call, int(max_pixels) // (2 * shape[0] * shape[1])))
        for start in range(0, len(group), per_call):
            chunk = group[start : start + per_call]
            batch = torch.stack([t for _, _, img in chunk for t in (img, img.flip(-1))])
            out = cam_fn(batch)
            if with_scores:
                out, batch_scores = out
                for j, (i, si, _) in enumerate(chunk):
                    if scales[si] == 1.0:
                        image_level[i] = batch_scores[2 * j].float()
            out = out.float()
            for j, (i, si, _) in enumerate(chunk):
                k = key_tensors[i].to(out.device)
                if k.numel() and (int(k.min()) < 0 or int(k.max()) >= out.shape[1]):
                    raise ValueError(f"keys {k.tolist()} out of range for {out.shape[1]} CAM channels")
                fused[(i, si)] = fuse_flip(out[2 * j : 2 * j + 2, k], fusion)

    results = []
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        h4, w4 = stride4_size(h, w)
        k = key_tensors[i]
        if k.numel() == 0:
            empty_hr = image.new_zeros((0, h, w)) if with_high_res else None
            results.append(MultiScaleCAM(k, image.new_zeros((0, h4, w4)), empty_hr))
            continue
        parts = [fused[(i, si)] for si in range(len(scales))]
        cam = max_normalize(sum(_resize_cam(a, (h4, w4)) for a in parts))
        high_res = max_normalize(sum(_resize_cam(a, (h, w)) for a in parts)) if with_high_res else None
        results.append(MultiScaleCAM(k.to(cam.device), cam, high_res, image_level.get(i)))
    return results


def multiscale_cam(
    cam_fn: CamFn,
    image: torch.Tensor,
    keys: Sequence[int] | torch.Tensor,
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    fusion: str = "max",
    resize_mode: str = "bicubic",
    batch_scales: bool = True,
    with_high_res: bool = True,
) -> MultiScaleCAM:
    """Multi-scale + flip CAMs of one normalised 3×H×W image (see :func:`multiscale_cams`)."""
    return multiscale_cams(
        cam_fn,
        [image],
        [keys],
        scales,
        fusion,
        resize_mode,
        batch_scales,
        max_batch=len(scales),
        with_high_res=with_high_res,
    )[0]


def label_keys(label_vector: np.ndarray | Sequence[float]) -> np.ndarray:
    """Indices (int64) of the classes present (value > 0.5) in a multi-hot foreground label vector."""
    return np.flatnonzero(np.asarray(label_vector) > 0.5).astype(np.int64)


def cam_to_labels(cams: np.ndarray, keys: np.ndarray | Sequence[int], bg_score: float) -> np.ndarray:
    """Label map (uint8 class ids, 0 = background) from Cv×h×w CAMs of classes ``keys`` (0-based foreground).

    A constant background channel ``bg_score`` is prepended, the per-pixel argmax taken (ties go to the lower
    channel, so to background first) and mapped through [0] + (keys + 1)."""
    cams = np.asarray(cams, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or cams.shape[0] != keys.size:
        raise ValueError(f"cams must be Cv×h×w with Cv = len(keys) = {keys.size}, got {cams.shape}")
    scores = np.concatenate([np.full((1, *cams.shape[1:]), bg_score, dtype=np.float32), cams], axis=0)
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return lut[np.argmax(scores, axis=0)]


def pack_cam(cam: torch.Tensor | np.ndarray) -> np.ndarray:
    """Compact storage form of a (max-normalised, so in [0, 1]) CAM: a float16 numpy array (~5e-4 resolution)."""
    if isinstance(cam, torch.Tensor):
        cam = cam.detach().float().cpu().numpy()
    return np.ascontiguousarray(cam, dtype=np.float16)


def upsample_cam(cam: torch.Tensor | np.ndarray, size: tuple[int, int], normalize: bool = True) -> np.ndarray:
    """Stride-4 Cv×h4×w4 CAM → Cv×H×W float32 by bilinear interpolation (align_corners=False).

    This stands in for the reference's ``high_res`` when only the compact stride-4 CAM is stored: it upsamples the
    scale sum once instead of summing per-scale upsamplings, so it is slightly smoother. ``normalize`` re-applies the
    per-channel max-normalisation (interpolation lowers the peak a little)."""
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32)) if not isinstance(cam, torch.Tensor) else cam.float().cpu()
    if t.ndim != 3:
        raise ValueError(f"cam must be Cv×h×w, got {tuple(t.shape)}")
    if t.shape[0] == 0:
        return np.zeros((0, *size), dtype=np.float32)
    up = _resize_cam(t, tuple(size))
    if normalize:
        up = max_normalize(up)
    return up.numpy().astype(np.float32, copy=False)
