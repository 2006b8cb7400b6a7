"""Image/mask augmentations on numpy arrays, each draw taken from an explicit ``np.random.Generator``.

Images are H×W×3 (uint8 or float32), masks H×W uint8. Resizing uses PIL (bicubic images, nearest masks) as the
reference implementations do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize(image: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (H, W): PIL bicubic for uint8 images, nearest for masks (``nearest=True``)."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize((w, h), resample=resample))


def scaled_size(shape_hw: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(round(H·s), round(W·s)), at least 1 pixel each."""
    return max(1, round(shape_hw[0] * factor)), max(1, round(shape_hw[1] * factor))


def random_resize_long(image: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Resize so the long side is a random integer in [low, high], aspect kept (VWL/IRN classifier recipe)."""
    target = int(rng.integers(low, high + 1))
    h, w = image.shape[:2]
    return resize(image, scaled_size((h, w), target / max(h, w)))


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 ImageNet-normalised."""
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def random_hflip(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Flip all arrays horizontally together with probability 1/2."""
    if rng.random() < 0.5:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return arrays


def random_crop(
    arrays: list[np.ndarray], size: int, fills: list[float], rng: np.random.Generator, pad_mode: str = "random"
) -> list[np.ndarray]:
    """Crop all arrays to ``size``×``size`` at one random window.

    Where an array is smaller than the crop it sits in a canvas filled with its ``fill``: at a random offset
    (``pad_mode="random"``, the VWL/IRN recipe) or top-left, i.e. padded bottom-right (``"bottom_right"``, DeepLab).
    """
    h, w = arrays[0].shape[:2]
    offsets = []
    for extent in (h, w):
        space = extent - size
        if space >= 0:
            offsets.append((0, int(rng.integers(0, space + 1))))  # (canvas offset, source offset)
        else:
            offsets.append((int(rng.integers(0, -space + 1)) if pad_mode == "random" else 0, 0))
    (cy, sy), (cx, sx) = offsets
    ch, cw = min(size, h), min(size, w)
    out = []
    for arr, fill in zip(arrays, fills):
        canvas = np.full((size, size) + arr.shape[2:], fill, dtype=arr.dtype)
        canvas[cy : cy + ch, cx : cx + cw] = arr[sy : sy + ch, sx : sx + cw]
        out.append(canvas)
    return out


def to_chw(image: np.ndarray) -> np.ndarray:
    """H×W×C → C×H×W, contiguous."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))
