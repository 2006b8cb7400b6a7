"""The one error type for bad input: it always names the file and the problem."""

from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """Bad input (file, list, config value). ``str(err)`` is one line: ``<path>: <problem>``."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
