"""``python tests/snakemake_quick_poll.py ARGS``: Snakemake's command line (``python -m snakemake ARGS``) with the SLURM
executor plugin's status polls at most ``WSSS_TEST_POLL_S`` seconds apart (default 2).

The plugin waits 10 s longer after every poll that finds no job finished, up to 180 s: right on a shared cluster,
where each poll costs the controller a query, but the SLURM test runs a chain of jobs of 5 to 15 s each on its own
one-node cluster, and each of them waited for the third poll, 33 s after its start (measured: 14 of them in a row).
Only the wait between polls changes; submission, the status command and the job steps are the plugin's own.
"""

from __future__ import annotations

import os
import sys

from snakemake_executor_plugin_slurm import Executor

CAP_S = float(os.environ.get("WSSS_TEST_POLL_S", "2"))

# the plugin sets this property after each poll (snakemake-interface-executor-plugins' RemoteExecutor); if a new
# version stops using it, fail here rather than run the test at the old pace without a word
_interval = Executor.next_seconds_between_status_checks
if not isinstance(_interval, property) or _interval.fset is None:
    sys.exit(
        "error: snakemake_executor_plugin_slurm.Executor.next_seconds_between_status_checks is no settable property"
    )
Executor.next_seconds_between_status_checks = _interval.setter(
    lambda self, seconds: _interval.fset(self, None if seconds is None else min(seconds, CAP_S))
)

if __name__ == "__main__":
    from snakemake.cli import main

    sys.argv[0] = "snakemake"
    main()
