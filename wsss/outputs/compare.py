"""The comparison target: several methods on several datasets, with seeds, through the same downstream.

A ``compare:`` entry of the config names base runs (each a dataset with its stage settings), methods and seeds::

    compare:
      methods:
        runs: [synth, synth_noisy]
        methods: [vwl_l, vwl_m, cam, recam]   # default: each run's own method
        seeds: [0, 1, 2]

:func:`expand_compare` (called by :func:`wsss.runtime.config.validate_config`) adds one ordinary run
``{run}-{method}_s{seed}`` per combination: the base run's settings with that method and ``cls/irn/seg.seed`` =
seed. ``snakemake results/compare/<name>.md`` builds each of them through CAM → IRN → DeepLab → CRF (rules/
compare.smk) and :func:`compare_table` writes one table: per method and dataset, mean ± sample std over the seeds
of the CAM, pseudo-label, DeepLab and DeepLab+CRF mIoU at the calibrated (mask-free) thresholds, the oracle
sweep peaks beside them (reported only: they read the masks), the held-out F1, the gate verdicts and the wall time
of each stage (from Snakemake's ``benchmarks/{run}/*.tsv``). A run stopped by a gate shows as stopped, with the
gate's line in the JSON; its later numbers are absent, never counted as zeros.

No torch import: the Snakefile calls :func:`expand_compare` through the config validation.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.runtime.errors import InputError

SEEDED_SECTIONS = ("cls", "irn", "seg")

# Coarse pipeline stages and the rules whose benchmark files they sum (a rule's file is benchmarks/{run}/<rule>.tsv,
# benchmarks/{run}/<rule>_<split>.tsv or benchmarks/{run}/<rule>/<split>_<shard>.tsv).
STAGE_RULES = {
    "CAM": ("train_cls", "cls_gate", "cls_verdict", "infer_cam", "calibrate", "eval_cam", "cam_gate", "cam_verdict"),
    "IRN": (
        "cam_to_ir_label",
        "train_irn",
        "calibrate_pseudo",
        "make_pseudo",
        "sweep_pseudo",
        "eval_pseudo",
        "check_pseudo",
    ),
    "DeepLab": ("train_seg", "seg_gate", "seg_verdict", "infer_seg", "eval_seg"),
    "CRF": ("crf",),
}
# longest rule names first, so that calibrate_pseudo is not taken for calibrate
_RULE_STAGE = sorted(((r, s) for s, rules in STAGE_RULES.items() for r in rules), key=lambda rs: -len(rs[0]))
METRICS = (("cam", "CAM"), ("pseudo", "pseudo"), ("deeplab", "DeepLab"), ("deeplab_crf", "DeepLab+CRF"))


def compare_run_name(run: str, method: str, seed: int) -> str:
    """The run a comparison builds for base run ``run``, ``method`` and ``seed``."""
    return f"{run}-{method}_s{seed}"


def _derived(config: Mapping[str, Any], base: str, method: str, seed: int) -> dict[str, Any]:
    """The settings of base run ``base`` with ``method`` and ``cls/irn/seg.seed`` = ``seed`` (no ``seeds``)."""
    derived = {key: copy.deepcopy(v) for key, v in config["runs"][base].items() if key != "seeds"}
    derived["method"] = method
    for section in SEEDED_SECTIONS:
        derived[section] = {**derived.get(section, {}), "seed": seed}
    return derived


def compare_runs(config: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The runs of comparison ``name``: ``{"run", "base", "dataset", "method", "seed"}`` in table order. The run is
    ``{base}-{method}_s{seed}``, or the base run itself when it already has that method and those seeds (its
    results are reused)."""
    entry = config["compare"][name]
    out = []
    for base in entry["runs"]:
        own = config["runs"][base]
        seeds = {(own.get(s) or {}).get("seed", config[s]["seed"]) for s in SEEDED_SECTIONS}
        for method in entry.get("methods") or [own["method"]]:
            for seed in entry["seeds"]:
                same = method == own["method"] and seeds == {seed}
                run = base if same else compare_run_name(base, method, seed)
                out.append(
                    {
                        "run": run,
                        "base": base,
                        "dataset": config["runs"][base]["dataset"],
                        "method": method,
                        "seed": seed,
                    }
                )
    return out


