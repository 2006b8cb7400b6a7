"""The artifact formats (wsss/artifacts/) are numpy-only: a fresh interpreter reads and writes CAM files, and reads
DeepLab logit files, without importing torch or the models; upsampling logits imports torch but not torchvision."""

from __future__ import annotations

from helpers import fresh_python

SCRIPT = """
import sys
import numpy as np
from wsss.artifacts.cam import CamRecord, index_cam_dirs, load_cam, save_cam
rec = CamRecord(np.array([2]), np.ones((1, 3, 4), np.float16), (12, 16), np.array([0.1, 0.2, 0.9], np.float32),
                np.full((1, 12, 16), 0.5, np.float16))
save_cam(sys.argv[1] + "/a.npz", rec)
back = load_cam(index_cam_dirs([sys.argv[1]], ["a"])["a"])
assert back.keys.tolist() == [2] and back.size == (12, 16) and float(back.full_res().max()) == 0.5
assert "torch" not in sys.modules, "torch imported"
"""


def test_cam_files_read_and_write_without_torch(tmp_path) -> None:
    """Planted bug: ``import torch`` at the top of wsss/artifacts/cam.py (or importing wsss.pipeline.classify) fails here."""
    proc = fresh_python(SCRIPT, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]


LOGITS_SCRIPT = """
import sys
import numpy as np
from wsss.artifacts.logits import index_logit_dirs, labels_from_logits, load_logits
logits = np.zeros((3, 2, 2), np.float16)
logits[2, :, 1] = 1.0
np.savez(sys.argv[1] + "/a.npz", logits=logits, size=np.array([4, 4]))  # as save_logits writes it
rec = load_logits(index_logit_dirs([sys.argv[1]], ["a"])["a"])
assert rec.size == (4, 4) and rec.logits.shape == (3, 2, 2)
assert "torch" not in sys.modules, "torch imported to read logits"
labels = labels_from_logits(rec.logits, rec.size)  # bilinear upsampling: torch's
# align_corners=False: output column x samples source column (x + 0.5) / 2 - 0.5 = -0.25 (clamped: 0, a tie, class 0),
# 0.25, 0.75, 1.25 (clamped), so class 2's logit is 0, 0.25, 0.75, 1
assert labels.tolist() == [[0, 2, 2, 2]] * 4, labels.tolist()
assert "torchvision" not in sys.modules and "wsss.models.deeplab" not in sys.modules, "a model imported to upsample"
"""


def test_logit_files_read_without_torch_and_upsample_without_the_models(tmp_path) -> None:
    """What the crf, eval_seg and report_figures stages pay at run time. Planted bug: ``import torch`` at the top of
    wsss/artifacts/logits.py, or taking ``upsample_logits`` from wsss.pipeline.segment, fails here."""
    proc = fresh_python(LOGITS_SCRIPT, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
