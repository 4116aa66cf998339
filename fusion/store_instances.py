"""Warm DuckDB instances for stores: the signed httpfs is loaded once per instance, not per open.

DuckDB checks an extension's signature by hashing the whole file on every LOAD: 50-60 ms for
the 25 MB httpfs here, most of what opening a store cost. A store therefore opens on an
instance of this process's pool. A new instance is locked down (no extension installs itself,
no community extension) and loads the signed httpfs (`fusion.store_attach.load_httpfs`); an
instance a closed store gave back comes with that store detached and the instance-wide
settings it was given reset, and the next open reuses it. One whose httpfs did not load is
closed, not pooled: the next open tries again, as it would have without a pool.

Each store gets its own connection of the instance (`cursor()`: its own `USE`, transaction and
temporary objects; closing it closes the cursors taken from it), and sets the instance-wide
settings (spill encryption, temporary directory, memory limit, threads) at each open. An
instance that cannot be made clean again is closed instead of pooled: its temporary directory
was used (DuckDB cannot switch it then), a database is still attached, or a setting is refused.
At most `MAX_IDLE` wait in the pool. Instances pooled before a fork stay with the parent: a
forked child starts with an empty pool, never uses them, and keeps them referenced so that none
is destroyed while it runs (at its exit they go with the interpreter: measured harmless).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from fusion.store_attach import load_httpfs

__all__ = ["MAX_IDLE", "StoreInstance", "close_idle", "give_back", "pooled", "take"]

MAX_IDLE = 2
# Instance-wide settings a store may change (`Store.open`, `fusion.match`): reset on return.
_RESET = ("memory_limit", "threads", "preserve_insertion_order", "temp_directory")
_BUILT_IN = {"memory", "system", "temp"}  # the databases every instance has


@dataclass(eq=False)
class StoreInstance:
    """One in-memory DuckDB instance: its root connection and whether httpfs loaded (None) or
    why not."""

    root: duckdb.DuckDBPyConnection
    httpfs_problem: str | None
    extension_directory: Path | None
    pid: int = field(default_factory=os.getpid)


_lock = threading.Lock()
_idle: list[StoreInstance] = []
_forked_away: list[StoreInstance] = []  # a child's copies of its parent's pool: kept, not closed


def take(extension_directory: Path | None) -> StoreInstance:
    """Return an idle instance for `extension_directory`, or a new one."""
    with _lock:
        for i, instance in enumerate(_idle):
            if instance.extension_directory == extension_directory:
                return _idle.pop(i)
    root = duckdb.connect(":memory:")
    try:
        # No network and no community code: the only extension is the signed httpfs from PyPI.
        root.execute("SET autoinstall_known_extensions = false")
        root.execute("SET allow_community_extensions = false")
        problem = load_httpfs(root, extension_directory=extension_directory)
    except BaseException:
        root.close()
        raise
    return StoreInstance(root, problem, extension_directory)


def give_back(instance: StoreInstance, alias: str) -> None:
    """Detach `alias` (the store's file) and pool the instance, or close it if it cannot be
    made clean again or the pool is full."""
    if instance.pid != os.getpid():
        return
    if instance.httpfs_problem is not None:  # nothing saved by keeping it; the next open retries
        instance.root.close()
        return
    try:
        instance.root.execute(f"DETACH DATABASE IF EXISTS {alias}")
        for setting in _RESET:
            instance.root.execute(f"RESET {setting}")
        attached = instance.root.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        clean = {name for (name,) in attached} <= _BUILT_IN
    except duckdb.Error:
        clean = False
    with _lock:
        if clean and len(_idle) < MAX_IDLE:
            _idle.append(instance)
            return
    instance.root.close()


def close_idle() -> int:
    """Close every idle instance of this process (the next open loads httpfs again); return
    how many were closed."""
    with _lock:
        closing = list(_idle)
        _idle.clear()
    for instance in closing:
        instance.root.close()
    return len(closing)


def pooled() -> int:
    """Return how many instances wait in this process's pool."""
    with _lock:
        return len(_idle)


def _forget_after_fork() -> None:
    """In a forked child: the parent's instances are copies whose threads did not fork; keep a
    reference so that none is destroyed while the child runs, and start an empty pool."""
    global _lock
    _lock = threading.Lock()
    _forked_away.extend(_idle)
    _idle.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
