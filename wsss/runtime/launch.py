"""Start a training stage on the GPUs its rule asked for: lease them (:mod:`wsss.runtime.gpu_lease`), then run the stage
as one process (0 or 1 GPU) or under torchrun with one process per leased GPU (DDP, :mod:`wsss.runtime.distributed`).

CLI: ``python -m wsss.runtime.launch N stages/<name>.py [args...]`` (N = the rule's ``gpu`` resource).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wsss.runtime.gpu_lease import exec_leased, lease_or_error


def stage_argv(nproc: int, script: str, args: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command running ``script``: ``torchrun --standalone --nproc_per_node=nproc`` (as ``python -m
    torch.distributed.run``, the same interpreter) when ``nproc > 1``, else the plain interpreter."""
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]
    return [python, script, *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Lease the GPUs, then exec the stage (see the module doc)."""
    parser = argparse.ArgumentParser(prog="python -m wsss.runtime.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("gpus", type=int, help="GPUs for the stage (the rule's gpu resource)")
    parser.add_argument("script", help="the stage script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the stage's arguments")
    args = parser.parse_args(argv)
    lease = lease_or_error(args.gpus, "wsss.runtime.launch")
    if lease is None:
        return 2
    exec_leased(lease, stage_argv(len(lease.ids), args.script, args.args))
    return 0  # not reached: exec replaced the process


if __name__ == "__main__":
    sys.exit(main())
