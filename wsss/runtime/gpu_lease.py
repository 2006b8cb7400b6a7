"""GPU leases on a shared box: a job takes N GPUs that no other job holds, one lock file per GPU.

Snakemake counts GPUs (``--resources gpu=N``) but does not say which ones a job may use. A lease takes N free
GPUs by ``fcntl.flock`` on ``<lock dir>/gpu<id>.lock``, waits (logging why) while fewer are free, and hands the
command ``CUDA_VISIBLE_DEVICES`` with the leased ids. The command is exec'd with the lock files open, so the locks
live exactly as long as the command's process; the kernel drops them when it exits or is killed, even by SIGKILL.

The lock folder is per user: ``$WSSS_GPU_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/wsss-gpu-locks``, else
``<temp folder>/wsss-gpu-locks-<uid>``; inside a SLURM job a per-allocation ``slurm-<job id>`` folder below it.
Missing folders are created 0700; the folder must be a real directory (not a symlink) owned by this user and
writable by nobody else, and lock files are opened with ``O_NOFOLLOW`` (a planted symlink is refused, never
followed). Any of these problems, and any ``OSError``, is the one-line ``error: <file>: <problem>``. The wait
ends after ``--timeout`` / ``$WSSS_GPU_LEASE_TIMEOUT`` seconds when set (a one-line error), else never.

The GPUs of the machine are ``CUDA_VISIBLE_DEVICES`` when set (its entries are the ids), else those listed by
``nvidia-smi -L``, else the ``/dev/nvidia<N>`` device files; torch is imported (slow) only where none of these
answers and a non-NVIDIA GPU device exists (``/dev/kfd``, ``/dev/dxg``), so a job on a machine without a GPU starts
without importing torch. Asking for 0 GPUs does nothing; on a machine without any GPU the command runs unleased
(the stage then picks the CPU for ``device: auto``); asking for more GPUs than the machine has is a one-line error.

CLI: ``python -m wsss.runtime.gpu_lease [--timeout S] N -- command [args...]``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from wsss.runtime.errors import InputError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "WSSS_GPU_LOCK_DIR"
TIMEOUT_ENV = "WSSS_GPU_LEASE_TIMEOUT"
LOCK_DIR_NAME = "wsss-gpu-locks"


class LeaseError(Exception):
    """A lease that can never be granted (more GPUs than the machine has)."""


def lock_dir(environ: Mapping[str, str] = os.environ, uid: int | None = None) -> Path:
    """``$WSSS_GPU_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/wsss-gpu-locks``, else ``<temp>/wsss-gpu-locks-<uid>``;
    inside a SLURM job a ``slurm-<job id>`` folder below the latter two (the job's GPUs are its own and may be
    renumbered from 0)."""
    if environ.get(LOCK_DIR_ENV):
        return Path(environ[LOCK_DIR_ENV])
    if environ.get("XDG_RUNTIME_DIR"):
        base = Path(environ["XDG_RUNTIME_DIR"]) / LOCK_DIR_NAME
    else:
        base = Path(tempfile.gettempdir()) / f"{LOCK_DIR_NAME}-{os.geteuid() if uid is None else uid}"
    if environ.get("SLURM_JOB_ID"):
        return base / f"slurm-{environ['SLURM_JOB_ID']}"
    return base


def _check_private_dir(path: Path, uid: int) -> None:
    try:
        st = os.lstat(path)
    except OSError as err:
        raise InputError(path, err.strerror or str(err)) from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(path, "GPU lock folder is a symbolic link (refusing to follow it)")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(path, "GPU lock folder is not a directory")
    if st.st_uid != uid:
        raise InputError(
            path,
            f"GPU lock folder is owned by uid {st.st_uid}, not by this user (uid {uid}); "
            f"set {LOCK_DIR_ENV} to a folder of your own",
        )
    if st.st_mode & 0o022:
        raise InputError(
            path,
            f"GPU lock folder is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"chmod go-w it or set {LOCK_DIR_ENV}",
        )


def prepare_lock_dir(path: Path, uid: int | None = None) -> Path:
    """Create the lock folder's missing parts 0700 and check the folder: a real directory owned by ``uid``
    (default: this process's effective uid) that no other user can write to, below parents that no other user
    can rename it in (:func:`_check_ancestors`); an :class:`InputError` otherwise."""
    uid = os.geteuid() if uid is None else uid
    missing: list[Path] = []
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for part in reversed(missing):
        try:
            os.mkdir(part, 0o700)
            os.chmod(part, 0o700, follow_symlinks=False)
        except FileExistsError:
            pass  # another job created it meanwhile: checked below
        except OSError as err:
            raise InputError(part, f"cannot create the GPU lock folder: {err.strerror or err}") from None
    _check_private_dir(path, uid)
    _check_ancestors(Path(os.path.abspath(path)), uid)
    return path


def _check_ancestors(path: Path, uid: int) -> None:
    """Every folder above the lock folder is owned by ``uid`` or root and, if others may write to it, has the
    sticky bit (as /tmp): otherwise another user could rename the lock folder (``slurm-<id>``) away and replace
    it, and two jobs would share one GPU."""
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except OSError as err:
            raise InputError(parent, err.strerror or str(err)) from None
        if st.st_uid not in (uid, 0):
            raise InputError(
                parent,
                f"a parent of the GPU lock folder {path} is owned by uid {st.st_uid}, not by "
                f"this user (uid {uid}) or root; set {LOCK_DIR_ENV} to a folder of your own",
            )
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise InputError(
                parent,
                f"a parent of the GPU lock folder {path} is writable by other users without "
                f"the sticky bit (mode {stat.S_IMODE(st.st_mode):o}), so they could move the "
                f"lock folder; chmod go-w (or +t) it or set {LOCK_DIR_ENV}",
            )


def lease_timeout(environ: Mapping[str, str] = os.environ) -> float | None:
    """The wait limit in seconds from ``$WSSS_GPU_LEASE_TIMEOUT`` (unset, empty: wait forever)."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InputError(f"${TIMEOUT_ENV}", f"{text!r} is not a number of seconds >= 0")
    return value


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


def _dev_nvidia_count(dev: str = "/dev") -> int:
    """The number of ``/dev/nvidia<N>`` device files (one per NVIDIA GPU the driver exposes)."""
    try:
        return sum(1 for name in os.listdir(dev) if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return 0


def _torch_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def machine_gpus(environ: Mapping[str, str] = os.environ, dev: str = "/dev") -> tuple[list[str], str]:
    """(GPU ids, where they came from): ``CUDA_VISIBLE_DEVICES``, ``nvidia-smi -L``, the ``/dev/nvidia<N>`` files,
    or torch (imported only when ``/dev/kfd`` or ``/dev/dxg`` says a GPU of another kind may exist)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    count = _nvidia_smi_count()
    if count is not None:
        return [str(i) for i in range(count)], "nvidia-smi -L"
    count = _dev_nvidia_count(dev)
    if count or not any(os.path.exists(os.path.join(dev, name)) for name in ("kfd", "dxg")):
        return [str(i) for i in range(count)], f"{dev}/nvidia*"
    return [str(i) for i in range(_torch_count())], "torch.cuda.device_count()"


@dataclass
class Lease:
    """GPUs held by this process: their ids and the open, locked lock files."""

    ids: list[str]
    files: list[IO[bytes]] = field(default_factory=list)

    def env(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """``environ`` with ``CUDA_VISIBLE_DEVICES`` set to the leased ids and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
        (the ids are ``nvidia-smi``'s, which counts in PCI bus order; CUDA's default order puts the fastest GPU
        first, so on a machine with mixed models the locked GPU and the used one could differ). Unchanged for an
        empty lease."""
        out = dict(environ)
        if self.ids:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(self.ids)
            out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
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
    """The locked lock file, or None when another process holds it. Never follows a symlink (``O_NOFOLLOW``) nor
    blocks on a planted FIFO (``O_NONBLOCK``, then a regular-file check); problems are :class:`InputError`."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(path, "GPU lock file is a symbolic link (refusing to follow it)") from None
        raise InputError(path, f"cannot open the GPU lock file: {err.strerror or err}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(path, "GPU lock file is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as err:
        os.close(fd)
        raise InputError(path, f"cannot lock the GPU lock file: {err.strerror or err}") from None
    except InputError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb", buffering=0)


def acquire(
    n: int,
    gpus: Sequence[str] | None = None,
    directory: Path | None = None,
    poll: float = 2.0,
    timeout: float | None = None,
    report: Callable[[str], None] | None = None,
) -> Lease:
    """Take ``n`` free GPUs among ``gpus`` (default :func:`machine_gpus`), waiting while fewer are free.

    All-or-nothing: a partial set is released before waiting again, so waiting jobs never hold GPUs. Raises
    :class:`LeaseError` when ``n`` exceeds the GPUs that exist, TimeoutError after ``timeout`` seconds (None: wait
    forever), :class:`InputError` for an unsafe or unusable lock folder or file (see the module doc)."""
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
    folder = prepare_lock_dir(directory or lock_dir())
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
            raise TimeoutError(f"no {n} free GPU(s) among {','.join(gpus)} after {waited:.0f} s (locks in {folder})")
        if waited >= next_report:
            report(f"gpu_lease: waiting for {n} free GPU(s): {len(held)} of {len(gpus)} free (locks in {folder})")
            next_report = waited + 60.0
        pause = poll * (0.5 + random.random())
        time.sleep(pause if timeout is None else max(0.0, min(pause, timeout - waited)))


def exec_leased(lease: Lease, argv: Sequence[str]) -> None:
    """Replace this process by ``argv`` with the lease's ``CUDA_VISIBLE_DEVICES``; the lock files stay open in it
    (inheritable descriptors), so the GPUs are released when the command ends, however it ends."""
    for fh in lease.files:
        os.set_inheritable(fh.fileno(), True)
    if lease.ids:
        print(f"gpu_lease: CUDA_VISIBLE_DEVICES={','.join(lease.ids)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], list(argv), lease.env())


def lease_or_error(n: int, prog: str, timeout: float | None = None) -> Lease | None:
    """:func:`acquire` for a CLI (``timeout`` None: ``$WSSS_GPU_LEASE_TIMEOUT``): the lease, or None after
    printing the one-line ``error:`` (impossible request, wait timed out, unsafe lock folder or file)."""
    try:
        if timeout is None:
            timeout = lease_timeout()
        return acquire(n, timeout=timeout, report=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (LeaseError, TimeoutError) as err:
        print(f"error: {prog}: {err}", file=sys.stderr)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:
        print(f"error: {err.filename or prog}: {err.strerror or err}", file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsss.runtime.gpu_lease [--timeout S] N -- command...``: lease N GPUs, then exec the command."""
    parser = argparse.ArgumentParser(prog="python -m wsss.runtime.gpu_lease", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"give up after this many seconds of waiting (default ${TIMEOUT_ENV}, else never)",
    )
    parser.add_argument("gpus", type=int, help="GPUs to lease (0: run the command as is)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    lease = lease_or_error(args.gpus, "wsss.runtime.gpu_lease", args.timeout)
    if lease is None:
        return 2
    exec_leased(lease, command)
    return 0  # not reached: exec replaced the process


if __name__ == "__main__":
    sys.exit(main())
