"""The trained DeepLab as self-contained files that load where ``wsss`` is not installed: TorchScript (``model.ts``,
plain ``torch.jit.load``; deprecated upstream, kept while torch loads it), a ``torch.export`` program
(``model.pt2``, ``torch.export.load``) and ONNX (``model.onnx``, onnxruntime and others), with their description
(``model.json``).

Each is the whole inference graph of :class:`wsss.pipeline.segment.TestTimeSegmenter` (the one ``infer_seg`` and
``predict`` run): input normalisation, the run's test scales and flip, the MSC max fusion over 1.0 and the MSC
scales, and the bilinear upsampling to the input size. Its input is a float or uint8 tensor B×3×H×W of **RGB
values in 0..255** (any H, W ≥ 1; all images of a batch the same size); its output is float32 B×C×H×W class
scores, ``argmax(1)`` = class ids (0 = background, ``model.json`` ``classes``). No dense CRF (that is
``pydensecrf``, outside the graph).

The base network (ResNet + ASPP, fully convolutional, no size-dependent code) is traced; everything around it is
scripted, so the graph works at every input size, not only the one traced.
"""

from __future__ import annotations

import builtins
import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.seg_data import CAFFE_MEAN_BGR
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.models.deeplab import MSC
from wsss.pipeline.segment import TestTimeSegmenter
from wsss.runtime.io import atomic_path, palette_rgb, write_json

FORMAT = "wsss-deeplab-torchscript/1"
TRACE_SIZE = 65
ONNX_OPSET = 21
INPUT_NAME, OUTPUT_NAME = "images", "scores"
# The example the program is traced on: batch 2 and sizes above 1, so that torch.export keeps all three symbolic
EXAMPLE_SHAPE = (2, 3, TRACE_SIZE, TRACE_SIZE + 2)


def normalisation(style: str) -> dict[str, Any]:
    """What the network expects of its input, as applied inside ``model.ts`` (:func:`wsss.data.seg_data.
    normalize_image`): ``x[channel_order] / divisor - mean) / std`` with ``x`` the RGB image on 0..255."""
    if style == "torchvision":
        return {
            "channel_order": "RGB",
            "divisor": 255.0,
            "mean": [float(v) for v in IMAGENET_MEAN],
            "std": [float(v) for v in IMAGENET_STD],
        }
    if style == "caffe":
        return {
            "channel_order": "BGR",
            "divisor": 1.0,
            "mean": [float(v) for v in CAFFE_MEAN_BGR],
            "std": [1.0, 1.0, 1.0],
        }
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
        return F.interpolate(logits, size=[images.shape[-2], images.shape[-1]], mode="bilinear", align_corners=False)


def script_model(model: MSC, params: dict[str, Any]) -> torch.jit.ScriptModule:
    """The TorchScript module of a trained DeepLab (eval mode, CPU) with the ``seg`` settings ``style``,
    ``test_scales`` and ``test_flip``."""
    model = copy.deepcopy(model).cpu().eval()
    segmenter = TestTimeSegmenter(model, params["test_scales"], params["test_flip"])
    example = torch.zeros(1, 3, TRACE_SIZE, TRACE_SIZE)
    with torch.no_grad():  # torch.jit warns that it is deprecated upstream (README "Predict and export")
        model.base = torch.jit.trace(model.base, example, check_trace=False)
        return torch.jit.script(ExportedSegmenter(segmenter, params["style"]).eval())


def export_program(model: MSC, params: dict[str, Any]) -> torch.export.ExportedProgram:
    """The ``torch.export`` program of the same graph as :func:`script_model`, dynamic in batch, height and width.

    Traced with size-oblivious shape reasoning (``backed_size_oblivious``): without it torch.export assumes that
    no feature map is 1 pixel wide and guards the input to at least 9 pixels; the graph has no branch on sizes, so
    the program is valid at every size (the tests compare it with the eager model down to 1×1)."""
    import torch.fx.experimental._config as fx_config

    model = copy.deepcopy(model).cpu().eval()
    module = ExportedSegmenter(TestTimeSegmenter(model, params["test_scales"], params["test_flip"]), params["style"])
    dims = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        return torch.export.export(module.eval(), (torch.zeros(EXAMPLE_SHAPE),), dynamic_shapes={"images": dims})


def _onnx_round(number: Any, ndigits: Any = None) -> Any:
    """Python's ``round`` of a symbolic size (the test scales) in ONNX: Round is half to even, as Python's."""
    from onnxscript import INT64
    from onnxscript import opset18 as op

    return op.Cast(op.Round(number), to=INT64.dtype)


def write_program(program: torch.export.ExportedProgram, path: str | os.PathLike[str]) -> None:
    """``model.pt2`` (``torch.export.save``), atomically."""
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))


def write_onnx(program: torch.export.ExportedProgram, path: str | os.PathLike[str]) -> None:
    """``model.onnx`` of an exported program (opset :data:`ONNX_OPSET`, input ``images`` B×3×H×W, output
    ``scores`` B×C×H×W, all of B, H, W dynamic), one file (no external data), atomically."""
    import onnx

    onnx_program = torch.onnx.export(
        program,
        (torch.zeros(EXAMPLE_SHAPE),),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=ONNX_OPSET,
        custom_translation_table={builtins.round: _onnx_round},
        verbose=False,
    )
    proto = onnx_program.model_proto
    for value in (*proto.graph.input, *proto.graph.output):  # readable names for the dynamic axes
        for axis, name in zip(value.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
            if name is not None:
                axis.dim_param = name
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))


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
        "files": {
            "model.ts": {
                "format": "TorchScript (torch.jit.load; deprecated upstream)",
                "input": "images",
                "output": "scores",
            },
            "model.pt2": {
                "format": "torch.export program (torch.export.load(path).module())",
                "input_dtype": "float32",
                "dynamic_axes": ["batch", "height", "width"],
            },
            "model.onnx": {
                "format": "ONNX",
                "opset": ONNX_OPSET,
                "input": INPUT_NAME,
                "output": OUTPUT_NAME,
                "input_dtype": "float32",
                "dynamic_axes": ["batch", "height", "width"],
            },
        },
        "torch_version": torch.__version__,
    }


def export_model(
    model: MSC,
    params: dict[str, Any],
    classes: Sequence[str],
    ts_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
    run: str | None = None,
) -> None:
    """Write ``model.ts`` and ``model.json``, each atomically."""
    scripted = script_model(model, params)
    with atomic_path(ts_path) as tmp:
        torch.jit.save(scripted, str(tmp))
    write_json(json_path, metadata(params, classes, run))


__all__ = [
    "FORMAT",
    "ONNX_OPSET",
    "ExportedSegmenter",
    "export_model",
    "export_program",
    "metadata",
    "normalisation",
    "script_model",
    "write_onnx",
    "write_program",
]
