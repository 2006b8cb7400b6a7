"""The one error type for bad input: it always names the file and the problem."""

from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """Bad input (file, list, config value). ``str(err)`` is one line: ``<path>: <problem>``.

    ``InputError(message)`` with a single argument is also accepted: PyTorch's DataLoader re-raises a worker's
    exception as ``type(exc)(formatted_traceback)``; the last line of that text is the original
    ``...InputError: <path>: <problem>``, which is recovered so the one-line message survives worker processes.
    """

    def __init__(self, path: str | PathLike[str], problem: str | None = None) -> None:
        if problem is None:
            lines = [line for line in str(path).splitlines() if line.strip()]
            last = lines[-1].split("InputError: ", 1)[-1] if lines else "unknown input"
            path, _, problem = last.partition(": ")
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
