"""How routes write: a write DuckDB refuses as a conflict runs again, and the answers every
writing route shares (a stored declaration this service cannot read, too many rows at once).

DuckDB 1.4 refuses a second change of one keyed row (a campaign's or a strategy's stage) while a
transaction older than the first change is open: a request, the audit writer or an ingest
reading, or a cursor whose last result was read with fetchone(). The failed commit wrote
nothing and most readers are short, so `retrying` runs the step again from its first read, for
up to about 1.5 s; past the last try the conflict goes to `api.app`, which answers 503 with
Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import duckdb
from fastapi import HTTPException, status

from contracts.errors import DeclarationError

__all__ = ["CONFLICT_BACKOFF", "is_write_conflict", "refuse_too_many", "retrying", "unreadable"]

CONFLICT_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Seconds between the tries of a write DuckDB refused as a conflict."""
_T = TypeVar("_T")


def is_write_conflict(error: duckdb.TransactionException) -> bool:
    """Return whether DuckDB refused a commit as a write conflict (nothing was written)."""
    return "conflict" in str(error).lower()


def retrying(write: Callable[[], _T]) -> _T:
    """Return `write()`, run again while DuckDB refuses its commit as a write conflict."""
    for delay in CONFLICT_BACKOFF:
        try:
            return write()
        except duckdb.TransactionException as error:
            if not is_write_conflict(error):
                raise
        time.sleep(delay)
    return write()


def unreadable(noun: str, name: str, error: DeclarationError, *, plural: str) -> HTTPException:
    """Return the 503 of a stored declaration (a campaign's, a strategy's) this version cannot
    read: not the caller's fault, so not a 422, which would blame the request."""
    return HTTPException(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"{noun} {name!r} is stored with a declaration this service cannot read "
        f"({error.field}); ask the bank's operators to check the store's {plural}",
    )


def refuse_too_many(what: str, count: int, limit: int) -> None:
    """Raise the 422 of a request carrying more than `limit` rows (`what`: "events")."""
    if count > limit:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"at most {limit} {what} per request; got {count}. Send them in parts.",
        )
