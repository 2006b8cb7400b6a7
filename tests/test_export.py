"""The exports (TorchScript model.ts, torch.export model.pt2, ONNX model.onnx): each loads in a Python that cannot
import wsss (torch only, or onnxruntime only) and agrees with the eager model at any input size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.artifacts.logits import labels_from_logits
from wsss.data.seg_data import CAFFE_MEAN_BGR
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.outputs.export import export_model, export_program, write_onnx, write_program
from wsss.pipeline.segment import build_segmenter, image_logits

SIZES = [(37, 53), (64, 64), (29, 90), (8, 11)]
CASES = {
    # ResNet-18, torchvision normalisation, two test scales and the flip (the scripted loops, both MSC scales)
    "torchvision": {
        "backbone": 18,
        "style": "torchvision",
        "msc_scales": [0.5, 0.75],
        "test_scales": [1.0, 0.75],
        "test_flip": True,
    },
    # ResNet-50 in Caffe style (BGR minus the mean, ceil-mode pool, stride in the 1x1), no MSC scales
    "caffe": {"backbone": 50, "style": "caffe", "msc_scales": [], "test_scales": [1.0], "test_flip": False},
}

LOADER = r"""
import sys
sys.path[:] = [p for p in sys.path if p and "-packages" not in p] + [SITE]  # the standard library + torch's
try:
    import wsss
except ImportError:
    pass
else:
    raise SystemExit("wsss is importable in the loader: the test proves nothing")
