"""The process's own query-worker pool ends its warm worker when the process exits, instead of
leaving it running behind (a child the interpreter warns about, reaped by nobody)."""

from __future__ import annotations

import subprocess
import sys

import psutil

_FILL_THEN_EXIT = """
import time
from fusion.query_worker import default_workers
pool = default_workers()
pool.fill()
deadline = time.monotonic() + 60
while not pool.idle() and time.monotonic() < deadline:
    time.sleep(0.05)
print(*pool.pids(), flush=True)
"""


def test_the_default_pools_warm_worker_ends_with_its_process():
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", _FILL_THEN_EXIT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (pid,) = map(int, done.stdout.split())
    assert "still running" not in done.stderr and "ResourceWarning" not in done.stderr
    if psutil.pid_exists(pid):  # a pid is reused only much later; a zombie is not running
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
