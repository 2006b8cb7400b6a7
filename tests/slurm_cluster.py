"""A real one-node SLURM cluster on loopback for tests: munged, slurmctld and slurmd, configured in one folder.

Everything (munge key and socket, slurm.conf, state, spool, logs) lives under the folder handed to
:class:`SlurmCluster`, on free ports; nothing on the machine is changed. Clients find the cluster through
``env()``: ``SLURM_CONF`` and a ``bin/`` folder first on ``PATH`` whose ``srun`` re-exports ``SLURM_CONF`` (the
Snakemake job step removes every ``SLURM_*`` variable before it calls ``srun``). Partitions ``debug`` (default)
and ``gpu`` share the node. The node advertises two fake GPUs and more CPUs and memory than the machine has
(``SlurmdParameters=config_overrides``), so GPU jobs and the workflow's memory requests are schedulable on any
test machine; nothing enforces the limits (no cgroups).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
NODE_CPUS = 8
NODE_MEMORY_MB = 65536
# GPU GRES need a device file (file-less ones are dropped); any character device will do when nothing uses it
FAKE_GPUS = ("/dev/null", "/dev/zero")


def missing_binaries() -> list[str]:
    """The munge/SLURM programs this cluster needs that are not installed."""
    return [name for name in PROGRAMS if _which(name) is None]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so no daemon outlives a killed test run."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """Start with :meth:`start`, always end with :meth:`stop` (it stops every daemon it started, by PID)."""

    def __init__(self, root: Path, name: str = "wssstest") -> None:
        self.root = root
        self.name = name
        self.host = socket.gethostname()
        self.conf = root / "etc" / "slurm.conf"
        self.logs = root / "log"
        self.munge_socket = root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster (sbatch, squeue, Snakemake)."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def start(self, timeout: float = 60) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, and wait until the node is idle."""
        for sub in ("etc", "log", "munge", "state", "spool", "run", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._write_srun_wrapper()
        self._start_munge()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait(lambda: self._client("scontrol", "ping").returncode == 0, timeout, "slurmctld answers")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
        self._wait(self._node_idle, timeout, "the node is idle")

    def stop(self) -> None:
        """Cancel every job and wait until slurmd has ended their steps, stop slurmd, slurmctld and munged (SIGTERM,
        then SIGKILL), and finally kill any process still running under this cluster's configuration."""
        try:
            if self._alive("slurmctld"):
                self._client("scancel", "--user", str(os.getuid()))
                deadline = time.monotonic() + 30
                while (
                    self._alive("slurmd")
                    and time.monotonic() < deadline
                    and self._client(
                        "squeue", "--noheader", "--states=RUNNING,PENDING,COMPLETING,SUSPENDED"
                    ).stdout.strip()
                ):
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass  # the daemons are stopped below either way
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in self._leftover_pids():
            try:  # noqa: SIM105
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _leftover_pids(self) -> list[int]:
        """Processes (job steps, slurmstepd) whose environment points at this cluster's slurm.conf."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def _alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of a job slurmctld still remembers (MinJobAge), as KEY -> value."""
        out = self._client("scontrol", "--oneliner", "show", "job", job_id).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def log(self, daemon: str) -> str:
        """The log of ``slurmctld`` or ``slurmd``."""
        path = self.logs / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _client(self, program: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([_which(program), *args], env=self.env(), capture_output=True, text=True, timeout=30)

    def _node_idle(self) -> bool:
        proc = self._client("sinfo", "--noheader", "--nodes", self.host, "--format", "%t")
        return proc.returncode == 0 and proc.stdout.strip() == "idle"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.logs / f"{name}.stdout", "wb") as out:
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while waiting until {what}: {self._tail(dead[0])}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting until {what}: {self._tail('slurmctld')} {self._tail('slurmd')}")

    def _tail(self, name: str) -> str:
        text = ""
        for path in (self.logs / f"{name}.log", self.logs / f"{name}.stdout"):
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-2000:]

    def _start_munge(self) -> None:
        """munged as root with --force: every client here is root, and --force accepts a socket folder that other
        users cannot reach (pytest's tmp folders are private)."""
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'run' / 'munged.pid'}",
                f"--log-file={self.logs / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(self.munge_socket.exists, 20, "munged listens")

    def _write_config(self) -> None:
        r = self.root
        ctld_port, slurmd_port = _free_port(), _free_port()
        settings = {
            "ClusterName": self.name,
            "SlurmctldHost": f"{self.host}(127.0.0.1)",
            "SlurmctldPort": ctld_port,
            "SlurmdPort": slurmd_port,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": r / "state",
            "SlurmdSpoolDir": r / "spool",
            "SlurmctldPidFile": r / "run" / "slurmctld.pid",
            "SlurmdPidFile": r / "run" / "slurmd.pid",
            "SlurmctldLogFile": self.logs / "slurmctld.log",
            "SlurmdLogFile": self.logs / "slurmd.log",
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "SlurmdParameters": "config_overrides",
            "GresTypes": "gpu",
            "DefMemPerCPU": 1000,
            "MpiDefault": "none",
            "MailProg": "/bin/true",
            "ReturnToService": 2,
            # squeue is the job-status command here (no accounting database), and tests inspect finished jobs with
            # scontrol: job records stay for two hours (the plugin wants >= 3 x its first status-check delay)
            "MinJobAge": 7200,
            "CommunicationParameters": "NoInAddrAny,NoCtldInAddrAny",
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} "
            f"Gres=gpu:{len(FAKE_GPUS)} State=UNKNOWN"
        )
        for partition, default in (("debug", "YES"), ("gpu", "NO")):
            lines.append(f"PartitionName={partition} Nodes={self.host} Default={default} MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (self.conf.parent / "gres.conf").write_text(
            "".join(f"NodeName={self.host} Name=gpu File={dev}\n" for dev in FAKE_GPUS)
        )

    def _write_srun_wrapper(self) -> None:
        srun = self.root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{_which("srun")}" "$@"\n')
        srun.chmod(0o755)
