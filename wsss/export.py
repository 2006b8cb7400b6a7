"""The trained DeepLab as a self-contained TorchScript file (``model.ts``) plus its description (``model.json``),
loadable with plain ``torch.jit.load`` where ``wsss`` is not installed.

``model.ts`` is the whole inference graph of :class:`wsss.segment.TestTimeSegmenter` (the one ``infer_seg`` and
``predict`` run): input normalisation, the run's test scales and flip, the MSC max fusion over 1.0 and the MSC
scales, and the bilinear upsampling to the input size. Its input is a float or uint8 tensor B×3×H×W of **RGB
values in 0..255** (any H, W ≥ 1; all images of a batch the same size); its output is float32 B×C×H×W class
scores, ``argmax(1)`` = class ids (0 = background, ``model.json`` ``classes``). No dense CRF (that is
``pydensecrf``, outside the graph).

The base network (ResNet + ASPP, fully convolutional, no size-dependent code) is traced; everything around it is
scripted, so the graph works at every input size, not only the one traced.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.seg_data import CAFFE_MEAN_BGR
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.io import atomic_path, palette_rgb, write_json
from wsss.models.deeplab import MSC
from wsss.segment import TestTimeSegmenter

FORMAT = "wsss-deeplab-torchscript/1"
TRACE_SIZE = 65


def normalisation(style: str) -> dict[str, Any]:
    """What the network expects of its input, as applied inside ``model.ts`` (:func:`wsss.data.seg_data.
    normalize_image`): ``x[channel_order] / divisor - mean) / std`` with ``x`` the RGB image on 0..255."""
    if style == "torchvision":
        return {"channel_order": "RGB", "divisor": 255.0, "mean": [float(v) for v in IMAGENET_MEAN],
                "std": [float(v) for v in IMAGENET_STD]}
    if style == "caffe":
        return {"channel_order": "BGR", "divisor": 1.0, "mean": [float(v) for v in CAFFE_MEAN_BGR],
                "std": [1.0, 1.0, 1.0]}
    raise ValueError(f"unknown normalisation style {style!r}")


class ExportedSegmenter(nn.Module):
    """RGB 0..255 B×3×H×W → float32 B×C×H×W class scores at the input size (module doc)."""

    def __init__(self, segmenter: TestTimeSegmenter, style: str) -> None:
        super().__init__()
        norm = normalisation(style)
        self.segmenter = segmenter
        self.bgr = norm["channel_order"] == "BGR"
        self.divisor = float(norm["divisor"])
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError("expected a B x 3 x H x W tensor of RGB values in 0..255")
        x = images.to(self.mean.dtype)
        if self.bgr:
            x = x.flip(1)
        x = (x / self.divisor - self.mean) / self.std
        logits = self.segmenter(x)
        return F.interpolate(logits, size=[images.shape[-2], images.shape[-1]], mode="bilinear",
                             align_corners=False)


def script_model(model: MSC, params: dict[str, Any]) -> torch.jit.ScriptModule:
    """The TorchScript module of a trained DeepLab (eval mode, CPU) with the ``seg`` settings ``style``,
    ``test_scales`` and ``test_flip``."""
    model = copy.deepcopy(model).cpu().eval()
    segmenter = TestTimeSegmenter(model, params["test_scales"], params["test_flip"])
    example = torch.zeros(1, 3, TRACE_SIZE, TRACE_SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": still the format that loads
        model.base = torch.jit.trace(model.base, example, check_trace=False)  # anywhere without Python code
        return torch.jit.script(ExportedSegmenter(segmenter, params["style"]).eval())


def metadata(params: dict[str, Any], classes: Sequence[str], run: str | None = None) -> dict[str, Any]:
    """The ``model.json`` content: classes, input normalisation and colour order, output stride, inference
    settings, and how to call ``model.ts``."""
    palette = palette_rgb()[: len(classes)]
    return {
        "format": FORMAT,
        "run": run,
        "classes": list(classes),
        "num_classes": len(classes),
        "palette": palette.tolist(),
        "input": {
            "shape": "B x 3 x H x W (any H, W >= 1; one size per batch)",
            "dtype": "uint8 or float",
            "color_order": "RGB",
            "value_range": [0, 255],
            "normalisation_inside_model": normalisation(params["style"]),
        },
        "output": {
            "shape": "B x C x H x W (the input size), float32",
            "meaning": "class scores (logits); argmax over dim 1 = class id, 0 = background",
        },
        "output_stride": 8,
        "backbone": f"resnet{params['backbone']}",
        "style": params["style"],
        "msc_scales": [float(s) for s in params["msc_scales"]],
        "test_scales": [float(s) for s in params["test_scales"]],
        "test_flip": bool(params["test_flip"]),
        "crf": "not included (the pipeline's predict rule adds pydensecrf with seg.crf)",
        "torch_version": torch.__version__,
    }


def export_model(model: MSC, params: dict[str, Any], classes: Sequence[str], ts_path: str | os.PathLike[str],
                 json_path: str | os.PathLike[str], run: str | None = None) -> None:
    """Write ``model.ts`` and ``model.json``, each atomically."""
    scripted = script_model(model, params)
    with atomic_path(ts_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp))
    write_json(json_path, metadata(params, classes, run))


__all__ = ["ExportedSegmenter", "FORMAT", "export_model", "metadata", "normalisation", "script_model"]
