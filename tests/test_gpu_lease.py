"""GPU leases (one flock per GPU): concurrent leases are disjoint, a SIGKILLed holder frees its GPUs, impossible
requests are one-line errors, and the training launcher picks torchrun only for more than one GPU."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from wsss.runtime.errors import InputError
from wsss.runtime.gpu_lease import LeaseError, acquire, lock_dir, machine_gpus, parse_visible_devices, prepare_lock_dir
from wsss.runtime.launch import stage_argv

REPO = Path(__file__).resolve().parents[1]


def _env(tmp: Path, visible: str | None = "0,1") -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), WSSS_GPU_LOCK_DIR=str(tmp))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def _lease_cli(tmp: Path, n: int, *command: str, visible: str | None = "0,1", **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wsss.runtime.gpu_lease", str(n), "--", *command],
        env=_env(tmp, visible),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_gpu_ids_and_lock_dir() -> None:
    assert parse_visible_devices("2, 3") == ["2", "3"]
    assert parse_visible_devices("0,-1,2") == ["0"] and parse_visible_devices("") == []
    assert parse_visible_devices("GPU-8f6a,GPU-77b1") == ["GPU-8f6a", "GPU-77b1"]
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}) == (["1", "3"], "CUDA_VISIBLE_DEVICES")
    assert lock_dir({"WSSS_GPU_LOCK_DIR": "/x"}) == Path("/x")
    # per user: the session's runtime folder, else a name with the uid under the temp folder
    assert lock_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/wsss-gpu-locks")
    assert lock_dir({"XDG_RUNTIME_DIR": "/run/user/7", "SLURM_JOB_ID": "17"}) == Path(
        "/run/user/7/wsss-gpu-locks/slurm-17"
    )
    assert lock_dir({}, uid=7) == Path(tempfile.gettempdir()) / "wsss-gpu-locks-7"
    assert lock_dir({"SLURM_JOB_ID": "17"}, uid=7) == Path(tempfile.gettempdir()) / "wsss-gpu-locks-7" / "slurm-17"
    assert lock_dir({}) == Path(tempfile.gettempdir()) / f"wsss-gpu-locks-{os.geteuid()}"


def test_gpu_count_without_torch(tmp_path: Path) -> None:
    """Without CUDA_VISIBLE_DEVICES and nvidia-smi the /dev/nvidia<N> files decide; torch is never imported on
    a machine without any GPU device."""
    dev = tmp_path / "dev"
    dev.mkdir()
    probe = (
        "import sys, wsss.runtime.gpu_lease as g; g.shutil.which = lambda name: None; "
        "print(g.machine_gpus({}, dev=sys.argv[1])[0], 'torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(dev)], env=_env(tmp_path, None), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout.strip() == "[] False", run.stderr
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps"):
        (dev / name).touch()
    run = subprocess.run(
        [sys.executable, "-c", probe, str(dev)], env=_env(tmp_path, None), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout.strip() == "['0', '1'] False", run.stderr


def test_lock_folder_is_private_and_checked(tmp_path: Path) -> None:
    folder = prepare_lock_dir(tmp_path / "a" / "b")
    for part in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(os.lstat(part).st_mode) == 0o700
    with pytest.raises(InputError, match=r"owned by uid \d+, not by this user"):  # another user's folder
        prepare_lock_dir(folder, uid=os.geteuid() + 1)
    (tmp_path / "link").symlink_to(folder)
    with pytest.raises(InputError, match="folder is a symbolic link"):
        prepare_lock_dir(tmp_path / "link")
    (tmp_path / "file").touch()
    with pytest.raises(InputError, match="not a directory"):
        prepare_lock_dir(tmp_path / "file")


def test_planted_symlink_and_shared_folder_are_one_line_errors(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    target = tmp_path / "victim"
    (locks / "gpu0.lock").symlink_to(target)
    run = _lease_cli(locks, 1, "sh", "-c", "echo ran", visible="0")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 2 and out == "" and not os.path.lexists(target)  # never followed, never created
    assert err.strip() == f"error: {locks}/gpu0.lock: GPU lock file is a symbolic link (refusing to follow it)"
    (locks / "gpu0.lock").unlink()
    os.chmod(locks, 0o777)  # a folder every user can write to: anyone could plant files there
    run = _lease_cli(locks, 1, "true", visible="0")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {locks}: GPU lock folder is writable by other users (mode 777)")


def test_wait_timeout_is_a_one_line_error(tmp_path: Path) -> None:
    held = acquire(1, gpus=["0"], directory=tmp_path)
    try:
        env = dict(_env(tmp_path, "0"), WSSS_GPU_LEASE_TIMEOUT="0.3")
        run = subprocess.run(
            [sys.executable, "-m", "wsss.runtime.gpu_lease", "1", "--", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2
        assert re.fullmatch(
            rf"error: wsss\.runtime\.gpu_lease: no 1 free GPU\(s\) among 0 after \d+ s \(locks in "
            rf"{re.escape(str(tmp_path))}\)",
            run.stderr.strip().splitlines()[-1],
        )
        assert "waiting for 1 free GPU(s): 0 of 1 free" in run.stderr.splitlines()[0]
        run = subprocess.run(
            [sys.executable, "-m", "wsss.runtime.launch", "1", "stage.py"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith(
            "error: wsss.runtime.launch: no 1 free GPU(s) among 0"
        )
        run = subprocess.run(
            [sys.executable, "-m", "wsss.runtime.gpu_lease", "--timeout", "0", "1", "--", "true"],
            env=_env(tmp_path, "0"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith(
            "error: wsss.runtime.gpu_lease: no 1"
        )
        env["WSSS_GPU_LEASE_TIMEOUT"] = "soon"
        run = subprocess.run(
            [sys.executable, "-m", "wsss.runtime.gpu_lease", "1", "--", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and run.stderr.strip() == (
            "error: $WSSS_GPU_LEASE_TIMEOUT: 'soon' is not a number of seconds >= 0"
        )
    finally:
        held.release()


def test_concurrent_leases_are_disjoint_and_waiters_say_so(tmp_path: Path) -> None:
    first = acquire(1, gpus=["0", "1"], directory=tmp_path)
    second = acquire(1, gpus=["0", "1"], directory=tmp_path)
    assert sorted(first.ids + second.ids) == ["0", "1"]
    assert second.env({})["CUDA_VISIBLE_DEVICES"] == second.ids[0]
    messages: list[str] = []
    with pytest.raises(TimeoutError):
        acquire(1, gpus=["0", "1"], directory=tmp_path, poll=0.05, timeout=0.3, report=messages.append)
    assert messages and "waiting for 1 free GPU(s): 0 of 2 free" in messages[0]
    first.release()
    third = acquire(1, gpus=["0", "1"], directory=tmp_path, timeout=1)
    assert third.ids == first.ids
    with pytest.raises(TimeoutError):  # all-or-nothing: one free GPU does not make a lease of two
        acquire(2, gpus=["0", "1", "2"], directory=tmp_path, poll=0.05, timeout=0.2, report=messages.append)
    assert acquire(1, gpus=["0", "1", "2"], directory=tmp_path, timeout=1).ids == ["2"]
    with pytest.raises(LeaseError, match="3 GPUs requested but this machine has 2"):
        acquire(3, gpus=["0", "1"], directory=tmp_path)
    assert acquire(0, gpus=["0"], directory=tmp_path).ids == []


def test_cli_leases_across_processes_and_sigkill_releases(tmp_path: Path) -> None:
    holder = _lease_cli(
        tmp_path,
        1,
        sys.executable,
        "-c",
        "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(60)",
    )
    try:
        held = holder.stdout.readline().strip()
        assert held in {"0", "1"}
        other = _lease_cli(tmp_path, 1, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
        out, _ = other.communicate(timeout=60)
        assert other.returncode == 0 and out.strip() == {"0": "1", "1": "0"}[held]
        with pytest.raises(TimeoutError):
            acquire(2, gpus=["0", "1"], directory=tmp_path, poll=0.05, timeout=0.3, report=lambda m: None)
        os.kill(holder.pid, signal.SIGKILL)  # the lease CLI exec'd the command: same process holds the lock
        holder.wait(timeout=30)
        lease = acquire(2, gpus=["0", "1"], directory=tmp_path, poll=0.05, timeout=10)
        assert sorted(lease.ids) == ["0", "1"]
        lease.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_cli_errors_and_no_ops(tmp_path: Path) -> None:
    too_many = _lease_cli(tmp_path, 3, "true")
    _, err = too_many.communicate(timeout=60)
    assert too_many.returncode == 2
    assert err.strip() == (
        "error: wsss.runtime.gpu_lease: 3 GPUs requested but this machine has 2 (CUDA_VISIBLE_DEVICES: 0,1)"
    )
    none = _lease_cli(tmp_path, 0, "sh", "-c", "echo ${CUDA_VISIBLE_DEVICES-unset}; exit 3", visible=None)
    out, _ = none.communicate(timeout=60)
    assert none.returncode == 3 and out.strip() == "unset"  # 0 GPUs: the command as is, its exit status
    gpuless = _lease_cli(tmp_path, 1, "sh", "-c", "echo ran", visible="")
    out, err = gpuless.communicate(timeout=60)
    assert gpuless.returncode == 0 and out.strip() == "ran" and "has none" in err


def test_launcher_uses_torchrun_for_several_gpus(tmp_path: Path) -> None:
    assert stage_argv(2, "s.py", ["--a", "1"], python="py") == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "s.py",
        "--a",
        "1",
    ]
    assert stage_argv(1, "s.py", ["--a"], python="py") == ["py", "s.py", "--a"]
    assert stage_argv(0, "s.py", [], python="py") == ["py", "s.py"]
    script = tmp_path / "stage.py"
    script.write_text("import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES'), sys.argv[1:])\n")
    run = subprocess.run(
        [sys.executable, "-m", "wsss.runtime.launch", "1", str(script), "--params", "{}"],
        env=_env(tmp_path / "locks", "5,6"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "5 ['--params', '{}']"
    run = subprocess.run(
        [sys.executable, "-m", "wsss.runtime.launch", "4", str(script)],
        env=_env(tmp_path / "locks", "5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr.strip().startswith("error: wsss.runtime.launch: 4 GPUs requested")


def test_config_timeout_reaches_the_gpu_jobs(tmp_path: Path) -> None:
    """``gpu_lease_timeout`` becomes the GPU jobs' WSSS_GPU_LEASE_TIMEOUT; unset, the commands are unchanged."""
    from helpers import snakemake, tiny_config, write_config

    config = tiny_config()
    config["device"] = "auto"
    write_config(tmp_path, config)
    plain = snakemake(tmp_path, "-n", "-p", "results/tiny/cam_val_miou.txt")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "-m wsss.runtime.gpu_lease" in plain.stdout and "WSSS_GPU_LEASE_TIMEOUT" not in plain.stdout
    config["gpu_lease_timeout"] = 30
    write_config(tmp_path, config)
    timed = snakemake(tmp_path, "-n", "-p", "results/tiny/cam_val_miou.txt")
    assert timed.returncode == 0, timed.stderr[-2000:]
    lease_lines = [
        line
        for line in timed.stdout.splitlines()
        if "-m wsss.runtime.gpu_lease" in line or "-m wsss.runtime.launch" in line
    ]
    assert len(lease_lines) >= 3  # train_cls (launch) and the infer_cam shards (gpu_lease)
    assert all("WSSS_GPU_LEASE_TIMEOUT=30 " in line for line in lease_lines)


