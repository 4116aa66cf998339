"""Analyst SQL for POST /v1/query: one checked SELECT over granted views, in a throwaway sandbox.

`run_query(store, sql, key=..., scope=..., limits=...)` returns a `QueryResult` or raises a
`QueryError`; every QueryError is the caller's to fix, so the API answers 4xx with its message:

    FusionError
    └── QueryError          analyst SQL gave no result; `rule` names the check
        ├── QueryRefused    refused before anything ran: not one SELECT over the granted views
        ├── QueryFailed     checked, but DuckDB could not run it (unknown column, bad cast, memory)
        └── QueryTimeout    stopped at the time limit

The file is opened read-only: in the API, the published head-office snapshot (`fusion publish`),
never the live store. The service's writer holds that file, and DuckDB refuses a second attach
of a file in the same process (measured: "Unique file handle conflict").

Layers, so that one hole is not a leak (the threats: SQL that tries to read files, other
branches or base tables):

1. Size: at most `max_sql_chars` characters, no NUL.
2. DuckDB's own parser: `json_serialize_sql` on a plain in-memory connection (no store, no
   extension beyond the built-ins). It serialises SELECT statements only, so ATTACH, DETACH,
   COPY, EXPORT, SET, RESET, PRAGMA, INSTALL, LOAD, CALL, EXPLAIN, writes and PIVOT without an
   IN list (which DuckDB rewrites into several statements) come back as an error, and any error
   is a refusal. Exactly one statement: `SELECT 1; SELECT 2` serialises as two, `SELECT 1;
   DROP ...` as an error; comments are not in the tree, so none can hide anything from step 3.
3. The whole tree is walked (iteratively, every object): query nodes may be SELECT, set
   operations and recursive CTEs; table references may be names, joins, subqueries, VALUES and
   PIVOT with an IN list. Refused: table functions anywhere (read_csv, read_parquet, glob,
   read_text, query, duckdb_settings()...), SUMMARIZE / DESCRIBE / SHOW, any kind of node this
   module does not know, any catalog qualifier, any schema but `main`. A name must be a granted
   view, or a CTE in scope: defined earlier in the same WITH, or itself inside the recursive
   part of a recursive CTE. (A non-recursive CTE that names itself reads the catalog - measured -
   so `WITH duckdb_databases AS (SELECT * FROM duckdb_databases)` must not pass as a CTE.)
   `FROM 'file.csv'` is a name and is refused. Functions: an allowlist of DuckDB's built-in
   scalar, aggregate and window functions plus pure macros, minus `DENIED_FUNCTIONS`: the ones
   that read the session, the catalog or settings (`current_setting`), statistics of the base
   tables across branches (`stats`), or plan SQL given as a string. Macros are allowed only by
   name, because some (`pg_get_viewdef`) expand into catalog queries the tree never shows.
4. What runs is DuckDB's own rendering of the checked tree (`json_deserialize_sql`), wrapped as
   `SELECT * FROM (...) LIMIT max_rows + 1` (the extra row tells truncation), and that exact text
   is checked again: the text executed is the text checked.
5. The sandbox (`fusion.query_sandbox`): a fresh in-memory DuckDB per query, which loads the
   signed httpfs as `Store.open` does (its OpenSSL decrypts wide reads much faster than
   DuckDB's built-in crypto); the file is attached READ_ONLY under a random alias
   (`fusion.store_attach.attach_encrypted`), and only the views the query names are made
   (`fusion.query_grant.view_select`):
   - for a branch caller, as tables holding only its rows, after which the file is DETACHed. A
     view's filter is just a predicate: DuckDB may evaluate the caller's expressions on rows the
     filter would drop, and its errors quote values (`CAST(x AS INT)`, `error(x)`), so other
     branches' rows never enter a branch caller's sandbox at all. Only the columns the query
     names are copied (all of them after a star or a whole-row reference: `CheckedQuery`), since
     copying a wide table whole is most of a small query's time;
   - for head office, as views over the attached file (every row is theirs; copying the bank per
     query would not scale). Error messages are shown with the random alias replaced, since
     DuckDB's "Did you mean" hints name catalog objects.
   Then no external access, no local file system, no replacement scans, no extension loading,
   no spilling (`temp_directory = ''`), the caller's memory and thread limits, and
   `lock_configuration` last, so nothing above can be undone. A watchdog thread interrupts the
   connection at the time limit, or once the process's resident set has grown past the query's
   budget, and again every 20 ms until the query has stopped: DuckDB drops an interrupt that
   arrives between two statements (measured). Most of the set-up time is httpfs's signature
   check.
6. Memory DuckDB's limit does not see (`fusion.query_memory`): functions that build one value
   of a size an argument gives (repeat, lpad, range...) pass the check only with a constant
   size under `max_value_bytes`, and the answer is fetched in small Arrow batches, refused
   ("result_size") past `max_result_bytes` rather than held whole.
7. The process: `run_query` checks the SQL here, and the sandbox runs in a worker process
   (`fusion.query_worker`: a warm pool of fresh interpreters) whose address space is capped at
   `QueryLimits.address_budget` past its idle size. A value built step by step (nested
   replace, lambdas over lists, string_agg over a cross join) fails there as "memory", or ends
   the worker, which is replaced; the caller's process holds only the Arrow answer. The key
   reaches the worker through its pipe. `open_sandbox` still runs in the calling process for
   callers that hold their own limits (tests of the sandbox itself).

Granted views (`GRANTED_VIEWS`, `fusion.query_grant`) never carry a key or a raw identifier. A
branch sees what its published copy holds (`Store.publish`): its customers at the newest
snapshot, their matches and vendor rows; head office sees every snapshot.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from contracts.errors import (
    ConfigError,
    QueryRefused,
    StoreError,
)
from fusion.query_grant import VIEWS, allowed_functions
from fusion.query_memory import (
    check_sizes,
    memory_bytes,
)
from fusion.query_worker import ADDRESS_SLACK, QueryWorkers, WorkerCaps, default_workers
from fusion.snapshots import BRANCH_ID
from fusion.store import StoreConfig
from fusion.store_attach import check_key

__all__ = [
    "GRANTED_VIEWS",
    "CheckedQuery",
    "QueryLimits",
    "QueryResult",
    "QueryScope",
    "check_query",
    "check_store_file",
    "refusal",
    "run_query",
]

# -- the grant ---------------------------------------------------------------------------------

# What an analyst may name in FROM, with what each holds. Keys and raw identifiers are in none;
# the batch ledger, match runs (whole-bank counts) and the audit log are not granted.
GRANTED_VIEWS: Mapping[str, str] = MappingProxyType({n: v.description for n, v in VIEWS.items()})

_ALLOWED = (
    "Send one SELECT statement (WITH, UNION, subqueries, joins, window functions and lambdas "
    f"are fine) that reads only the granted views: {', '.join(VIEWS)}. Not allowed: catalog "
    "or schema names, files, table functions (read_csv, glob, range...), SUMMARIZE / DESCRIBE, "
    "settings, and any other statement"
)


def refusal(detail: str, *, rule: str) -> QueryRefused:
    """Return the refusal of `rule`, with what an analyst may send instead."""
    return QueryRefused(detail, rule=rule, allowed=_ALLOWED)


# -- caller and limits -------------------------------------------------------------------------

_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|[KMGT]i?B)", re.IGNORECASE)


@dataclass(frozen=True)
class QueryScope:
    """Whose rows a caller sees: `branches` for a branch analyst, None for head office (all)."""

    branches: frozenset[str] | None

    def __post_init__(self) -> None:
        if self.branches is None:
            return
        if not isinstance(self.branches, frozenset):
            raise ConfigError(
                f"branches must be a frozenset of branch ids or None (head office), got "
                f"{type(self.branches).__name__}; e.g. QueryScope(frozenset({{'B001'}}))",
                setting="branches",
            )
        if not self.branches:
            raise ConfigError(
                "a branch analyst needs at least one branch; head office is branches=None",
                setting="branches",
            )
        bad = [b for b in self.branches if not isinstance(b, str) or not BRANCH_ID.fullmatch(b)]
        if bad:
            raise ConfigError(
                f"branch ids are letters, digits, '.', '_' and '-' (up to 64), got {bad[0]!r}",
                setting="branches",
            )

    @classmethod
    def head_office(cls) -> QueryScope:
        """Return the scope that sees every branch."""
        return cls(None)

    @classmethod
    def of_branches(cls, *branch_ids: str) -> QueryScope:
        """Return the scope of an analyst of these branches."""
        return cls(frozenset(branch_ids))


@dataclass(frozen=True)
class QueryLimits:
    """How much one analyst query may ask for: rows returned, seconds, SQL size, memory, threads.

    `memory_limit` is DuckDB size text ("1GB"); nothing spills to disk, so a query that needs
    more fails with a message that says so. `max_value_bytes` bounds one value a function such
    as repeat or lpad builds (`fusion.query_memory`), `max_result_bytes` the Arrow rows handed
    back: a bigger answer is refused with rule "result_size".
    """

    _: KW_ONLY
    max_rows: int = 10_000
    timeout_seconds: float = 30.0
    max_sql_chars: int = 20_000
    memory_limit: str = "1GB"
    threads: int = 2
    max_value_bytes: int = 16_384
    max_result_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_sql_chars", "threads", "max_value_bytes", "max_result_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}", setting=name)
        seconds = self.timeout_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ConfigError(
                f"timeout_seconds must be a positive number, got {seconds!r}",
                setting="timeout_seconds",
            )
        if not isinstance(self.memory_limit, str) or not _MEMORY.fullmatch(self.memory_limit):
            raise ConfigError(
                f"memory_limit must be DuckDB size text such as '512MB' or '2GB', got "
                f"{self.memory_limit!r}",
                setting="memory_limit",
            )

    @property
    def memory_budget(self) -> int:
        """Return the bytes the process may grow by while this query runs (`MemoryWatch`)."""
        # DuckDB's own memory, the Arrow answer, and room for the allocator's slack.
        return memory_bytes(self.memory_limit) + self.max_result_bytes + (64 << 20)

    @property
    def address_budget(self) -> int:
        """Return the address space a query's worker may add past its idle size: the memory
        budget, the answer twice more (one table, its IPC copy) and `ADDRESS_SLACK`."""
        return self.memory_budget + 2 * self.max_result_bytes + ADDRESS_SLACK


# -- the check ---------------------------------------------------------------------------------

_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"})
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT"})
_SHOWN_NAME = 64  # characters of a refused name quoted back


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the check: DuckDB's rendering of it and what it can read.

    `columns` holds every name a column reference or USING list spells (lower case), or None
    when the query may read every column of a view: a star, a whole-row reference (`to_json(f)`),
    NATURAL JOIN, PIVOT, a positional reference (`#1`) or column aliases on a view.
    """

    sql: str  # no comments, one statement: what DuckDB parsed, printed back by DuckDB
    views: frozenset[str]
    columns: frozenset[str] | None