def expand_compare(config: dict[str, Any]) -> None:
    """Add the runs of every ``compare`` entry to ``config["runs"]`` (see the module doc). Idempotent; an unknown
    base run or method, or a configured run of a generated name with other settings, is an InputError."""
    from wsss.methods import method_names

    runs = config["runs"]
    for name, entry in (config.get("compare") or {}).items():
        for base in entry["runs"]:
            if base not in runs:
                raise InputError("config", f"compare.{name}.runs: {base!r} is not a run (runs: {', '.join(runs)})")
        for method in entry.get("methods") or []:
            if method not in method_names():
                raise InputError(
                    "config",
                    f"compare.{name}.methods: {method!r} is not a method (methods: {', '.join(method_names())})",
                )
        for item in compare_runs(config, name):
            if item["run"] == item["base"]:
                continue
            derived = _derived(config, item["base"], item["method"], item["seed"])
            if item["run"] in runs and runs[item["run"]] != derived:
                raise InputError(
                    "config",
                    f"runs.{item['run']}: already configured, and compare.{name} would "
                    f"create it with other settings; rename the run",
                )
            runs[item["run"]] = derived


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"{what} is missing") from None
    except ValueError as err:
        raise InputError(path, f"not a {what} ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"not a {what} (not a JSON object)")
    return data


def stage_times(bench_dir: Path, *columns: str) -> dict[str, dict[str, float]]:
    """Seconds per coarse stage (:data:`STAGE_RULES`) of each benchmark column (``s``: the jobs' wall time;
    ``cpu_time``: their processes' user + system time), summed over a run's benchmark files (every shard and split:
    the jobs' time, not the elapsed time of a parallel run), each file read once. Files of other rules are ignored."""
    times = {column: dict.fromkeys(STAGE_RULES, 0.0) for column in columns}
    if not bench_dir.is_dir():
        return times
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        stage = next((s for r, s in _RULE_STAGE if rule == r or rule.startswith(r + "_")), None)
        if stage is None:
            continue
        try:
            with open(path) as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            for column in columns:
                times[column][stage] += sum(float(r[column]) for r in rows)
        except (OSError, KeyError, ValueError) as err:
            raise InputError(path, f"not a Snakemake benchmark file ({err})") from None
    return times


@dataclass
class RunResult:
    """One run of a comparison: its numbers (mIoU in %, None where it did not get there) and gate verdicts."""

    run: str
    dataset: str
    method: str
    seed: int
    heldout_f1: float | None = None
    cls_gate: str = ""  # "passed" / "stopped" / "" (not reached)
    cam_gate: str = ""
    seg_gate: str = ""
    gate_lines: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)  # cam, pseudo, deeplab, deeplab_crf
    oracle: dict[str, float | None] = field(default_factory=dict)  # cam, pseudo sweep peaks
    thresholds: dict[str, float | None] = field(default_factory=dict)  # bg_score, bg_threshold used
    times: dict[str, float] = field(default_factory=dict)  # wall
    cpu_times: dict[str, float] = field(default_factory=dict)

    @property
    def stopped_at(self) -> str:
        """The gate that stopped the run ("cls", "cam", "seg"), or ""."""
        return next(
            (g for g, v in (("cls", self.cls_gate), ("cam", self.cam_gate), ("seg", self.seg_gate)) if v == "stopped"),
            "",
        )

    @property
    def stopped(self) -> bool:
        return "stopped" in (self.cls_gate, self.cam_gate, self.seg_gate)