def test_lease_env_numbers_gpus_in_pci_order(tmp_path: Path) -> None:
    """The leased ids are nvidia-smi's (PCI order): CUDA must count the same way (without CUDA_DEVICE_ORDER it puts
    the fastest GPU first and may use another GPU than the locked one). Planted bug caught: not setting it."""
    lease = acquire(1, gpus=["0", "1"], directory=tmp_path)
    try:
        env = lease.env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "PATH": "/bin"})
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["CUDA_VISIBLE_DEVICES"] == lease.ids[0]
        assert env["PATH"] == "/bin"
    finally:
        lease.release()
    from wsss.runtime.gpu_lease import Lease

    assert Lease([]).env({"X": "1"}) == {"X": "1"}  # no lease, no change


def test_lock_folder_parents_are_checked(tmp_path: Path) -> None:
    """Issue 18: under SLURM the lock folder is <base>/slurm-<id>; only the last part was checked, so a base
    writable by others let another user move slurm-<id> and two jobs share one GPU. Planted bug: drop
    _check_ancestors."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(InputError) as err:
        prepare_lock_dir(shared / "slurm-17")
    assert err.value.path == str(shared) and "writable by other users without the sticky bit (mode 777)" in str(
        err.value
    )
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what they do not own
    assert prepare_lock_dir(shared / "slurm-18") == shared / "slurm-18"
    if os.geteuid() == 0:  # only root can hand a folder to another uid
        os.chmod(shared, 0o755)
        os.chown(shared, 12345, -1)
        with pytest.raises(InputError, match=r"owned by uid 12345, not by this user \(uid 0\) or root"):
            prepare_lock_dir(shared / "slurm-19")
