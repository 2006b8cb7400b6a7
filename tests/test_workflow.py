"""The Snakemake DAG: lint, dry runs of every data target, config errors, and the synthetic dataset for real."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers import REPO, TINY_SYNTH, snakemake, write_config
from wsss.data.dataset import VOCLayoutDataset


def test_lint_is_clean(tmp_path: Path) -> None:
    proc = snakemake(REPO, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_dry_run_resolves_every_data_target(tmp_path: Path) -> None:
    write_config(tmp_path, {"runs": {"synth": {"dataset": "synth"}}})
    proc = snakemake(tmp_path, "-n", "all", *(f"resources/{d}/labels.tsv" for d in ["synth", "voc", "coco"]))
    assert proc.returncode == 0, proc.stderr
    for rule in ["prepare_synth", "prepare_voc", "prepare_coco"]:
        assert f"rule {rule}:" in proc.stdout


def test_config_value_of_wrong_type_is_one_clear_error(tmp_path: Path) -> None:
    write_config(tmp_path, {"runs": {"synth": {"dataset": "synth"}}, "datasets": {"synth": {"image_size": "big"}}})
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "invalid configuration" in line]
    assert lines == ["invalid configuration: config.yaml: datasets.synth.image_size: 'big' is not of type 'integer'"]
    assert not (tmp_path / "resources").exists()


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_prepare_synth_runs_for_real_and_is_reproducible(tmp_path: Path) -> None:
    config = {"runs": {"synth": {"dataset": "synth"}}, "datasets": {"synth": TINY_SYNTH}}
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        write_config(workdir, config)
        proc = snakemake(workdir)
        assert proc.returncode == 0, proc.stderr
    ds = VOCLayoutDataset(first / "resources/synth")
    assert len(ds.ids("train_aug")) == 24 and len(ds.ids("val")) == 8
    assert ds.ids("train") == ds.ids("train_aug")[:8]
    assert _digest(first / "resources/synth") == _digest(second / "resources/synth")
    assert (first / "logs/prepare_synth.log").exists() and (first / "benchmarks/prepare_synth.tsv").exists()
    proc = snakemake(first, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
