"""Probes for the tests of bucketed jobs on a LocalCluster: kill a worker, record task specs."""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

__all__ = ["KillOnce", "SpecRecorder", "one_worker_killed", "recorded_specs"]


class KillOnce(WorkerPlugin):
    """Kills its worker's process (SIGKILL, no goodbye) when a chosen task starts, once.

    The pid of the killed worker is written to `marker`, which also makes the kill happen once
    across every worker and restart.
    """

    def __init__(self, marker: str, key_prefix: str) -> None:
        self.marker = marker
        self.key_prefix = key_prefix

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith(self.key_prefix):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def one_worker_killed(client: Client, marker: Path, key_prefix: str) -> Iterator[None]:
    """Run the block with `KillOnce` on the two-worker cluster of `client`, then check the kill.

    The first task whose key starts with `key_prefix` kills its worker (its pid goes to
    `marker`). After the block: the killed worker was one of those running before it, and the
    cluster is back to two workers.
    """
    client.wait_for_workers(2, timeout=30)
    before = set(client.run(os.getpid).values())
    client.register_plugin(KillOnce(str(marker), key_prefix), name="kill-once")
    try:
        yield
    finally:
        client.unregister_worker_plugin("kill-once")
    assert int(marker.read_text()) in before
    client.wait_for_workers(2, timeout=30)


class SpecRecorder(SchedulerPlugin):
    """Keeps, for every task the scheduler is given, its spec as repr and as pickle.

    Register it as "spec-recorder"; `client.run_on_scheduler(recorded_specs)` reads them back.
    """

    def __init__(self) -> None:
        self.specs: list[bytes] = []

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        task = self.scheduler.tasks.get(key)
        if finish == "waiting" and task is not None and task.run_spec is not None:
            self.specs.append(repr(task.run_spec).encode() + pickle.dumps(task.run_spec))

    def __getstate__(self) -> dict[str, Any]:
        return {"specs": self.specs}


def recorded_specs(dask_scheduler: Any) -> list[bytes]:
    """Return the specs the scheduler's "spec-recorder" plugin kept (run on the scheduler)."""
    return dask_scheduler.plugins["spec-recorder"].specs
