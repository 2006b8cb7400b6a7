"""Tensor/array operations shared by stages: CAM inference and post-processing (``cam``)."""
