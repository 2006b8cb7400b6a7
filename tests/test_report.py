"""Report figures (wsss.outputs.report, stages/report_figures.py) and the HTML report of `snakemake --report`, opened in a
real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TINY_DAG_TARGETS, copy_of_dag, require_or_skip, snakemake
from PIL import Image

from wsss.outputs.report import (
    colorize,
    disagreement,
    read_train_log,
    save_class_iou,
    save_loss_curves,
    save_miou_progression,
    stage_scores,
)
from wsss.runtime.errors import InputError

FIGURES = {  # file -> subcategory of the report (category: the run)
    "cam_overlays.png": "CAMs",
    "pseudo_vs_gt.png": "pseudo labels",
    "deeplab_crf.png": "DeepLab",
    "class_iou.png": "metrics",
    "miou_progression.png": "metrics",
    "loss_curves.png": "training",
}
SWEEPS = {  # the oracle sweeps with the run's thresholds drawn on them (eval_cam, sweep_pseudo): in the report too
    "cam_val_sweep.png": "CAMs",
    "pseudo_val_sweep.png": "pseudo labels",
}


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_colorize_uses_the_voc_palette() -> None:
    rgb = colorize(np.array([[0, 1, 2, 255]], np.uint8))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [224, 224, 192]]


def test_disagreement_marks_errors_white_and_ignore_grey() -> None:
    gt = np.array([[0, 1, 255]], np.uint8)
    out = disagreement(np.array([[0, 2, 1]], np.uint8), gt)
    assert out[0, :, 0].tolist() == [0, 255, 128] and (out[..., 0] == out[..., 2]).all()


def test_read_train_log_columns_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "train_log.csv"
    good.write_text("step,lr,loss,cls\n0,0.1,2.5,2.0\n1,0.05,1.5,1.0\n")
    columns = read_train_log(good)
    assert list(columns) == ["step", "lr", "loss", "cls"] and columns["loss"].tolist() == [2.5, 1.5]
    for text, problem in [
        ("a,b\n1,2\n", "not a training log"),
        ("step,lr,loss\n0,x,1\n", "not numbers"),
        ("step,lr,loss\n0,1\n", "not numbers"),
    ]:
        good.write_text(text)
        with pytest.raises(InputError, match=problem) as err:
            read_train_log(good)
        assert str(err.value).startswith(str(good))


def test_stage_scores_reads_every_stage_in_percent(tmp_path: Path) -> None:
    cam, pseudo, deeplab = (tmp_path / f"{n}.json" for n in ("cam", "pseudo", "deeplab"))
    cam.write_text(json.dumps({"miou_present": 0.4, "iou": {"background": 0.8, "a": None}}))
    pseudo.write_text(json.dumps({"miou_present": 0.5, "iou": {"background": 0.9, "a": 0.1}}))
    deeplab.write_text(
        json.dumps(
            {
                "miou_no_crf": 55.0,
                "miou_crf": 57.5,
                "no_crf": {"iou": {"background": 0.7}},
                "crf": {"iou": {"background": 0.75}},
            }
        )
    )
    miou, per_class = stage_scores(str(cam), str(pseudo), str(deeplab))
    assert miou == {"CAM": 40.0, "pseudo": 50.0, "DeepLab": 55.0, "DeepLab+CRF": 57.5}
    assert per_class["CAM"] == {"background": 80.0, "a": None} and per_class["DeepLab+CRF"] == {"background": 75.0}
    miou, per_class = stage_scores(None, None, str(deeplab))  # a run trained on ground-truth masks
    assert miou["CAM"] is None and set(per_class) == {"DeepLab", "DeepLab+CRF"}
    deeplab.write_text(json.dumps({"miou_no_crf": 55.0, "no_crf": {"iou": {"background": 0.7}}}))
    with pytest.raises(InputError, match="has no miou_crf"):
        stage_scores(None, None, str(deeplab))


def test_plot_functions_draw_their_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures show the numbers they are given (read back from the matplotlib figure before it is written: bar
    heights, the line's points, the loss curve), not just a PNG of some size. Planted: save_miou_progression without
    its finiteness filter (a NaN stage drawn) fails here."""
    import wsss.outputs.report as report

    figures = {}
    real_save = report._save

    def keep(fig, path):
        figures[Path(path).name] = fig
        real_save(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    save_class_iou(
        {"CAM": {"background": 80.0, "a": None}, "DeepLab": {"background": 70.0, "a": 20.0}},
        ["background", "a"],
        tmp_path / "iou.png",
        "t",
    )
    save_miou_progression(
        {"CAM": 40.0, "pseudo": None, "DeepLab": 55.0, "DeepLab+CRF": float("nan")}, tmp_path / "m.png", "t"
    )
    save_loss_curves(
        {"cls": {"step": np.arange(3.0), "lr": np.full(3, 9.0), "loss": np.array([3.0, 2.0, 1.0])}},
        tmp_path / "l.png",
        "t",
    )
    [ax] = figures["iou.png"].axes
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert list(bars) == ["CAM", "DeepLab"] and bars["DeepLab"] == [70.0, 20.0]
    assert bars["CAM"][0] == 80.0 and np.isnan(bars["CAM"][1])  # no pixels of class a: no bar
    [ax] = figures["m.png"].axes
    [line] = ax.get_lines()
    assert line.get_ydata().tolist() == [40.0, 55.0]  # stages without a finite value are left out
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CAM", "DeepLab"]
    [ax] = figures["l.png"].axes
    assert {ln.get_label(): ln.get_ydata().tolist() for ln in ax.get_lines()} == {"loss": [3.0, 2.0, 1.0]}
    for name in ["iou.png", "m.png", "l.png"]:
        width, height = _png_size(tmp_path / name)
        assert width > 100 and height > 100
        pixels = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8  # drawn, not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iou.png", "l.png", "m.png"]  # no temporaries left


@pytest.mark.slow
def test_report_figures_of_the_tiny_run(tiny_dag: Path) -> None:
    out = tiny_dag / "results/tiny/report"
    listed = (out / "done").read_text().split()
    assert sorted(Path(p).name for p in listed) == sorted(FIGURES)
    sizes = {name: _png_size(out / name) for name in FIGURES}
    assert sizes["cam_overlays.png"][1] > sizes["miou_progression.png"][1]  # 4 image rows
    log = (tiny_dag / "logs/tiny/report_figures.log").read_text()
    assert "4 images per panel figure" in log and "mIoU CAM " in log


@pytest.mark.slow
def test_report_stage_bad_metrics_is_one_line_error_and_writes_nothing(tiny_dag: Path, tmp_path: Path) -> None:
    bad = tmp_path / "deeplab_val_metrics.json"
    bad.write_text("{not json")
    run = "results/tiny"
    cmd = [
        sys.executable,
        str(REPO / "stages/report_figures.py"),
        "--params",
        json.dumps({"run": "tiny", "images": 2, "bg_score": 0.15}),
        "--dataset",
        "resources/synth",
        "--cam-split",
        "val",
        "--pseudo-split",
        "val",
        "--seg-split",
        "val",
        "--cams",
        f"{run}/cam/val/shard_0",
        f"{run}/cam/val/shard_1",
        "--pseudo",
        f"{run}/pseudo/val/shard_0",
        f"{run}/pseudo/val/shard_1",
        "--logits",
        f"{run}/seg/val/shard_0",
        f"{run}/seg/val/shard_1",
        "--crf",
        f"{run}/seg_crf/val/shard_0",
        f"{run}/seg_crf/val/shard_1",
        "--cam-metrics",
        f"{run}/cam_val_metrics.json",
        "--pseudo-metrics",
        f"{run}/pseudo_val_metrics.json",
        "--seg-metrics",
        str(bad),
        "--train-logs",
        f"{run}/cls/train_log.csv",
        "--out-dir",
        str(tmp_path / "out"),
        "--done",
        str(tmp_path / "out/done"),
    ]
    proc = subprocess.run(
        cmd, cwd=tiny_dag, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: cannot read DeepLab metrics")
    assert not (tmp_path / "out").exists()


# Appended to a copy of report.html: clicks through the report's own React app (global `app`, `categories`) as a
# reader would (each run's category, each figure kind in its menu, each figure's view button), waits until Chromium
# has decoded the figure shown, and leaves the findings as JSON in <pre id="wsss-check"> for --dump-dom.
CHECK_SCRIPT = """
<script>
(async function () {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const out = {categories: null, menus: {}, figures: {}, error: null, done: false};
  const pre = document.createElement("pre");
  pre.id = "wsss-check";
  document.body.appendChild(pre);
  const save = () => { pre.textContent = JSON.stringify(out); };
  const click = (selector, text) => {
    const el = Array.from(document.querySelectorAll(selector)).find(a => a.innerText.trim() === text);
    if (!el) { throw new Error("no " + selector + " reading " + JSON.stringify(text)); }
    el.click();
  };
  try {
    while (typeof app === "undefined" || !app) { await sleep(50); }
    out.categories = categories;
    for (const cat of Object.keys(categories)) {
      for (const sub of Object.keys(categories[cat])) {
        app.showCategory(cat);
        await sleep(100);
        out.menus[cat] = document.querySelector("nav").innerText;
        click("nav li > a", sub);
        await sleep(100);
        const rows = Array.from(document.querySelectorAll("nav table tbody tr"));
        for (const row of rows) {
          const path = row.innerText.trim();
          save();
          row.querySelector("a").click();
          let img = null;
          for (let i = 0; i < 100 && !(img && img.complete && img.naturalWidth > 0); i++) {
            await sleep(50);
            img = document.querySelector("#app nav ~ div img");
          }
          out.figures[path] = {category: cat, subcategory: sub, width: img ? img.naturalWidth : 0,
                               height: img ? img.naturalHeight : 0,
                               same_data: Boolean(img) && img.getAttribute("src") === results[path].data_uri,
                               caption: results[path].caption};
        }
      }
    }
  } catch (err) {
    out.error = String(err);
  }
  out.done = true;
  save();
})();
</script>
"""


# Headless Chromium now and then never exits with --dump-dom (no output, no error: once in the suite, 2026-12-06, while
# 31 runs in a row of the same page took 2.5-3.5 s each); its background services (component updates,
# on-device models) start regardless of the page. A hang gets a fresh profile and another try; a page whose script
# never finishes still fails, on every try.
DUMP_DOM_TRIES, DUMP_DOM_TIMEOUT_S = 3, 90


def _dump_dom(chromium: str, page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    def dump(attempt: int) -> subprocess.CompletedProcess:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={tmp_path / f'profile{attempt}'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=DUMP_DOM_TIMEOUT_S)

    for attempt in range(1, DUMP_DOM_TRIES):
        try:
            return dump(attempt)
        except subprocess.TimeoutExpired:
            warnings.warn(
                f"chromium --dump-dom hung for {DUMP_DOM_TIMEOUT_S} s (try {attempt}); trying again", stacklevel=1
            )
    return dump(DUMP_DOM_TRIES)  # the last try's timeout fails the test


def _chromium() -> str | None:
    return shutil.which("chromium") or next((p for p in ["/usr/bin/chromium"] if Path(p).exists()), None)


@pytest.mark.slow
def test_html_report_shows_every_figure_in_headless_chromium(tiny_dag: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        require_or_skip("chromium", "chromium is not installed (.ci/run installs the Debian package)")
    report = tmp_path / "report.html"
    # on a copy: a (non-dry) Snakemake run writes a log under .snakemake/ and removes .snakemake/iocache/, which
    # breaks another worker's copy of the shared build taken at that moment (pytest-xdist, README "Tests")
    work = copy_of_dag(tiny_dag, tmp_path / "work")
    proc = snakemake(work, "--report", str(report), *TINY_DAG_TARGETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, end, tail = report.read_text().rpartition("</body>")  # the page's scripts contain "</body>" too
    assert end and "<script" not in tail
    checked = tmp_path / "checked.html"
    checked.write_text(head + CHECK_SCRIPT + end + tail)
    browser = _dump_dom(chromium, checked, tmp_path)
    match = re.search(r'<pre id="wsss-check">(.*?)</pre>', browser.stdout, re.S)
    assert match, f"the check script did not finish; chromium stderr: {browser.stderr[-2000:]}"
    found = json.loads(html.unescape(match.group(1)))
    assert found["done"] and found["error"] is None, found

    expected = {f"results/tiny/report/{name}": sub for name, sub in FIGURES.items()}
    expected |= {f"results/tiny/{name}": sub for name, sub in SWEEPS.items()}
    expected["results/tiny/dataset_report.png"] = "data"  # the dataset report's figure (rule dataset_report)
    categories = {cat: {sub: sorted(paths) for sub, paths in subs.items()} for cat, subs in found["categories"].items()}
    subs = set(expected.values())
    assert categories == {"tiny": {sub: sorted(p for p, s in expected.items() if s == sub) for sub in subs}}
    assert set(FIGURES.values()) <= set(found["menus"]["tiny"].splitlines())  # the run's menu lists the kinds
    assert set(found["figures"]) == set(expected)  # every figure was reached through the menus
    for path, fig in found["figures"].items():
        assert fig["subcategory"] == expected[path] and fig["same_data"], (path, fig)
        assert (fig["width"], fig["height"]) == _png_size(tiny_dag / path), path  # decoded at full size
        assert "<strong>tiny</strong>" in fig["caption"]  # the caption template saw the run's wildcard


def test_panel_rows_hand_worked(tiny_voc: Path, tmp_path: Path) -> None:
    """The three panel builders on hand-made artifacts of the 12×16 tiny VOC: known colours pixel by pixel."""
    import torch

    from wsss.artifacts.cam import CamRecord, save_cam
    from wsss.artifacts.logits import save_logits
    from wsss.data.dataset import VOCLayoutDataset
    from wsss.outputs.report import cam_overlay_rows, pseudo_rows, segmentation_rows
    from wsss.runtime.io import write_label_png

    data = VOCLayoutDataset(tiny_voc)
    image, gt = data.image("c_3"), data.mask("c_3")  # cat at rows 2-7, cols 2-6; dog at cols 8-12; row 0 ignore
    cream, black, red, green = (224, 224, 192), (0, 0, 0), (128, 0, 0), (0, 128, 0)  # palette 255, 0, 1, 2
    # CAMs: the stored full-resolution map (cam.high_res: per_scale) is what the report shows, not the stride-4 one
    high = np.zeros((2, 12, 16), np.float16)
    high[0, :, :8], high[1, :, 8:], high[1, :, :8] = 1.0, 0.8, 0.2
    save_cam(
        tmp_path / "cams" / "c_3.npz",
        CamRecord(np.array([0, 1]), np.zeros((2, 3, 4), np.float16), (12, 16), np.array([0.9, 0.9], np.float32), high),
    )
    [row] = cam_overlay_rows(data, ["c_3"], [tmp_path / "cams"], bg_score=0.5)
    assert np.array_equal(row[0], image)
    blend = 0.5 * image[:, :8] / 255.0 + 0.5 * np.array([0.5, 0.0, 0.0])  # jet(1.0) is dark red (0.5, 0, 0)
    assert np.abs(row[1][:, :8].astype(int) - (255 * blend).astype(int)).max() <= 1
    assert (row[2][:, :8] == red).all() and (row[2][:, 8:] == green).all()  # cat left, dog right at bg 0.5
    assert tuple(row[3][0, 0]) == cream and tuple(row[3][3, 3]) == red and tuple(row[3][3, 9]) == green
    assert tuple(row[3][10, 15]) == black
    # pseudo labels: the ground truth with background at the ignore row and one wrong pixel
    pseudo = np.where(gt == 255, 0, gt).astype(np.uint8)
    pseudo[3, 3] = 2
    write_label_png(tmp_path / "pseudo" / "c_3.png", pseudo)
    [row] = pseudo_rows(data, ["c_3"], [tmp_path / "pseudo"])
    assert tuple(row[1][3, 3]) == green and tuple(row[1][4, 4]) == red and tuple(row[1][0, 0]) == black
    diff = row[3]
    assert (diff[0] == 128).all() and (diff[3, 3] == 255).all()  # ignore grey, the wrong pixel white
    assert int((diff[1:] == 255).all(axis=2).sum()) == 1 and (diff[1:].sum(axis=2) % 765 == 0).all()
    # DeepLab: constant logits favour dog everywhere; the CRF labels are read as they are
    logits = torch.zeros(3, 2, 2)
    logits[2] = 5.0
    save_logits(tmp_path / "logits" / "c_3.npz", logits, (12, 16))
    crf = np.zeros((12, 16), np.uint8)
    crf[:, :5] = 1
    write_label_png(tmp_path / "crf" / "c_3.png", crf)
    [row] = segmentation_rows(data, ["c_3"], [tmp_path / "logits"], [tmp_path / "crf"])
    assert (row[1] == green).all()
    assert (row[2][:, :5] == red).all() and (row[2][:, 5:] == black).all()
    assert np.array_equal(row[3], np.asarray(Image.open(tiny_voc / "SegmentationClass" / "c_3.png").convert("RGB")))
