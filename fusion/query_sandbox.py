"""The analyst query sandbox: a fresh, locked in-memory DuckDB per query (layer 5 of
`fusion.query`), run in a query worker process (`fusion.query_process`).

`run_in_sandbox(request)` answers a request `fusion.query.run_query` built from checked SQL:
`open_sandbox` attaches the store file read-only under a random alias, makes only the views the
query names over the caller's rows (copied for a branch caller, after which the file is
detached; views over the file for head office), then turns off external access, the local
file system, replacement scans and extension loading, sets the caller's memory and thread
limits with nothing spilled, and locks the configuration. A watchdog (`_deadline`) interrupts
the connection at the time limit or once the process grew past the query's memory budget. The
answer is fetched in small Arrow batches and refused past `max_result_bytes`.

A query worker holds the next query's instance while it waits (`spare_instance`: extension
installs off, httpfs loaded), so httpfs's signature check is not in a query's time;
`warm_up` makes the first one and loads the parser and the function allowlist.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from contracts.errors import QueryError, QueryFailed, QueryTimeout, StoreError, StoreLockedError
from fusion.query import (
    CheckedQuery,
    QueryLimits,
    QueryScope,
    check_query,
    check_store_file,
    refusal,
)
from fusion.query_grant import NEVER_SHOWN, VIEWS, view_select
from fusion.query_memory import MemoryWatch, memory_failure, result_too_big
from fusion.store import StoreConfig
from fusion.store_attach import attach_encrypted, check_key, load_httpfs

__all__ = ["QuerySandbox", "open_sandbox", "run_in_sandbox", "spare_instance", "warm_up"]

_BATCH_ROWS = 256  # rows per Arrow batch fetched: small, so the byte cap stops early
_WATCH_SECONDS = 0.02  # how often the watchdog looks at the clock and the resident set


def run_in_sandbox(
    request: Mapping[str, Any], *, con: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """Return the Arrow answer of a request `run_query` built: run in a query worker.

    The SQL in it was checked by `run_query`; the sandbox holds only the views it names. `con`
    (see `open_sandbox`) is the worker's instance made ahead for this query.
    """
    limits = QueryLimits(**request["limits"])
    branches = request["branches"]
    columns = request["columns"]
    checked = CheckedQuery(
        str(request["sql"]),
        frozenset(request["views"]),
        None if columns is None else frozenset(columns),
    )
    directory = request["extension_directory"]
    config = StoreConfig(
        Path(request["path"]), extension_directory=None if directory is None else Path(directory)
    )
    scope = QueryScope(None if branches is None else frozenset(branches))
    with open_sandbox(
        config, key=request["key"], scope=scope, checked=checked, limits=limits, con=con
    ) as box:
        return box.run(str(request["capped"]), max_bytes=limits.max_result_bytes)


def warm_up() -> duckdb.DuckDBPyConnection:
    """Load what every query needs once (DuckDB, httpfs and its signature check), so that a
    query worker's first query is as fast as its next ones; return the warmed instance (a
    `spare_instance` that ran one constant SELECT) for the first query's sandbox."""
    con = spare_instance(None)
    try:
        con.execute("SELECT 1 AS one").fetch_record_batch(_BATCH_ROWS).read_all()
        check_query("SELECT 1 AS one")  # this thread's parser and the function allowlist
    except BaseException:
        con.close()
        raise
    return con


def spare_instance(extension_directory: Path | None) -> duckdb.DuckDBPyConnection:
    """Return a new in-memory DuckDB for one sandbox (`open_sandbox` sets it up and closes it),
    extension installs off, httpfs loaded: a query worker makes the next query's while it
    waits, so httpfs's signature check (50-60 ms) is not in that query's time."""
    con = duckdb.connect(":memory:")
    try:
        for setting in (
            "autoinstall_known_extensions", "autoload_known_extensions",
            "allow_community_extensions",
        ):  # fmt: skip
            con.execute(f"SET {setting} = false")
        load_httpfs(con, extension_directory=extension_directory)
    except BaseException:
        con.close()
        raise
    return con


class QuerySandbox:
    """A locked in-memory DuckDB holding the caller's views; `run` maps DuckDB errors to ours."""

    def __init__(self, con: duckdb.DuckDBPyConnection, alias: str, limits: QueryLimits) -> None:
        self.con = con
        self.alias = alias
        self.limits = limits
        self.watch = MemoryWatch(limits.memory_budget)

    def run(self, sql: str, *, max_bytes: int | None = None) -> pa.Table:
        """Return the rows of one statement as Arrow, refused past `max_bytes` of them."""
        failure: QueryError
        try:
            return self._fetch(sql, max_bytes)
        except duckdb.InterruptException:
            failure = (
                memory_failure(self.limits.memory_limit)
                if self.watch.exceeded
                else QueryTimeout(self.limits.timeout_seconds)
            )
        except duckdb.OutOfMemoryException:
            failure = memory_failure(self.limits.memory_limit)
        except duckdb.Error as err:
            failure = QueryFailed(str(err).replace(self.alias, "store"), rule="failed")
        raise failure  # outside the except block: no DuckDB text beside ours

    def _fetch(self, sql: str, max_bytes: int | None) -> pa.Table:
        """Return the rows of `sql`, streamed in small batches so that no more than `max_bytes`
        of them are ever held (DuckDB's own fetch_arrow_table would hold the whole answer)."""
        if max_bytes is None:
            return self.con.execute(sql).fetch_arrow_table()
        reader = self.con.execute(sql).fetch_record_batch(_BATCH_ROWS)
        batches, held = [], 0
        for batch in reader:
            held += batch.nbytes
            if held > max_bytes:
                raise result_too_big(max_bytes)
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)


