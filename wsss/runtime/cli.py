"""What every stage script shares: argument parsing of the JSON params, logging, timing, one-line errors.

A stage is ``main(args, params) -> None``; :func:`run_stage` wraps it so that bad input ends the process with
one line ``error: <file>: <problem>`` on stderr and exit status 2, SIGTERM/SIGINT end it through the normal
exception path (temporary outputs removed) with status 128 + signal number, and every run logs its resolved
params, device and wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from wsss.runtime import startup
from wsss.runtime.errors import InputError

log = logging.getLogger("wsss")


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--params`` JSON option every stage takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="{}", help="stage hyper-parameters as a JSON object (from config.yaml)")
    return parser


def shard_stage_parser(description: str) -> argparse.ArgumentParser:
    """A stage parser for per-shard stages: ``--dataset``, ``--split``, ``--shard``, ``--shards`` besides ``--params``."""
    parser = stage_parser(description)
    parser.add_argument("--dataset", required=True, help="prepared dataset root")
    parser.add_argument("--split", required=True, help="split whose ids are sharded")
    parser.add_argument("--shard", type=int, required=True, help="this shard's index, 0-based")
    parser.add_argument("--shards", type=int, required=True, help="number of shards of the split")
    return parser


def shard_ids(ids: list[str], args: argparse.Namespace) -> list[str]:
    """The ids of this stage's shard (``--shard`` of ``--shards``): every ``shards``-th id from ``shard``."""
    if not 0 <= args.shard < args.shards:
        raise InputError("--shard", f"{args.shard} outside 0..{args.shards - 1}")
    return list(ids[args.shard :: args.shards])


def parse_params(text: str) -> dict[str, Any]:
    """Parse the ``--params`` JSON; anything but an object is an input error."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError("--params", f"invalid JSON ({err})") from None
    if not isinstance(params, dict):
        raise InputError("--params", "must be a JSON object")
    return params


class StageInterrupted(BaseException):
    """Raised in the stage's main thread when SIGTERM or SIGINT arrives, so that every ``with`` block (atomic
    outputs, downloads) cleans up on the way out. A BaseException, like KeyboardInterrupt: ``except Exception``
    in stage code does not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_as_exceptions(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, turn ``signums`` into :class:`StageInterrupted` in this process; restore on exit.

    A signal the process was started ignoring (``nohup``, background jobs ignore SIGINT) stays ignored.

    Child processes forked inside the block (DataLoader workers, CRF pools) inherit the handler but must not
    unwind the parent's stack: there the handler restores the default action and re-sends the signal.
    """
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise StageInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def run_stage(
    main: Callable[[argparse.Namespace, dict[str, Any]], None],
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
) -> int:
    """Parse args, log params, run ``main``; InputError becomes a one-line error and exit status 2; SIGTERM or
    SIGINT unwinds ``main`` (its temporary outputs are removed) and returns 128 + the signal number, as a shell
    reports a killed job. Under torchrun only rank 0 logs below warnings (the ranks share one log file). First it
    freezes the imported objects and resumes the garbage collector that :mod:`wsss.runtime.startup` paused for the
    stage's imports."""
    startup.freeze_and_resume()
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        with signals_as_exceptions():
            params = parse_params(args.params)
            log.info("stage %s", parser.prog)
            log.info("args %s", {k: v for k, v in vars(args).items() if k != "params"})
            log.info("params %s", json.dumps(params, sort_keys=True))
            main(args, params)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StageInterrupted as err:
        print(f"error: {parser.prog}: {err}; temporary outputs removed", file=sys.stderr)
        return 128 + err.signum
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0
