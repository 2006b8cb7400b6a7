#!/usr/bin/env python
"""OpenMP's wait policy when a machine runs more threads than cores: two training loops of 2 threads each at once
(as two Snakemake jobs whose rules ask for 2 threads, started by the two workers of ``pytest -n 2`` on 2 cores), with
libgomp's default (idle threads spin for a while) against ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep), and one
loop alone as the baseline of the same run. The loops compute the same thing under both policies (the policy changes
how a thread waits, not how the work is split), which the script checks.

    python bench/omp_wait.py              # prints a table of seconds per loop and the ratio to the lone loop
    python bench/omp_wait.py --steps 120
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

LOOP = """
import sys, time, torch
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)])
x = torch.randn(8, 32, 32, 32)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()
print(time.perf_counter() - start, float(sum(p.detach().double().sum() for p in model.parameters())))
"""


def _loops(count: int, threads: int, policy: str | None, steps: int) -> list[tuple[float, float]]:
    """Start ``count`` loops at once; each one's (seconds, checksum of its weights)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    procs = [
        subprocess.Popen([sys.executable, "-c", LOOP, str(steps)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"error: a loop exited with {proc.returncode}")
        seconds, checksum = stdout.split()
        out.append((float(seconds), float(checksum)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps per loop")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    base = _loops(1, 2, None, args.steps)[0]
    rows = [("one loop, 2 threads (baseline)", [base])]
    rows.append(("two loops at once, 2 threads each, default", _loops(2, 2, None, args.steps)))
    rows.append(("two loops at once, 2 threads each, PASSIVE", _loops(2, 2, "PASSIVE", args.steps)))
    rows.append(("two loops at once, 1 thread each", _loops(2, 1, None, args.steps)))
    same = {checksum for _, results in rows[:3] for _, checksum in results}
    print(f"{os.cpu_count()} CPUs, {args.steps} steps per loop\n")
    print("| run | s per loop (mean) | × baseline |")
    print("|---|---|---|")
    for name, results in rows:
        mean = sum(s for s, _ in results) / len(results)
        print(f"| {name} | {mean:.2f} | {mean / base[0]:.1f} |")
    print(f"\nsame weights under both policies: {'yes' if len(same) == 1 else 'NO: ' + str(sorted(same))}")
    print(f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return 0 if len(same) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
