"""Worker processes that run analyst queries, each under a cap on its address space.

DuckDB's `memory_limit` does not cover the values scalar functions build (nested `replace`,
`regexp_replace`, lambdas over lists, `concat` chains...), and a process cannot take memory back
from a query that is building one. So a query does not run in the service's process: it runs
in a worker process of its own (`python -m fusion.query_process`: a fresh interpreter, so nothing
of the service's memory, keys included, is inherited, and unlike multiprocessing's `spawn` it
never re-imports the caller's main module), whose address space is capped with
`resource.setrlimit(RLIMIT_AS)` while the query runs. Past the cap an allocation fails inside the
worker: DuckDB answers "Out of Memory", Python raises MemoryError, or the worker dies; each is
the caller's "memory" failure, and the service's own resident set does not move (measured in
`tests/api/test_query_isolation.py`).

`QueryWorkers` keeps a pool of started workers warm (a start costs about a second: importing
DuckDB and pyarrow and loading httpfs once), hands each query to an idle one over a pipe, and
replaces a worker that died, ran past the time limit (it is killed), hit its memory cap or kept
memory. The request, store key included, crosses the pipe: never argv or the environment. The
answer comes back as Arrow IPC bytes, refused past the byte cap in the worker before it is
sent; the parent reads no longer a message than that. Errors cross as JSON descriptions (never
pickles: the parent unpickles nothing a worker sends) and are raised again as the platform's.

This module is the service's side; the worker's side is `fusion.query_process`, which runs
`fusion.query_sandbox.run_in_sandbox` (this module, which fusion.query imports, never imports
either); `fusion.query.run_query` builds the request.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from contracts.errors import (
    ConfigError,
    QueryFailed,
    QueryRefused,
    QueryTimeout,
    StoreError,
    StoreLockedError,
)
from fusion.query_memory import memory_failure, result_too_big

__all__ = ["ADDRESS_SLACK", "QueryWorkers", "WorkerCaps", "default_workers"]

log = logging.getLogger("bankfusion.query")

# Address space a worker may add beyond a query's memory budget: thread stacks, the malloc
# arenas of DuckDB's threads, the allocators' reservations (measured: a fresh DuckDB connection
# with httpfs loaded adds about 120 MiB of address space with two malloc arenas).
ADDRESS_SLACK = 512 << 20
_READY_SECONDS = 120.0  # a worker's start: imports and httpfs's signature check
_GRACE_SECONDS = 1.0  # past the time limit: the worker's own watchdog answers before this
_STOP_SECONDS = 5.0
_HEADER_BYTES = 64 << 10  # a reply's header: JSON, an error's message at most
_IPC_OVERHEAD = 1 << 20  # the IPC stream's schema and padding beyond the rows' own bytes


@dataclass(frozen=True)
class WorkerCaps:
    """What one query may take in its worker: seconds, address space past the worker's idle
    size, and Arrow bytes of answer; `memory_limit` is the text refusals quote."""

    timeout_seconds: float
    address_bytes: int
    max_result_bytes: int
    memory_limit: str


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection

    def alive(self) -> bool:
        return self.process.poll() is None


class QueryWorkers:
    """A pool of query worker processes, `warm` of them started ahead and kept idle.

    More queries at once than `warm` start more workers (each query waits for its start); the
    extra ones stop when their query ends.
    """

    def __init__(self, *, warm: int = 1) -> None:
        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
            raise ConfigError(f"warm must be an integer >= 0, got {warm!r}", setting="warm")
        self._warm = warm
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        self._starting = 0
        self._closed = False
        self._lock = threading.Lock()

    def pids(self) -> list[int]:
        """Return the process ids of the started workers, idle or busy (tests measure them)."""
        with self._lock:
            workers = self._idle + self._busy
        return [w.process.pid for w in workers]

    def idle(self) -> int:
        """Return how many started workers wait for a query."""
        with self._lock:
            return len(self._idle)

    def fill(self) -> None:
        """Start workers in the background until `warm` of them are idle, busy or starting."""
        with self._lock:
            missing = self._warm - len(self._idle) - len(self._busy) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            threading.Thread(
                target=self._start_idle, name="query-worker-start", daemon=True
            ).start()

    def run(self, request: Mapping[str, Any], caps: WorkerCaps) -> pa.Table:
        """Return the Arrow answer a worker gives to `request`, or raise what it raised.

        Raises QueryTimeout when no answer comes within the time limit and a grace (the worker
        is killed), QueryFailed rule "memory" when the worker dies, and rule "result_size" when
        the answer is longer than `caps` allow.
        """
        worker = self._take()
        keep = False
        try:
            header, body = self._ask(worker, request, caps)
            keep = not header.get("retire")
        finally:
            self._give_back(worker, keep=keep)
        if "error" in header:
            raise _rebuilt(header["error"], caps)
        assert body is not None
        return pa.ipc.open_stream(pa.py_buffer(body)).read_all()

    def close(self) -> None:
        """Stop every idle worker; a busy one stops when its query ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            _stop(worker)

    def _ask(
        self, worker: _Worker, request: Mapping[str, Any], caps: WorkerCaps
    ) -> tuple[dict[str, Any], bytes | None]:
        """Return the header of `worker`'s answer (with "error" and "retire" when it gives
        none), and the answer's IPC bytes."""
        try:
            message = json.dumps(
                {
                    **request,
                    "address_bytes": int(caps.address_bytes),
                    "max_reply_bytes": caps.max_result_bytes + _IPC_OVERHEAD,
                }
            )
            worker.conn.send_bytes(message.encode())
            del message  # it holds the key
            if not worker.conn.poll(caps.timeout_seconds + _GRACE_SECONDS):
                return {"error": {"kind": "timeout"}, "retire": True}, None
            header: dict[str, Any] = json.loads(worker.conn.recv_bytes(_HEADER_BYTES))
            if "error" in header:
                return header, None
        except (EOFError, OSError, ValueError):  # it died: past its address space, mostly
            return {"error": {"kind": "died"}, "retire": True}, None
        try:
            return header, worker.conn.recv_bytes(caps.max_result_bytes + _IPC_OVERHEAD)
        except OSError:  # longer than that: the pipe is out of step, the worker goes
            return {"error": {"kind": "result_size"}, "retire": True}, None
        except EOFError:
            return {"error": {"kind": "died"}, "retire": True}, None

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise StoreError("analyst queries cannot run: the service is stopping")
            worker = self._idle.pop() if self._idle else None
        if worker is not None and not worker.alive():
            _stop(worker)
            worker = None
        worker = worker or self._start()  # none idle: this query waits for a start
        with self._lock:
            self._busy.append(worker)
        return worker

    def _give_back(self, worker: _Worker, *, keep: bool) -> None:
        with self._lock:
            self._busy.remove(worker)
            keep = keep and not self._closed and len(self._idle) < self._warm
            if keep:
                self._idle.append(worker)
        if not keep:
            _stop(worker)
            self.fill()

    def _start_idle(self) -> None:
        try:
            worker: _Worker | None = self._start()
        except StoreError:
            log.exception("a query worker did not start")
            worker = None
        with self._lock:
            self._starting -= 1
            wanted = len(self._idle) + len(self._busy) < self._warm
            if worker is not None and wanted and not self._closed:
                self._idle.append(worker)
                worker = None
        if worker is not None:
            _stop(worker)

    def _start(self) -> _Worker:
        """Return a started worker, once it says it is ready."""
        parent, child = multiprocessing.Pipe(duplex=True)
        # The same fusion package as this process's, found first whatever the working folder.
        paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        try:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, this module, an fd
                [sys.executable, "-m", "fusion.query_process", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stderr stays: the worker's log goes to the service's
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(p for p in paths if p),
                    "ARROW_DEFAULT_MEMORY_POOL": "system",  # see _few_reservations
                },
            )
        finally:
            child.close()
        worker = _Worker(process, parent)
        try:
            if parent.poll(_READY_SECONDS) and json.loads(parent.recv_bytes(_HEADER_BYTES)):
                return worker
        except (EOFError, OSError, ValueError):
            pass
        _stop(worker)
        raise StoreError(
            "analyst queries cannot run now: a query worker process did not start; the "
            "service's log says why"
        )