_parsers = threading.local()  # DuckDB connections are not thread-safe: one parser per thread


def _parser() -> duckdb.DuckDBPyConnection:
    con: duckdb.DuckDBPyConnection | None = getattr(_parsers, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        for statement in (
            "SET autoload_known_extensions = false",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(statement)
        _parsers.con = con
    return con


def check_query(sql: str, *, limits: QueryLimits | None = None) -> CheckedQuery:
    """Return the checked form of `sql`, or raise QueryRefused saying what is not allowed."""
    if not isinstance(sql, str):
        raise ConfigError(f"sql must be text, got {type(sql).__name__}", setting="sql")
    limits = limits or QueryLimits()
    limit = limits.max_sql_chars
    if len(sql) > limit:
        raise refusal(f"the SQL has {len(sql)} characters, more than {limit}", rule="size")
    return _check(sql, limits)


def _check(sql: str, limits: QueryLimits) -> CheckedQuery:
    if "\x00" in sql:
        raise refusal("the SQL contains a NUL character", rule="syntax")
    if not sql.strip():
        raise refusal("there is no statement", rule="empty")
    con = _parser()
    row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        message = str(tree.get("error_message", ""))
        if "Only SELECT statements" in message:
            raise refusal("only a SELECT statement may run", rule="statement")
        raise refusal(f"DuckDB cannot parse it: {message}", rule="syntax")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        rule = "empty" if not statements else "statements"
        raise refusal(f"send exactly one statement, got {len(statements)}", rule=rule)
    views, columns = _walk(statements[0]["node"], limits.max_value_bytes)
    row = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()
    if not row or not isinstance(row[0], str):
        raise refusal("DuckDB could not print the checked query back", rule="syntax")
    return CheckedQuery(row[0], views, columns)


def _refuse_name(name: object) -> str:
    text = str(name)
    return repr(text if len(text) <= _SHOWN_NAME else text[:_SHOWN_NAME] + "...")


@dataclass
class _Reads:
    """What a walked statement reads, gathered object by object."""

    views: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # every part of every column ref, USING columns
    whole: set[str] = field(default_factory=set)  # one-part refs: a column, or a row by its table
    relations: set[str] = field(default_factory=set)  # names and aliases of granted views in FROM
    every_column: bool = False


_Stack = list[tuple[object, frozenset[str]]]  # objects to visit, each with the CTEs in its scope


def _walk(root: object, max_value_bytes: int) -> tuple[frozenset[str], frozenset[str] | None]:
    """Check every object of a serialised statement; return the views and columns it names."""
    allowed = allowed_functions()
    reads = _Reads()
    stack: _Stack = [(root, frozenset())]
    while stack:
        item, ctes = stack.pop()
        if isinstance(item, list):
            stack.extend((child, ctes) for child in item)
            continue
        if not isinstance(item, dict):
            continue
        _check_qualifiers(item)
        children: dict[str, object] = item
        if "class" in item:  # an expression
            _visit_expression(item, allowed, reads)
            check_sizes(item, max_value_bytes=max_value_bytes, allowed=_ALLOWED)
        elif "modifiers" in item and "cte_map" in item:  # a query node
            children, ctes = _enter_query(item, ctes, stack)
        elif "sample" in item and "query_location" in item:  # a table reference
            _visit_table_ref(item, ctes, reads)
        stack.extend((child, ctes) for child in children.values())
    reads.every_column |= bool(reads.whole & reads.relations)
    columns = None if reads.every_column else frozenset(reads.names - {""})
    return frozenset(reads.views), columns


def _visit_expression(item: Mapping[str, Any], allowed: frozenset[str], reads: _Reads) -> None:
    if "function_name" in item:
        _check_function(item["function_name"], allowed)
    if item["class"] == "COLUMN_REF":
        parts = [_lower(p) or "" for p in item.get("column_names") or []]
        reads.names.update(parts)
        reads.whole.update(parts[:1] if len(parts) == 1 else [])
    reads.every_column |= item["class"] in {"STAR", "POSITIONAL_REFERENCE"}


def _enter_query(
    item: Mapping[str, Any], ctes: frozenset[str], stack: _Stack
) -> tuple[dict[str, object], frozenset[str]]:
    """Queue a query node's CTEs, each with those defined before it; return its other parts
    and the CTEs in scope for them."""
    kind = item.get("type")
    if kind not in _QUERY_NODES:
        raise refusal(f"{kind} is not supported", rule="construct")
    entries = item["cte_map"].get("map") or []
    defined = [_lower(entry["key"]) for entry in entries]
    for i, entry in enumerate(entries):  # a CTE sees the ones defined before it
        stack.append((entry["value"], ctes | frozenset(n for n in defined[:i] if n)))
    ctes = ctes | frozenset(n for n in defined if n)
    children = {k: v for k, v in item.items() if k != "cte_map"}
    if kind == "RECURSIVE_CTE_NODE":  # its name is bound in the recursive part only
        own = _lower(item.get("cte_name"))
        recursive = ctes | {own} if own else ctes
        stack.append((children.pop("right", None), recursive))
    return children, ctes


def _visit_table_ref(item: Mapping[str, Any], ctes: frozenset[str], reads: _Reads) -> None:
    view = _check_table_ref(item, ctes)
    if view is not None:
        reads.views.add(view)
        reads.relations.update({view, _lower(item.get("alias")) or view})
        reads.every_column |= bool(item.get("column_name_alias"))
    reads.names.update(_lower(c) or "" for c in item.get("using_columns") or [])
    reads.every_column |= item.get("type") == "PIVOT" or item.get("ref_type") == "NATURAL"


def _lower(name: object) -> str | None:
    """Return an ASCII name in lower case (DuckDB matches names case-insensitively), else None."""
    return name.lower() if isinstance(name, str) and name.isascii() else None


def _check_qualifiers(item: Mapping[str, object]) -> None:
    for key in ("catalog", "catalog_name"):
        if item.get(key):
            raise refusal(
                f"catalog name {_refuse_name(item[key])} is not allowed", rule="qualified"
            )
    for key in ("schema", "schema_name"):
        schema = item.get(key)
        if schema and _lower(schema) != "main":
            raise refusal(
                f"schema {_refuse_name(schema)} is not allowed (the views are in main)",
                rule="qualified",
            )


def _check_function(name: object, allowed: frozenset[str]) -> None:
    lowered = _lower(name)
    if lowered is None or lowered not in allowed:
        raise refusal(f"function {_refuse_name(name)} is not allowed", rule="function")


def _check_table_ref(item: Mapping[str, object], ctes: frozenset[str]) -> str | None:
    """Return the granted view a table reference names (None for a CTE or no name), or refuse."""
    kind = item.get("type")
    if kind == "TABLE_FUNCTION":
        function = item.get("function")
        name = function.get("function_name") if isinstance(function, dict) else None
        raise refusal(f"table function {_refuse_name(name)} is not allowed", rule="table_function")
    if kind == "SHOW_REF":
        raise refusal("SUMMARIZE, DESCRIBE and SHOW are not available", rule="show")
    if kind not in _TABLE_REFS:
        raise refusal(f"{kind} is not supported", rule="construct")
    if kind == "PIVOT" and item.get("pivot_enum"):
        raise refusal("PIVOT over an ENUM type is not supported", rule="construct")
    if kind != "BASE_TABLE":
        return None
    name = _lower(item.get("table_name"))
    if name is not None and not item.get("schema_name") and name in ctes:
        return None
    if name is None or name not in VIEWS:
        raise refusal(f"{_refuse_name(item.get('table_name'))} is not a granted view", rule="table")
    return name


# -- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryResult:
    """The rows of one analyst query (at most `max_rows`), and whether more were cut off."""

    table: pa.Table
    truncated: bool
    elapsed_seconds: float
    sql: str  # the checked query as DuckDB printed it back: for the audit log

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.table.column_names)

    @property
    def row_count(self) -> int:
        return int(self.table.num_rows)

    @property
    def frame(self) -> pl.DataFrame:
        """Return the rows as a polars DataFrame."""
        frame = pl.from_arrow(self.table)
        assert isinstance(frame, pl.DataFrame)
        return frame


def run_query(
    store: StoreConfig | str | os.PathLike[str],
    sql: str,
    *,
    key: str,
    scope: QueryScope,
    limits: QueryLimits | None = None,
    workers: QueryWorkers | None = None,
) -> QueryResult:
    """Return the rows of `sql` over the views granted to `scope`, read from the store file.

    `store` is a path or a StoreConfig, of which only the path and extension_directory count:
    `limits` sets memory and threads. The query runs in a worker process of `workers` (by
    default the process's own pool, `fusion.query_worker.default_workers`).
    Raises QueryRefused when the SQL is not one SELECT over granted views (before the file is
    opened, except for a granted view this store cannot fill yet), QueryFailed or QueryTimeout
    when it cannot run (rule "memory" too when it ended its worker), ConfigError for a
    malformed key, and StoreError when the file does not open (one detail-free message for a
    wrong key).
    """
    limits = limits or QueryLimits()
    if not isinstance(scope, QueryScope):
        raise ConfigError("scope must be a QueryScope", setting="scope")
    started = time.perf_counter()
    checked = check_query(sql, limits=limits)
    # DuckDB's own rendering of the checked tree, capped; checked again below as it stands.
    capped = f"SELECT * FROM (\n{checked.sql}\n) AS capped LIMIT {limits.max_rows + 1}"  # noqa: S608
    if _check(capped, limits).views != checked.views:  # the text that runs is the text checked
        raise refusal("DuckDB printed the query back differently", rule="construct")
    config = store if isinstance(store, StoreConfig) else StoreConfig(Path(store))
    key = check_key(key, "key")
    check_store_file(config.path)
    request = {
        "path": str(config.path),
        "extension_directory": _text_or_none(config.extension_directory),
        "key": key,
        "branches": None if scope.branches is None else sorted(scope.branches),
        "sql": checked.sql,
        "views": sorted(checked.views),
        "columns": None if checked.columns is None else sorted(checked.columns),
        "capped": capped,
        "limits": asdict(limits),
    }
    caps = WorkerCaps(
        timeout_seconds=limits.timeout_seconds,
        address_bytes=limits.address_budget,
        max_result_bytes=limits.max_result_bytes,
        memory_limit=limits.memory_limit,
    )
    table = (workers or default_workers()).run(request, caps)
    truncated = table.num_rows > limits.max_rows
    if truncated:
        table = table.slice(0, limits.max_rows)
    return QueryResult(table, truncated, time.perf_counter() - started, checked.sql)


def _text_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def check_store_file(path: Path) -> None:
    if not path.is_file():
        raise StoreError(
            f"there is no store at {path}; queries read a published snapshot (fusion publish)",
            path=str(path),
        )
