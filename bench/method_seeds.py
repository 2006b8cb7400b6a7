#!/usr/bin/env python
"""The methods over seeds and datasets: a thin caller of the comparison target (config ``compare``, wsss/outputs/compare.py).

Writes a config with the config's ``synth`` run on the default data and on robustness variants of it
(``--variants``, names of bench/robustness.py's VARIANTS) and one comparison ``methods`` of ``--methods`` × those
runs × ``--seeds``, then runs ``snakemake results/compare/methods.md`` in a scratch working directory and prints
the table (CAM, pseudo labels, DeepLab, DeepLab+CRF at the calibrated thresholds, oracle peaks, held-out F1, gate
verdicts, wall time per stage; the figure is results/compare/methods.png).

    python bench/method_seeds.py                     # 4 methods x 3 seeds x 3 datasets: 36 full DAGs, hours on 2 cores
    python bench/method_seeds.py --methods cam,recam --seeds 0 --variants "" --workdir /tmp/ms --keep
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def _variants() -> dict[str, dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("robustness", REPO / "bench" / "robustness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VARIANTS


def compare_config(
    base: dict[str, Any], methods: list[str], seeds: list[int], variants: list[str], default: bool = True
) -> dict[str, Any]:
    """The config's ``synth`` run on its data (``synth``, unless not ``default``) and on each variant's data
    (``synth_<variant>``), compared over ``methods`` and ``seeds`` as ``compare.methods``."""
    config = copy.deepcopy(base)
    table = _variants()
    data, run = config["datasets"]["synth"], config["runs"]["synth"]
    config["runs"] = {"synth": copy.deepcopy(run)} if default else {}
    for variant in variants:
        name = "synth_" + variant.replace(".", "_")
        config["datasets"][name] = {**copy.deepcopy(data), "kind": "synth", **table[variant]}
        config["runs"][name] = {**copy.deepcopy(run), "dataset": name}
    config["compare"] = {"methods": {"runs": list(config["runs"]), "methods": methods, "seeds": seeds}}
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="vwl_l,vwl_m,cam,recam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="texture1.5,nonconvex", help="robustness variants ('' for none)")
    parser.add_argument(
        "--no-default", action="store_true", help="leave out the default data (only the variants' runs)"
    )
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    config = compare_config(
        yaml.safe_load(args.configfile.read_text()),
        [m for m in args.methods.split(",") if m],
        [int(s) for s in args.seeds.split(",") if s],
        [v for v in args.variants.split(",") if v],
        default=not args.no_default,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsss_methods_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.monotonic()
    try:
        with open(workdir / "snakemake.log", "w") as fh:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "-s",
                    str(REPO / "Snakefile"),
                    "--cores",
                    str(args.cores),
                    "--keep-going",
                    "results/compare/methods.md",
                ],
                cwd=workdir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        table = workdir / "results" / "compare" / "methods.md"
        if table.exists():
            print(table.read_text(), end="")
        print(f"({time.monotonic() - start:.0f} s; working directory {workdir})", file=sys.stderr)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
