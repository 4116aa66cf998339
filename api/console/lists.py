"""Target list pages: each list's customers per branch, and the branch files to download.

The API's rule (`GET /v1/lists/{list}`): campaign tools, marketers (head office: a marketer token
has no branch scope) and admins read every branch, an analyst only its own; a branch outside the
visitor's scope is refused (403) on its page and its download alike, whatever the address says.
The files are the ones `fusion score` wrote (`fusion.lists`), served as they are: customer id,
branch, rank, score, decile and reasons, never a phone, ID number or key. A list's size per
branch is the row count of the file its reader downloads, so it is shown exactly (the
OPERATIONAL policy of `fusion.reports.disclosure`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import polars as pl
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from api.console.access import LIST_READERS, ConsoleRefusal, Visitor, allow
from api.console.pages import disclosed, render
from api.deps import ServiceDep, audit
from fusion.lists import LISTS
from fusion.reports.disclosure import DEFAULT_K, DisclosurePolicy, Layout

__all__ = ["router", "visible_branches"]

router = APIRouter(prefix="/console", include_in_schema=False)

_BRANCH = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fusion.lists' rule for a branch file's name
_MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
_ListReader = Annotated[Visitor, Depends(allow(*LIST_READERS))]
_SIZES = Layout(counts=("customers",))


def visible_branches(lists_dir: Path, name: str, visitor: Visitor) -> list[str]:
    """Return the branches of list `name` with a file that the visitor may read, sorted."""
    found = sorted(
        p.stem for p in (lists_dir / name).glob("*.parquet") if _BRANCH.fullmatch(p.stem)
    )
    mine = visitor.branches
    return [b for b in found if mine is None or b in mine]


def _rows(path: Path) -> int:
    return int(pq.read_metadata(path).num_rows)


@router.get("/lists", name="console_lists")
def _lists(request: Request, service: ServiceDep, visitor: _ListReader) -> HTMLResponse:
    """Every list and, per branch the visitor reads, its customers."""
    tables = {}
    for name in LISTS:
        branches = visible_branches(service.folder.lists, name, visitor)
        frame = pl.DataFrame(
            {
                "branch_id": branches,
                "customers": [
                    _rows(service.folder.lists / name / f"{b}.parquet") for b in branches
                ],
            },
            schema={"branch_id": pl.String, "customers": pl.Int64},
        )
        tables[name] = disclosed(frame, _SIZES, policy=DisclosurePolicy.OPERATIONAL, k=DEFAULT_K)
    return render(request, "lists.html", title="Target lists", tables=tables)


def _branch_file(service_lists: Path, name: str, branch: str, visitor: Visitor) -> Path:
    """Return the list's Parquet file for the branch; 404 or 403 pages otherwise."""
    if name not in LISTS or not _BRANCH.fullmatch(branch):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such list",
            f"lists are {', '.join(LISTS)}, per branch id; the lists page links each one",
        )
    mine = visitor.branches
    if mine is not None and branch not in mine:
        raise ConsoleRefusal(
            status.HTTP_403_FORBIDDEN,
            "Not your branch",
            "you read the lists of branches " + ", ".join(sorted(mine)),
        )
    path = service_lists / name / f"{branch}.parquet"
    if not path.is_file():
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No list for this branch",
            f"there is no {name} list for branch {branch} (a branch with no listed customer "
            "has no file; `fusion score` writes the lists)",
        )
    return path


@router.get("/lists/{name}/{branch}", name="console_list")
def _list(
    name: str, branch: str, request: Request, service: ServiceDep, visitor: _ListReader
) -> HTMLResponse:
    """One branch's list: its size and its downloads."""
    path = _branch_file(service.folder.lists, name, branch, visitor)
    frame = pl.DataFrame({"branch_id": [branch], "customers": [_rows(path)]})
    rows = disclosed(frame, _SIZES, policy=DisclosurePolicy.OPERATIONAL, k=DEFAULT_K)
    return render(
        request, "list.html", title=f"List {name}, branch {branch}", name=name, branch=branch,
        row=rows[0],
    )  # fmt: skip


@router.get("/lists/{name}/{branch}/{file_format}", name="console_list_download")
def _download(
    name: str,
    branch: str,
    file_format: str,
    request: Request,
    service: ServiceDep,
    visitor: _ListReader,
) -> FileResponse:
    """Download one branch's list as CSV or Parquet (audited with its rows, as the API is)."""
    path = _branch_file(service.folder.lists, name, branch, visitor)
    if file_format not in _MEDIA:
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND, "No such format", "a list downloads as csv or parquet"
        )
    audit(request, rows=_rows(path), detail=f"{name}/{branch}.{file_format}")
    return FileResponse(
        path.with_suffix(f".{file_format}"),
        media_type=_MEDIA[file_format],
        filename=f"{name}-{branch}.{file_format}",
        headers={"Cache-Control": "no-store"},
    )