import torch
model = torch.jit.load(TS)
images = torch.load(IMAGES)
out = [model(x[None])[0] for x in images]
assert all(o.shape == (NUM_CLASSES, *x.shape[-2:]) for o, x in zip(out, images))
pair = model(torch.stack([images[1], images[1]]))
torch.save({"labels": [o.argmax(0) for o in out], "batch_equal": bool((pair[0] == pair[1]).all())}, OUT)
"""


def _model(case: dict) -> torch.nn.Module:
    params = {"pretrained": "none", "norm": "batch", "aspp_rates": [6, 12], **case}
    torch.manual_seed(0)
    model = build_segmenter(params, 4, pretrained=False)
    with torch.no_grad():  # give the random BatchNorm statistics and ASPP some spread, so the argmax varies
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for conv in model.base.aspp.branches:
            conv.weight.normal_(0, 0.05)
            conv.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_ts_loads_without_wsss_and_matches_eager(tmp_path: Path, name: str) -> None:
    params = CASES[name]
    model = _model(params)
    classes = ["background", "cat", "dog", "bird"]
    ts, meta = tmp_path / "model.ts", tmp_path / "model.json"
    export_model(model, params, classes, ts, meta, run="tiny")

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    torch.save([torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in images], tmp_path / "images.pt")
    site = str(Path(torch.__file__).resolve().parents[1])
    script = (
        LOADER.replace("SITE", repr(site))
        .replace("TS", repr(str(ts)))
        .replace("IMAGES", repr(str(tmp_path / "images.pt")))
        .replace("OUT", repr(str(tmp_path / "out.pt")))
        .replace("NUM_CLASSES", str(len(classes)))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["batch_equal"]

    seen = set()
    for image, ts_labels in zip(images, result["labels"]):
        eager = labels_from_logits(image_logits(model, image, params), image.shape[:2])
        agree = float((ts_labels.numpy() == eager).mean())
        assert agree >= 0.999, f"{name} {image.shape}: {agree:.5f} of pixels agree"
        seen |= set(np.unique(eager).tolist())
    assert len(seen) >= 2  # the comparison is not between two constant maps

    info = json.loads(meta.read_text())
    assert info["classes"] == classes and info["num_classes"] == 4 and info["output_stride"] == 8
    assert info["input"]["color_order"] == "RGB" and info["input"]["value_range"] == [0, 255]
    norm = info["input"]["normalisation_inside_model"]
    if name == "caffe":
        assert norm["channel_order"] == "BGR" and norm["divisor"] == 1.0
        np.testing.assert_allclose(norm["mean"], CAFFE_MEAN_BGR, rtol=1e-6)
    else:
        assert norm["channel_order"] == "RGB" and norm["divisor"] == 255.0
        np.testing.assert_allclose(norm["mean"], IMAGENET_MEAN, rtol=1e-6)
        np.testing.assert_allclose(norm["std"], IMAGENET_STD, rtol=1e-6)
    assert info["test_scales"] == params["test_scales"] and info["test_flip"] == params["test_flip"]
    assert info["msc_scales"] == params["msc_scales"] and len(info["palette"]) == 4


def test_model_ts_rejects_a_wrong_layout(tmp_path: Path) -> None:
    params = CASES["torchvision"]
    export_model(_model(params), params, ["background", "a", "b", "c"], tmp_path / "m.ts", tmp_path / "m.json")
    model = torch.jit.load(str(tmp_path / "m.ts"))
    with pytest.raises(Exception, match="B x 3 x H x W"):
        model(torch.zeros(1, 20, 20, 3))


def test_readme_snippet_loads_model_ts_without_wsss(tmp_path: Path) -> None:
    """The README's "Predict and export" code, run as written in a Python without wsss, gives H×W class ids."""
    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Predict and export", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = "\n".join(line[2:] for line in block.strip("\n").splitlines())
    assert len(code.splitlines()) <= 5
    params = CASES["torchvision"]
    export_model(_model(params), params, ["background", "a", "b", "c"], tmp_path / "model.ts", tmp_path / "model.json")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    site = str(Path(torch.__file__).resolve().parents[1])
    script = (
        f"import sys\nsys.path[:] = [p for p in sys.path if p and '-packages' not in p] + [{site!r}]\n"
        f"{code}\nassert tuple(ids.shape) == (30, 44) and 0 <= int(ids.min()) and int(ids.max()) < 4\n"
        "assert meta['classes'][0] == 'background'\n"
        "try:\n    import wsss\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('wsss importable')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# Odd, tiny (down to 1x1: every MSC and test scale clamps to 1 pixel) and larger than the traced example (65x67);
# 38 x 0.75 = 28.5 is a tie that Python's round (half to even) and the ONNX graph must resolve alike
DEPLOY_SIZES = [(1, 1), (2, 3), (7, 5), (38, 53), (29, 90), (97, 71)]

PT2_LOADER = LOADER.replace("model = torch.jit.load(TS)", "model = torch.export.load(TS).module()").replace(
    "images = torch.load(IMAGES)", "images = [x.float() for x in torch.load(IMAGES)]"
)  # float32 input only

ONNX_LOADER = r"""
import sys
sys.path[:] = [p for p in sys.path if p and "-packages" not in p] + [SITE]
sys.modules["torch"] = None  # a Python without torch (it shares onnxruntime's site-packages here)
for name in ("wsss", "torch"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(name + " is importable in the loader: the test proves nothing")
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(TS, providers=["CPUExecutionProvider"])
data = np.load(IMAGES)
images = [data[k] for k in sorted(data.files, key=int)]
out = [session.run(None, {"images": x[None].astype(np.float32)})[0][0] for x in images]
assert all(o.shape == (NUM_CLASSES, *x.shape[-2:]) for o, x in zip(out, images))
pair = session.run(None, {"images": np.stack([images[3], images[3]]).astype(np.float32)})[0]
np.savez(OUT, batch_equal=np.array((pair[0] == pair[1]).all()), **{str(i): o.argmax(0) for i, o in enumerate(out)})
"""


def _run_loader(template: str, tmp_path: Path, model_file: Path, images: Path, num_classes: int) -> Path:
    """Run a loader script in ``python -S`` with only the standard library and the site-packages of torch and
    onnxruntime on the path (never this checkout), in ``tmp_path``; the path of its output."""
    import onnxruntime

    out = tmp_path / f"out_{model_file.suffix[1:]}{'.npz' if 'onnxruntime' in template else '.pt'}"
    site = str(Path(torch.__file__).resolve().parents[1])
    assert str(Path(onnxruntime.__file__).resolve().parents[1]) == site
    script = (
        template.replace("SITE", repr(site))
        .replace("TS", repr(str(model_file)))
        .replace("IMAGES", repr(str(images)))
        .replace("OUT", repr(str(out)))
        .replace("NUM_CLASSES", str(num_classes))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[torch.nn.Module, Path]]:
    """``deployed(case)``: the eager model and a folder with its ``model.pt2`` and ``model.onnx``, exported once per
    case for the module (torch.export and the ONNX conversion of the torchvision case take most of a minute, and two
    tests use them; their xdist group keeps them in one worker)."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(name: str) -> tuple[torch.nn.Module, Path]:
        if name not in cache:
            params, folder = CASES[name], tmp_path_factory.mktemp(f"deployed_{name}")
            model = _model(params)
            program = export_program(model, params)
            write_program(program, folder / "model.pt2")
            write_onnx(program, folder / "model.onnx")
            cache[name] = model, folder
        return cache[name]

    return get


@pytest.mark.xdist_group("deployed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_model_pt2_and_onnx_load_without_wsss_and_match_eager(
    tmp_path: Path, name: str, deployed: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    """Both deployment files agree with the eager model on >= 99.9 % of pixels at every size of DEPLOY_SIZES.
    Caught: int() of a symbolic size in MSC (the program pinned to the traced 65x67: "Guard failed" at any other
    size), and the export without size-oblivious tracing ("Guard failed: images.size()[2] >= 9" at 1x1)."""
    params = CASES[name]
    model, folder = deployed(name)

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in DEPLOY_SIZES]
    chw = [im.transpose(2, 0, 1).copy() for im in images]
    torch.save([torch.from_numpy(x) for x in chw], tmp_path / "images.pt")
    np.savez(tmp_path / "images.npz", **{str(i): x for i, x in enumerate(chw)})
    pt2 = torch.load(_run_loader(PT2_LOADER, tmp_path, folder / "model.pt2", tmp_path / "images.pt", 4))
    onnx_out = np.load(_run_loader(ONNX_LOADER, tmp_path, folder / "model.onnx", tmp_path / "images.npz", 4))
    assert pt2["batch_equal"] and bool(onnx_out["batch_equal"])

    seen = set()
    for i, image in enumerate(images):
        eager = labels_from_logits(image_logits(model, image, params), image.shape[:2])
        for fmt, labels in (("pt2", pt2["labels"][i].numpy()), ("onnx", onnx_out[str(i)])):
            agree = float((labels == eager).mean())
            assert agree >= 0.999, f"{name} {fmt} {image.shape}: {agree:.5f} of pixels agree"
        seen |= set(np.unique(eager).tolist())
    assert len(seen) >= 2  # the comparison is not between two constant maps


@pytest.mark.xdist_group("deployed")
def test_readme_onnx_snippet_runs_with_onnxruntime_only(
    tmp_path: Path, deployed: Callable[[str], tuple[torch.nn.Module, Path]]
) -> None:
    """The README's ONNX code, run as written in a Python where neither wsss nor torch imports, gives H×W class
    ids equal to the eager model's. Caught: an output name other than the README's (KeyError in the snippet)."""
    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Predict and export", 1)[1].split("\n## ", 1)[0]
    block = next(code for b in section.split("```python")[1:] if "onnxruntime" in (code := b.split("```", 1)[0]))
    code = "\n".join(line[2:] for line in block.strip("\n").splitlines())
    assert len(code.splitlines()) <= 5
    params = CASES["torchvision"]
    model, folder = deployed("torchvision")
    shutil.copy(folder / "model.onnx", tmp_path / "model.onnx")
    export_model(model, params, ["background", "a", "b", "c"], tmp_path / "model.ts", tmp_path / "model.json")
    rgb = np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    code = code.replace("photo.jpg", "photo.png")  # lossless, so that the eager model sees the same pixels
    site = str(Path(torch.__file__).resolve().parents[1])
    script = (
        f"import sys\nsys.path[:] = [p for p in sys.path if p and '-packages' not in p] + [{site!r}]\n"
        "sys.modules['torch'] = None  # a Python without torch\n"
        "for name in ('wsss', 'torch'):\n    try:\n        __import__(name)\n    except ImportError:\n"
        "        pass\n    else:\n        raise SystemExit(name + ' importable')\n"
        f"{code}\nassert meta['classes'][0] == 'background' and meta['files']['model.onnx']['opset'] >= 18\n"
        "np.save('ids.npy', ids)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = np.load(tmp_path / "ids.npy")
    eager = labels_from_logits(image_logits(model, rgb, params), rgb.shape[:2])
    assert ids.shape == (30, 44) and float((ids == eager).mean()) >= 0.999
