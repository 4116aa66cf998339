"""POST /v1/query: analysts' SQL over granted views of the published head-office snapshot."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import QueryCreate, QueryPublic
from fusion.query import QueryScope, run_query
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["query"])


@router.post("/query")
async def query(
    body: QueryCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("analyst", "admin"))],
) -> QueryPublic:
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
    result = await run_in_threadpool(
        run_query,
        snapshot,
        body.sql,
        key=service.keyring.head_office_key(),
        scope=scope,
        limits=settings.query_limits,
    )
    audit(request, rows=result.row_count)
    return QueryPublic(
        columns=list(result.columns),
        rows=[list(row) for row in result.frame.rows()],
        row_count=result.row_count,
        truncated=result.truncated,
        elapsed_seconds=result.elapsed_seconds,
    )
