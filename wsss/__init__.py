"""wsss: weakly-supervised semantic segmentation, from image-level labels to a segmentation network."""

from wsss.runtime.errors import InputError

__all__ = ["InputError"]
__version__ = "0.1.0"
