"""The cross-run summary table (``results/summary.md``, the ``summary`` stage): each run's CAM, pseudo-label, DeepLab
and DeepLab+CRF mIoU, the mean ± std over seeds, and a warning wherever a stage falls below the previous one.

Plain Python: no numpy, no torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsss.runtime.errors import InputError


@dataclass(frozen=True)
class SummaryRow:
    """One run's numbers for the summary table (mIoU in %, None where the run has no such stage)."""

    run: str
    dataset: str
    method: str
    labels: str
    cam: float | None
    pseudo: float | None
    deeplab: float | None
    deeplab_crf: float | None


def read_miou_file(path: str | os.PathLike[str]) -> float:
    """The single number of a ``*_miou.txt`` file."""
    try:
        text = Path(path).read_text().strip()
        return float(text)
    except FileNotFoundError:
        raise InputError(path, "mIoU file is missing") from None
    except ValueError:
        raise InputError(path, f"expected one number, got {text[:40]!r}") from None


def read_deeplab_metrics(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(mIoU without CRF, with CRF) in % from a ``deeplab_<split>_metrics.json``."""
    try:
        data = json.loads(Path(path).read_text())
        return float(data["miou_no_crf"]), float(data["miou_crf"])
    except FileNotFoundError:
        raise InputError(path, "DeepLab metrics file is missing") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a DeepLab metrics file ({type(err).__name__}: {err})") from None


def _cell(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


STAGE_NAMES = ("CAM", "pseudo labels", "DeepLab", "DeepLab+CRF")


def stage_drops(row: SummaryRow) -> list[tuple[int, int]]:
    """(stage, previous stage) index pairs (into :data:`STAGE_NAMES`) where a stage's mIoU is below the previous
    present stage's, along CAM → pseudo → DeepLab → DeepLab+CRF (absent stages are skipped)."""
    values = [row.cam, row.pseudo, row.deeplab, row.deeplab_crf]
    drops, prev = [], None
    for k, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        if prev is not None and v < values[prev]:
            drops.append((k, prev))
        prev = k
    return drops


def _mean_std(values: Sequence[float | None]) -> str:
    """``mean ± sample std (n−1)`` of the finite values, two decimals; ± – for a single value; – for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return f"{mean:.2f} ± –"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def summary_table(
    rows: Sequence[SummaryRow],
    cam_split: str = "val",
    pseudo_split: str = "val",
    seg_split: str = "val",
    seed_groups: dict[str, Sequence[str]] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """Markdown: a title, one note line and a table with one row per run (mIoU in %, two decimals, – if absent,
    ↓ after a stage below the previous one); with ``seed_groups`` (base run -> its per-seed runs) a table of
    mean ± sample std over the seeds; then a Warnings list: every stage drop and ``warnings`` (pre-formatted)."""
    header = [
        "Run",
        "Dataset",
        "Method",
        "Training labels",
        f"CAM ({cam_split})",
        f"Pseudo ({pseudo_split})",
        f"DeepLab ({seg_split})",
        f"DeepLab+CRF ({seg_split})",
    ]
    lines = [
        "# Results",
        "",
        "mIoU in % over the classes present in the ground truth; ↓ marks a stage below the "
        "previous one (CAM → pseudo → DeepLab → DeepLab+CRF).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * 4) + "|",
    ]
    notes = []
    for r in rows:
        values = [r.cam, r.pseudo, r.deeplab, r.deeplab_crf]
        cells = [_cell(v) for v in values]
        for k, prev in stage_drops(r):
            cells[k] += " ↓"
            notes.append(f"{r.run}: {STAGE_NAMES[k]} ({values[k]:.2f}) below {STAGE_NAMES[prev]} ({values[prev]:.2f})")
        lines.append("| " + " | ".join([r.run, r.dataset, r.method, r.labels, *cells]) + " |")
    if seed_groups:
        by_run = {r.run: r for r in rows}
        lines += [
            "",
            "## Seeds",
            "",
            "mean ± sample standard deviation (n − 1) over the per-seed runs {run}_s{seed}.",
            "",
            "| " + " | ".join(["Run", "Seeds", *header[4:]]) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|",
        ]
        for base, members in seed_groups.items():
            group = [by_run[m] for m in members if m in by_run]
            cells = [_mean_std([getattr(r, f) for r in group]) for f in ("cam", "pseudo", "deeplab", "deeplab_crf")]
            seeds = ", ".join(m.rsplit("_s", 1)[-1] for m in members)
            lines.append("| " + " | ".join([base, seeds, *cells]) + " |")
    notes += list(warnings)
    if notes:
        lines += ["", "## Warnings", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


__all__ = [
    "STAGE_NAMES",
    "SummaryRow",
    "read_deeplab_metrics",
    "read_miou_file",
    "stage_drops",
    "summary_table",
]