def _stop(worker: _Worker) -> None:
    """End a worker: closing its pipe ends an idle one; one still running is killed."""
    worker.conn.close()
    try:
        worker.process.wait(0.05)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait(_STOP_SECONDS)


def _rebuilt(error: Mapping[str, Any], caps: WorkerCaps) -> Exception:
    """Return the platform error a worker's error description stands for."""
    kind = error.get("kind")
    text = str(error.get("message", ""))
    if kind == "refused":
        return QueryRefused(
            str(error["detail"]), rule=str(error["rule"]), allowed=str(error["allowed"])
        )
    if kind == "failed":
        return QueryFailed(text, rule=str(error["rule"]))
    if kind == "timeout":
        return QueryTimeout(caps.timeout_seconds)
    if kind in {"memory", "died"}:
        return memory_failure(caps.memory_limit)
    if kind == "result_size":
        return result_too_big(caps.max_result_bytes)
    if kind == "locked":
        return StoreLockedError(text, path=error.get("path"))
    if kind == "store":
        return StoreError(text, path=error.get("path"))
    if kind == "config":
        return ConfigError(text, setting=error.get("setting"))
    return StoreError(
        f"the query's worker process failed ({error.get('type', 'unknown')}); the service's "
        "log has its traceback"
    )


_pool: QueryWorkers | None = None
_pool_lock = threading.Lock()


def default_workers() -> QueryWorkers:
    """Return the process's own pool (one worker kept warm), for callers that bring none.

    It is closed at exit, so its warm worker is ended and waited for rather than left running
    while this process goes.
    """
    global _pool  # one pool per process, made on first use
    with _pool_lock:
        if _pool is None:
            _pool = QueryWorkers(warm=1)
            atexit.register(_pool.close)
        return _pool


# -- the worker's side -------------------------------------------------------------------------
