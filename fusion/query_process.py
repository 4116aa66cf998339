"""The worker's side of `fusion.query_worker`: one process running analyst queries, each under a
cap on its address space (`resource.setrlimit(RLIMIT_AS)`).

Started as `python -m fusion.query_process <pipe fd>` by `fusion.query_worker.QueryWorkers`: it
reads one JSON request at a time from the pipe (store key included: never argv or the
environment), caps its address space at its idle size plus the request's budget, runs
`fusion.query_sandbox.run_in_sandbox`, and answers a JSON header and the Arrow IPC stream of
the rows, or a header describing the error (never a pickle). A worker that kept memory asks
to be replaced.
"""

from __future__ import annotations

import ctypes
import json
import logging
import resource
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import duckdb
import psutil
import pyarrow as pa

from contracts.errors import (
    ConfigError,
    QueryFailed,
    QueryRefused,
    QueryTimeout,
    StoreError,
    StoreLockedError,
)
from fusion.query_sandbox import run_in_sandbox, spare_instance, warm_up

__all__: list[str] = []

log = logging.getLogger("bankfusion.query")

_RETIRE_GROWTH = 256 << 20  # address space a worker may keep past its start, else replaced
_ARENAS = 2  # glibc malloc arenas per worker: each reserves 64 MiB of address space
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def _described(error: Exception) -> dict[str, Any]:
    """Return a JSON description of a platform error `_rebuilt` raises again in the parent."""
    if isinstance(error, QueryTimeout):
        return {"kind": "timeout"}
    if isinstance(error, QueryRefused):
        return {
            "kind": "refused",
            "detail": error.detail,
            "rule": error.rule,
            "allowed": error.allowed,
        }
    if isinstance(error, QueryFailed):
        return {"kind": "failed", "message": str(error), "rule": error.rule}
    if isinstance(error, StoreError):
        kind = "locked" if isinstance(error, StoreLockedError) else "store"
        return {"kind": kind, "message": str(error), "path": error.path}
    if isinstance(error, ConfigError):
        return {"kind": "config", "message": str(error), "setting": error.setting}
    raise TypeError(f"not a platform error: {type(error).__name__}")


def _address_space() -> int:
    return int(psutil.Process().memory_info().vms)


def _cap(limit: int | None) -> None:
    """Cap this process's address space at `limit` bytes (None: no cap)."""
    soft = resource.RLIM_INFINITY if limit is None else limit
    resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _few_reservations() -> None:
    """Reserve less address space the cap would count as used: few glibc malloc arenas (each
    reserves 64 MiB), and pyarrow on the system allocator (mimalloc reserves 1 GiB at its
    first allocation: measured)."""
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, _ARENAS)
    except (OSError, AttributeError):  # not glibc: nothing to limit
        pass
    pa.set_memory_pool(pa.system_memory_pool())


def _serve(conn: Connection) -> None:
    """Run queries from `conn` until it closes or this worker should be replaced.

    While it waits, the worker holds the next query's DuckDB (`spare_instance`, httpfs loaded):
    made after each answer is sent, it is used by one sandbox, which closes it."""
    _few_reservations()
    spare: duckdb.DuckDBPyConnection | None = warm_up()
    baseline = _address_space()  # the spare included: each query finds one
    conn.send_bytes(json.dumps({"ready": True}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        _cap(baseline + int(request.pop("address_bytes")))
        # Made for the default extension folder: a request naming another gets a new one.
        taken, spare = (spare, None) if request["extension_directory"] is None else (None, spare)
        header, body = _answer(request, taken)
        del request  # it holds the key
        _cap(None)
        header["retire"] = header.get("retire") or _address_space() - baseline > _RETIRE_GROWTH
        conn.send_bytes(json.dumps(header).encode())
        if body is not None:
            conn.send_bytes(body)
        del body
        if header["retire"]:
            return
        if spare is None:
            spare = spare_instance(None)


def _answer(
    request: dict[str, Any], con: duckdb.DuckDBPyConnection | None
) -> tuple[dict[str, Any], pa.Buffer | None]:
    """Return the header and the Arrow IPC stream of `request`'s answer (its sandbox on `con`
    when given), or a header whose "error" describes what the query raised."""
    reply_bytes = int(request.pop("max_reply_bytes"))
    try:
        table = run_in_sandbox(request, con=con)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks())
        del table
        body = sink.getvalue()
    except (QueryFailed, QueryRefused, QueryTimeout, StoreError, ConfigError) as error:
        memory = isinstance(error, QueryFailed) and error.rule == "memory"
        return {"error": _described(error), "retire": memory}, None
    except MemoryError:
        return {"error": {"kind": "memory"}, "retire": True}, None
    except Exception as error:  # a bug: its type and frames, never its text
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("a query worker failed with %s:\n%s", type(error).__name__, frames)
        return {"error": {"kind": "internal", "type": type(error).__name__}, "retire": True}, None
    if body.size > reply_bytes:
        return {"error": {"kind": "result_size"}}, None
    return {"bytes": body.size}, body


if __name__ == "__main__":  # started by QueryWorkers: the one argument is the pipe's fd
    _serve(Connection(int(sys.argv[1])))