def _gate_passes(out: RunResult, path: Path, gate: str) -> bool:
    """Record the verdict of ``gate`` (cls, cam, seg) in ``out``; a stopped run keeps the gate's line."""
    verdict = _read_json(path, "gate verdict")
    setattr(out, f"{gate}_gate", "passed" if verdict["passed"] else "stopped")
    if not verdict["passed"]:
        out.gate_lines.append(f"{out.run}: {gate} gate: {verdict['message']}")
    return bool(verdict["passed"])


def _read_stage(out: RunResult, res: Path, stage: str, split: str, label: str, threshold: str) -> None:
    """The mIoU of ``stage`` (cam, pseudo) at the run's threshold, its oracle peak and the threshold it used."""
    metrics = _read_json(res / f"{stage}_{split}_metrics.json", f"{label} metrics file")
    sweep = _read_json(res / f"{stage}_{split}_sweep.json", f"{label} sweep")
    out.metrics[stage] = 100 * metrics["miou_present"]
    out.oracle[stage] = 100 * max(r["miou"] for r in sweep["rows"])
    out.thresholds[threshold] = sweep.get(threshold)


def read_run(root: Path, item: Mapping[str, Any], splits: Mapping[str, str]) -> RunResult:
    """The results of one comparison run under ``root`` (the working directory): the gate verdicts
    (``cls/verdict.json``, ``deeplab/verdict.json``) and the metrics files the verdicts let the DAG build."""
    run = item["run"]
    res = root / "results" / run
    out = RunResult(run, item["dataset"], item["method"], int(item["seed"]))
    heldout = _read_json(res / "cls" / "heldout.json", "held-out report")
    out.heldout_f1 = heldout.get("f1")
    times = stage_times(root / "benchmarks" / run, "s", "cpu_time")
    out.times, out.cpu_times = times["s"], times["cpu_time"]
    if not _gate_passes(out, res / "cls" / "verdict.json", "cls"):
        return out
    _read_stage(out, res, "cam", splits["cam_split"], "CAM", "bg_score")
    if not _gate_passes(out, res / "cam" / "verdict.json", "cam"):
        return out
    _read_stage(out, res, "pseudo", splits["pseudo_split"], "pseudo-label", "bg_threshold")
    if not _gate_passes(out, res / "deeplab" / "verdict.json", "seg"):
        return out
    seg = _read_json(res / f"deeplab_{splits['seg_split']}_metrics.json", "DeepLab metrics file")
    out.metrics["deeplab"], out.metrics["deeplab_crf"] = float(seg["miou_no_crf"]), float(seg["miou_crf"])
    return out


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """(mean, sample std (n − 1; 0 for one value), n) of the values that are not None; None when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def _cell(values: Sequence[float | None], total: int, digits: int = 2) -> str:
    stats = mean_std(values)
    if stats is None:
        return "–"
    mean, std, n = stats
    # one value has no sample std: "x ± 0.00" would claim a spread of zero
    cell = f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return cell if n == total else f"{cell} ({n}/{total})"


def group_results(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    """(dataset, method) → its seeds' results, in first-appearance order."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.method), []).append(r)
    return groups


