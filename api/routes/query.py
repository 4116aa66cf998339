"""POST /v1/query: analysts' SQL over granted views of the published head-office snapshot.

At most `max_concurrent_queries` run at once (each holds a thread here and a worker process
of the app's pool, `fusion.query_worker`: `warm_query_workers` of them kept started), at most
half of them from one caller; one more gets 429 with Retry-After rather than waiting in line.
The answer is at most `QueryLimits.max_result_bytes` of Arrow rows (`fusion.query`), and its
JSON at most `ApiSettings.max_query_response_bytes`: it is built a slice of rows at a time and
refused (rule "result_size") as soon as it would be larger, never held whole beside the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import QueryCreate, QueryPublic
from api.service import query_share
from contracts.errors import QueryFailed
from fusion.pipeline.bank import published_snapshot_key
from fusion.query import QueryResult, QueryScope, run_query
from fusion.query_memory import result_too_big
from fusion.query_worker import QueryWorkers
from fusion.tokens import Principal

__all__ = ["router"]

_RETRY_AFTER_SECONDS = 2
_SLICE_BYTES = 256 << 10  # Arrow bytes of rows turned into JSON at a time
_ROWS = TypeAdapter(list[list[Any]])  # QueryPublic.rows: the same JSON as the model gives


@asynccontextmanager
async def _workers(app: FastAPI) -> AsyncIterator[None]:
    """Keep `warm_query_workers` query workers started for the app's life."""
    settings = app.state.settings
    workers = QueryWorkers(
        warm=min(settings.warm_query_workers, max(settings.max_concurrent_queries, 0))
    )
    workers.fill()  # in the background: the service answers while they start
    app.state.query_workers = workers
    try:
        yield
    finally:
        await run_in_threadpool(workers.close)


router = APIRouter(prefix="/v1", tags=["query"], lifespan=_workers)


@router.post("/query", name="query", response_model=QueryPublic)
async def _query(
    body: QueryCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("analyst", "admin"))],
) -> Response:
    """Run one SELECT over the views granted to the caller, rows of its branches only."""
    snapshot = service.snapshot_path()
    if not snapshot.is_file():
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="no published head-office snapshot yet; run `fusion publish`",
        )
    scope = (
        QueryScope.head_office()
        if principal.branches is None
        else QueryScope.of_branches(*sorted(principal.branches))
    )
    # The audit keeps a digest of the SQL, not its text: a query can quote values.
    audit(request, detail="sql-sha256:" + hashlib.sha256(body.sql.encode()).hexdigest()[:16])
    cap = settings.max_concurrent_queries
    if not service.take_query_slot(cap, principal.token_id):
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{cap} analyst queries may run at once, at most {query_share(cap)} of them "
            "from one caller, and that many are running; send it again in a few seconds"
            if cap
            else "analyst queries are turned off on this service (max_concurrent_queries 0); "
            "ask the bank's operators",
            headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
        )
    try:
        result = await run_in_threadpool(
            run_query,
            snapshot,
            body.sql,
            key=published_snapshot_key(service.keyring, service.folder.snapshots),
            scope=scope,
            limits=settings.query_limits,
            workers=getattr(request.app.state, "query_workers", None),
        )
        answer = await run_in_threadpool(_json, result, settings.max_query_response_bytes)
    finally:
        service.release_query_slot(principal.token_id)
    audit(request, rows=result.row_count)
    return Response(answer, media_type="application/json")


def _json(result: QueryResult, max_bytes: int) -> bytes:
    """Return the JSON answer (QueryPublic) of `result`, or raise QueryFailed rule
    "result_size" once it would be longer than `max_bytes`.

    The rows become JSON a slice at a time, so that no more than one slice of them is ever
    held as Python values, and the pieces stop growing at the cap.
    """
    envelope = QueryPublic(
        columns=list(result.columns),
        rows=[],
        row_count=result.row_count,
        truncated=result.truncated,
        elapsed_seconds=result.elapsed_seconds,
    ).model_dump_json()
    # Keys and strings are JSON-escaped, so the rows' empty list is the one unescaped match.
    head, tail = envelope.encode().split(b'"rows":[]', 1)
    pieces, size = [head, b'"rows":['], len(head) + len(tail) + 9
    table = result.table
    step = max(1, table.num_rows * _SLICE_BYTES // max(table.nbytes, 1))
    for start in range(0, table.num_rows, step):
        rows = _ROWS.dump_json(_rows(table.slice(start, step)))[1:-1]
        size += len(rows) + (start > 0)
        if size > max_bytes:
            raise result_too_big(max_bytes, what="the answer as JSON")
        pieces += [b",", rows] if start else [rows]
    return b"".join([*pieces, b"]", tail])


def _rows(table: pa.Table) -> list[list[Any]]:
    """Return the rows as lists of JSON-ready values, read from Arrow column by column.

    Not through polars: on DuckDB 1.4.4 results it cannot import INTERVAL or UNION columns,
    panics on dates past year 9999 and rounds HUGEINT (each measured as a 500). A column JSON
    cannot carry is the caller's to cast: a QueryFailed (400) names it.
    """
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        nested = list(_types(column.type))
        opaque = next((t for t in nested if isinstance(t, pa.BaseExtensionType)), None)
        if opaque is not None:
            kind = getattr(opaque, "type_name", None) or opaque.extension_name
            raise _no_json_form(name, f"DuckDB {kind} values")
        try:
            values = column.to_pylist()
        except (OverflowError, ValueError):  # Python's dates end at year 9999
            raise _no_json_form(
                name, "a date or time outside years 1 to 9999 (DuckDB's infinity is one)"
            ) from None
        if any(_needs_text(t) for t in nested):
            values = [_plain(v) for v in values]
        columns.append(values)
    return [list(row) for row in zip(*columns, strict=True)]


def _types(kind: pa.DataType) -> Iterator[pa.DataType]:
    """Yield a type and every type nested in it (list items, struct and union fields, maps)."""
    stack = [kind]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, pa.DictionaryType):
            stack.append(item.value_type)
        elif not isinstance(item, pa.BaseExtensionType):
            stack.extend(item.field(i).type for i in range(item.num_fields))


def _needs_text(kind: pa.DataType) -> bool:
    """Return whether values of `kind` reach Python as objects JSON cannot carry."""
    return any(
        check(kind)
        for check in (
            pa.types.is_interval,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_fixed_size_binary,
            pa.types.is_binary_view,
        )
    )


def _plain(value: object) -> object:
    """Return `value` with every interval (ISO 8601 duration) and BLOB (hex) in it as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, pa.MonthDayNano):  # a tuple: tested first
        months, days, nanoseconds = value
        seconds = Decimal(nanoseconds).scaleb(-9).normalize()
        text = (f"{months}M" if months else "") + (f"{days}D" if days else "")
        text += f"T{seconds:f}S" if nanoseconds else ""
        return "P" + (text or "T0S")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _no_json_form(column: str, what: str) -> QueryFailed:
    return QueryFailed(
        f"column {column!r} holds {what}, which the JSON answer cannot carry; CAST that column "
        "to VARCHAR in the query",
        rule="result_type",
    )
