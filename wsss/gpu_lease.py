"""GPU leases on a shared box: a job takes N GPUs that no other job holds, one lock file per GPU.

Snakemake counts GPUs (``--resources gpu=N``) but does not say which ones a job may use. A lease takes N free
GPUs by ``fcntl.flock`` on ``<lock dir>/gpu<id>.lock`` (``$WSSS_GPU_LOCK_DIR``, else a per-allocation folder under
``/tmp/wsss-gpu-locks`` inside SLURM jobs, else ``/tmp/wsss-gpu-locks``), waits (logging why) while fewer are
free, and hands the command ``CUDA_VISIBLE_DEVICES`` with the leased ids. The command is exec'd with the lock
files open, so the locks live exactly as long as the command's process; the kernel drops them when it exits or is
killed, even by SIGKILL.

The GPUs of the machine are ``CUDA_VISIBLE_DEVICES`` when set (its entries are the ids), else those listed by
``nvidia-smi -L``, else ``torch.cuda.device_count()``. Asking for 0 GPUs does nothing; on a machine without any
GPU the command runs unleased (the stage then picks the CPU for ``device: auto``); asking for more GPUs than the
machine has is a one-line error.

CLI: ``python -m wsss.gpu_lease N -- command [args...]``.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "WSSS_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/wsss-gpu-locks")


class LeaseError(Exception):
    """A lease that can never be granted (more GPUs than the machine has)."""


def lock_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$WSSS_GPU_LOCK_DIR``; inside a SLURM job ``/tmp/wsss-gpu-locks/slurm-<job id>`` (the job's GPUs are its
    own and may be renumbered from 0); else ``/tmp/wsss-gpu-locks``."""
    if environ.get(LOCK_DIR_ENV):
        return Path(environ[LOCK_DIR_ENV])
    if environ.get("SLURM_JOB_ID"):
        return DEFAULT_LOCK_DIR / f"slurm-{environ['SLURM_JOB_ID']}"
    return DEFAULT_LOCK_DIR


def parse_visible_devices(value: str) -> list[str]:
    """The ids in a ``CUDA_VISIBLE_DEVICES`` value; like CUDA, the list ends at the first negative index."""
    ids: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item.startswith("-"):
            break
        ids.append(item)
    return ids


def _nvidia_smi_count() -> int | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _torch_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def machine_gpus(environ: Mapping[str, str] = os.environ) -> tuple[list[str], str]:
    """(GPU ids, where they came from): ``CUDA_VISIBLE_DEVICES``, ``nvidia-smi -L`` or torch."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    count = _nvidia_smi_count()
    if count is not None:
        return [str(i) for i in range(count)], "nvidia-smi -L"
    return [str(i) for i in range(_torch_count())], "torch.cuda.device_count()"


@dataclass
class Lease:
    """GPUs held by this process: their ids and the open, locked lock files."""

    ids: list[str]
    files: list[IO[bytes]] = field(default_factory=list)

    def env(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """``environ`` with ``CUDA_VISIBLE_DEVICES`` set to the leased ids (unchanged for an empty lease)."""
        out = dict(environ)
        if self.ids:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(self.ids)
        return out

    def release(self) -> None:
        """Unlock and close the lock files."""
        for fh in self.files:
            fh.close()
        self.files = []


def _lock_name(gpu: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)
    return f"gpu{safe}.lock"


def _try_lock(path: Path) -> IO[bytes] | None:
    fh = open(path, "ab")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def acquire(n: int, gpus: Sequence[str] | None = None, directory: Path | None = None, poll: float = 2.0,
            timeout: float | None = None, report: Callable[[str], None] | None = None) -> Lease:
    """Take ``n`` free GPUs among ``gpus`` (default :func:`machine_gpus`), waiting while fewer are free.

    All-or-nothing: a partial set is released before waiting again, so waiting jobs never hold GPUs. Raises
    :class:`LeaseError` when ``n`` exceeds the GPUs that exist, TimeoutError after ``timeout`` seconds."""
    report = report or log.warning
    if n <= 0:
        return Lease([])
    source = "given"
    if gpus is None:
        gpus, source = machine_gpus()
    if not gpus:
        report(f"gpu_lease: {n} GPU(s) requested but this machine has none ({source}); running without a lease")
        return Lease([])
    if n > len(gpus):
        raise LeaseError(f"{n} GPUs requested but this machine has {len(gpus)} ({source}: {','.join(gpus)})")
    folder = directory or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    next_report = 0.0
    while True:
        held: list[tuple[str, IO[bytes]]] = []
        for gpu in gpus:
            fh = _try_lock(folder / _lock_name(gpu))
            if fh is not None:
                held.append((gpu, fh))
                if len(held) == n:
                    return Lease([g for g, _ in held], [f for _, f in held])
        for _, fh in held:
            fh.close()
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"no {n} free GPU(s) among {','.join(gpus)} after {waited:.0f} s")
        if waited >= next_report:
            report(f"gpu_lease: waiting for {n} free GPU(s): {len(held)} of {len(gpus)} free (locks in {folder})")
            next_report = waited + 60.0
        time.sleep(poll * (0.5 + random.random()))


def exec_leased(lease: Lease, argv: Sequence[str]) -> None:
    """Replace this process by ``argv`` with the lease's ``CUDA_VISIBLE_DEVICES``; the lock files stay open in it
    (inheritable descriptors), so the GPUs are released when the command ends, however it ends."""
    for fh in lease.files:
        os.set_inheritable(fh.fileno(), True)
    if lease.ids:
        print(f"gpu_lease: CUDA_VISIBLE_DEVICES={','.join(lease.ids)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], list(argv), lease.env())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsss.gpu_lease N -- command...``: lease N GPUs, then exec the command."""
    parser = argparse.ArgumentParser(prog="python -m wsss.gpu_lease", description=__doc__.split("\n\n")[0])
    parser.add_argument("gpus", type=int, help="GPUs to lease (0: run the command as is)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        lease = acquire(args.gpus, report=lambda msg: print(msg, file=sys.stderr, flush=True))
    except LeaseError as err:
        print(f"error: wsss.gpu_lease: {err}", file=sys.stderr)
        return 2
    exec_leased(lease, command)
    return 0  # not reached: exec replaced the process


if __name__ == "__main__":
    sys.exit(main())
