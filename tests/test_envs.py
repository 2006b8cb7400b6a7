"""envs/: the pinned releases (constraints.txt) and the conda environment (wsss.yaml) agree with pyproject.toml, and
the README's and CI's installs use the pins (the figures were measured with them: README "The synthetic run")."""

from __future__ import annotations

import tomllib

import yaml
from helpers import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Version]:
    """envs/constraints.txt as {canonical name: pinned release}; every line is a comment or ``name==release``."""
    pinned = {}
    for line in (REPO / "envs/constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pinned[canonicalize_name(req.name)] = Version(spec.version)
    return pinned


def test_every_requirement_is_pinned_within_its_range() -> None:
    pinned = pins()
    required = [Requirement(r) for r in [*PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"]["test"]]]
    missing = [str(r) for r in required if canonicalize_name(r.name) not in pinned]
    assert not missing, f"not pinned in envs/constraints.txt: {missing}"
    outside = [
        f"{r} (pinned {pinned[canonicalize_name(r.name)]})"
        for r in required
        if not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"pinned outside pyproject.toml's range: {outside}"


def test_no_platform_specific_cuda_packages_are_pinned() -> None:
    """torch's wheel brings the CUDA packages its build needs (this machine's torch 2.14.1+cu130 wants CUDA 13's): a
    pin of them would clash with another Linux machine's torch build of the same release."""
    assert not [n for n in pins() if n.startswith(("nvidia-", "cuda-", "triton"))]


def _specifiers(requirements: list[str]) -> dict[str, str]:
    """{canonical name: version specifier} of requirement strings."""
    return {canonicalize_name(req.name): str(req.specifier) for req in map(Requirement, requirements)}


def test_the_conda_environment_mirrors_pyproject() -> None:
    env = yaml.safe_load((REPO / "envs/wsss.yaml").read_text())
    (pip_deps,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert _specifiers(PYPROJECT["dependencies"]).items() <= _specifiers(pip_deps).items()


def test_readme_and_ci_install_with_the_pins() -> None:
    installs = [
        line
        for text in (
            (REPO / name).read_text() for name in ("README.md", ".ci/run", ".ci/lint", ".pre-commit-config.yaml")
        )
        for line in text.splitlines()
        if "pip install -e" in line
    ]
    assert len(installs) >= 3 and all("-c envs/constraints.txt" in line for line in installs), installs
