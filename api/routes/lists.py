"""GET /v1/lists/{campaign}?branch=: a branch's target list as CSV or Parquet, streamed.

Campaign tools, marketers and admins read every branch's list (a marketer token has no branch
scope: it is head office's); an analyst reads its own branches' only.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse

from api.deps import ServiceDep, audit, require
from fusion.lists import LISTS
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["lists"])
_READERS = require("campaign_tool", "marketer", "admin", "analyst")
# Checked with fullmatch: `$` would also match before a trailing newline.
_BRANCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@router.get(
    "/lists/{campaign}",
    response_class=FileResponse,
    responses={200: {"content": {m: {} for m in _MEDIA.values()}}},
    name="target_list",
)
def _target_list(
    campaign: str,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
    branch: Annotated[str, Query(min_length=1, max_length=64)],
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
) -> FileResponse:
    """Return one branch's ranked target list of a campaign (an analyst: its branches only)."""
    if campaign not in LISTS:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"no list {campaign!r}; lists are {', '.join(LISTS)}",
        )
    if not _BRANCH.fullmatch(branch):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="branch is a branch id: letters, digits, '-' and '_'",
        )
    if (
        principal.role == "analyst"
        and principal.branches is not None
        and (branch not in principal.branches)
    ):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="this token reads the lists of branches "
            + ", ".join(sorted(principal.branches)),
        )
    path = service.folder.lists / campaign / f"{branch}.{format}"
    if not path.is_file():
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"no {campaign} list for branch {branch}; run `fusion score` (a branch with "
            "no listed customer has no file)",
        )
    rows = pq.read_metadata(path.with_suffix(".parquet")).num_rows
    audit(request, rows=rows, detail=f"{campaign}/{branch}.{format}")
    return FileResponse(path, media_type=_MEDIA[format], filename=f"{campaign}-{branch}.{format}")