def compare_table(name: str, results: Sequence[RunResult], splits: Mapping[str, str]) -> str:
    """The comparison's markdown: the mIoU table, the oracle peaks, held-out F1, gates, wall and CPU times."""
    groups = group_results(results)
    lines = [
        f"# Comparison `{name}`",
        "",
        f"mIoU (%) on {splits['cam_split']} (CAM), {splits['pseudo_split']} (pseudo labels) and "
        f"{splits['seg_split']} (DeepLab): mean ± sample std (n − 1) over seeds, at the calibrated thresholds "
        "(chosen without masks). Oracle = the best threshold of the mask sweep: reported, never used. "
        "(k/n): only k of n seeds got there (the others stopped at a gate); one value has no ±.",
        "",
        "| dataset | method | seeds | CAM | pseudo | DeepLab | DeepLab+CRF | CAM oracle | pseudo oracle "
        "| held-out F1 | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, method), rows in groups.items():
        n = len(rows)
        stopped = [r for r in rows if r.stopped]
        gates = "passed" if not stopped else ", ".join(f"s{r.seed} stopped at {r.stopped_at} gate" for r in stopped)
        cells = [_cell([r.metrics.get(k) for r in rows], n) for k, _ in METRICS]
        oracle = [_cell([r.oracle.get(k) for r in rows], n) for k in ("cam", "pseudo")]
        f1 = _cell([r.heldout_f1 for r in rows], n, 3)
        lines.append(f"| {dataset} | {method} | {n} | " + " | ".join([*cells, *oracle, f1, gates]) + " |")
    for what, attr, note in (
        ("Wall time", "times", "each seed's jobs summed over shards"),
        (
            "CPU time",
            "cpu_times",
            "user + system of each seed's jobs, summed over shards: unlike the wall time, not stretched by other work "
            "on the machine or by a paused run",
        ),
    ):
        lines += [
            "",
            f"{what} per stage (s, {note}; mean ± std over seeds):",
            "",
            "| dataset | method | " + " | ".join(STAGE_RULES) + " | total |",
            "|---|---|" + "---|" * (len(STAGE_RULES) + 1),
        ]
        for (dataset, method), rows in groups.items():
            cells = [_cell([getattr(r, attr).get(s) for r in rows], len(rows), 0) for s in STAGE_RULES]
            total = _cell([sum(getattr(r, attr).values()) for r in rows], len(rows), 0)
            lines.append(f"| {dataset} | {method} | " + " | ".join([*cells, total]) + " |")
    gate_lines = [line for r in results for line in r.gate_lines]
    if gate_lines:
        lines += ["", "## Gates", "", *[f"- {line}" for line in gate_lines]]
    lines += [
        "",
        "## Runs",
        "",
        "| run | CAM | pseudo | DeepLab | DeepLab+CRF | bg_score | bg_threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = ["–" if r.metrics.get(k) is None else f"{r.metrics[k]:.2f}" for k, _ in METRICS]
        thr = ["–" if r.thresholds.get(k) is None else f"{r.thresholds[k]:.2f}" for k in ("bg_score", "bg_threshold")]
        lines.append(f"| {r.run} | " + " | ".join([*cells, *thr]) + " |")
    return "\n".join(lines) + "\n"


def save_compare_figure(path: Path, name: str, results: Sequence[RunResult]) -> None:
    """Bars of mean mIoU per stage for every (dataset, method), sample-std error bars, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from wsss.runtime.io import atomic_path

    groups = group_results(results)
    datasets = list(dict.fromkeys(d for d, _ in groups))
    methods = list(dict.fromkeys(m for _, m in groups))
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(4.5 * len(datasets), 6.5), 3.6), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, dataset in zip(axes[0], datasets):
        x = np.arange(len(METRICS))
        for i, method in enumerate(methods):
            rows = groups.get((dataset, method), [])
            stats = [mean_std([r.metrics.get(k) for r in rows]) for k, _ in METRICS]
            means = [s[0] if s else np.nan for s in stats]
            stds = [s[1] if s else 0.0 for s in stats]
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, means, width, yerr=stds, label=method, capsize=2)
            for j, (k, _) in enumerate(METRICS):
                vals = [r.metrics[k] for r in rows if r.metrics.get(k) is not None]
                ax.plot([pos[j]] * len(vals), vals, "k.", ms=3)
        ax.set_xticks(x, [label for _, label in METRICS])
        ax.set_title(dataset)
        ax.set_ylabel("mIoU (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"comparison {name}: mean ± std over seeds (dots: seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def results_json(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Every run's record, for the comparison's JSON."""
    return [vars(r) | {"stopped": r.stopped} for r in results]


__all__ = [
    "METRICS",
    "STAGE_RULES",
    "RunResult",
    "compare_run_name",
    "compare_runs",
    "compare_table",
    "expand_compare",
    "group_results",
    "mean_std",
    "read_run",
    "results_json",
    "save_compare_figure",
    "stage_times",
]