@contextmanager
def open_sandbox(
    config: StoreConfig,
    *,
    key: str,
    scope: QueryScope,
    checked: CheckedQuery,
    limits: QueryLimits,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Iterator[QuerySandbox]:
    """Yield a locked sandbox holding the views `checked` reads, over `scope`'s rows.

    The views are made whatever `checked` names, so `run_query` checks the SQL first: the
    sandbox is the layer that holds when the check has a hole. `con`: a `spare_instance` made
    for `config.extension_directory` (default: a new in-memory DuckDB); closed with the sandbox.
    """
    con = con if con is not None else duckdb.connect(":memory:")
    try:
        key = check_key(key, "key")
        check_store_file(config.path)
        box = QuerySandbox(con, f"store_{secrets.token_hex(8)}", limits)
        with _deadline(con, limits.timeout_seconds, box.watch):
            _prepare(box, config, key=key, scope=scope, checked=checked)
            yield box
    finally:
        con.close()


def _prepare(
    box: QuerySandbox,
    config: StoreConfig,
    *,
    key: str,
    scope: QueryScope,
    checked: CheckedQuery,
) -> None:
    """Attach the file, make the views `checked` reads over `scope`'s rows, then lock the box."""
    con, alias, limits = box.con, box.alias, box.limits
    for setting, value in (
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("allow_community_extensions", False),
        ("temp_directory", ""),  # no spilling: a query lives within memory_limit
        ("max_temp_directory_size", "0B"),
        ("memory_limit", limits.memory_limit),
        ("threads", limits.threads),
    ):
        con.execute(f"SET {setting} = ?", [value])
    # OpenSSL decrypts; without it a read-only attach falls back to DuckDB's built-in crypto,
    # as Store.open does, which is far slower on wide reads.
    load_httpfs(con, extension_directory=config.extension_directory)
    columns = _attach(con, config.path, alias=alias, key=key)
    features = [c for c in columns.get("bank_features", []) if c.lower() not in NEVER_SHOWN]
    for name in sorted(checked.views):
        missing = [t for t in VIEWS[name].tables if t not in columns]
        if missing:
            raise refusal(
                f"{name} is not available in this store yet (it has no {', '.join(missing)}; "
                "load and match a bank extract first)",
                rule="unavailable",
            )
        select = view_select(name, db=alias, branches=scope.branches, features=features)
        if scope.branches is None:
            box.run(f"CREATE VIEW {name} AS {select}")
        else:
            _copy_view(box, name, select, checked.columns)
    if scope.branches is not None:
        con.execute(f"DETACH {alias}")  # the caller's rows are copied; nothing else stays
    for statement in (
        "SET enable_external_access = false",
        "SET python_enable_replacements = false",
        "SET disabled_filesystems = 'LocalFileSystem'",
        "SET lock_configuration = true",  # last: nothing above can be undone after it
    ):
        con.execute(statement)


def _attach(
    con: duckdb.DuckDBPyConnection, path: Path, *, alias: str, key: str
) -> dict[str, list[str]]:
    """Attach the store file read-only as `alias`; return its tables' columns, in order."""
    try:
        attach_encrypted(con, path, alias=alias, key=key, read_only=True)
    except StoreLockedError:
        raise StoreLockedError(
            f"{path} is open for writing, and DuckDB lets nobody read beside a writer; "
            "queries read the published head-office snapshot (fusion publish)",
            path=str(path),
        ) from None
    columns: dict[str, list[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = 'main' ORDER BY table_name, column_index",
        [alias],
    ).fetchall():
        columns.setdefault(str(table), []).append(str(column))
    if "customers" not in columns:
        raise StoreError(f"{path} is not a fusion store: it has no customers table", path=str(path))
    return columns


def _copy_view(box: QuerySandbox, name: str, select: str, wanted: frozenset[str] | None) -> None:
    """Copy a branch caller's rows of a view into a table, only the columns the query can read.

    A wide table read whole is slow; `wanted` None (a star, a whole-row reference) keeps all.
    """
    shape = box.run(f"DESCRIBE {select}")["column_name"].to_pylist()
    keep = [c for c in shape if wanted is None or c.lower() in wanted]
    projection = ", ".join('"' + c.replace('"', '""') + '"' for c in keep or shape[:1])
    box.run(f"CREATE TABLE {name} AS SELECT {projection} FROM ({select})")  # noqa: S608


@contextmanager
def _deadline(
    con: duckdb.DuckDBPyConnection, seconds: float, memory: MemoryWatch
) -> Iterator[None]:
    """Interrupt `con` after `seconds`, or once the process grew past `memory`'s budget, and
    every 20 ms after that until the block ends."""
    done = threading.Event()
    deadline = time.monotonic() + seconds

    def watch() -> None:
        while not memory.over() and time.monotonic() < deadline:
            if done.wait(min(_WATCH_SECONDS, max(deadline - time.monotonic(), 0))):
                return
        while True:  # an interrupt between two statements is dropped: repeat until done
            con.interrupt()
            if done.wait(0.02):
                return

    watchdog = threading.Thread(target=watch, name="query-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()  # before the connection closes: never interrupt a closed connection
