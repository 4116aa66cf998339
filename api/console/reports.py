"""Report pages: the match report and the model report, as the pipeline last wrote them; the
data dictionary of the analyst views (`fusion.analyst_views.data_dictionary`, the text every
snapshot carries as DuckDB comments).

`fusion match` writes `reports/match-<snapshot>-<epoch>/` (`fusion.reports.match`), `fusion
train` writes `reports/models-<snapshot>/` (`fusion.reports.models`); the page embeds the newest
report's own HTML, whose tables are k-anonymised when written, and serves its plots. Head
office reads them (marketers, admins, head-office analysts): their tables count every branch.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from api.console.access import CAMPAIGN_READERS, ConsoleRefusal, Visitor, allow
from api.console.pages import embedded_report, render
from api.deps import ServiceDep
from fusion.analyst_views import data_dictionary
from fusion.reports import match, models

__all__ = ["REPORTS", "newest_report", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

# kind -> (title, folder prefix, page file)
REPORTS = {
    "match": ("Match report", "match-", match.REPORT_FILE),
    "models": ("Model report", "models-", models.REPORT_FILE),
}
_PLOT = re.compile(r"[A-Za-z0-9_-]{1,100}\.png")
_HeadOffice = Annotated[Visitor, Depends(allow(*CAMPAIGN_READERS, head_office=True))]
# Column meanings hold no data: every analyst, marketer and admin may read them.
_Reader = Annotated[Visitor, Depends(allow(*CAMPAIGN_READERS))]


def newest_report(reports_dir: Path, kind: str) -> Path | None:
    """Return the newest page of report `kind` in the run's reports folder, or None."""
    _, prefix, page = REPORTS[kind]
    pages = [p for p in reports_dir.glob(f"{prefix}*/{page}") if p.is_file()]
    return max(pages, key=lambda p: (p.stat().st_mtime, p.parent.name), default=None)


def _written(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")


@router.get("/dictionary", name="console_dictionary")
def _dictionary(request: Request, visitor: _Reader) -> HTMLResponse:
    """What every column of the analyst views means: the dictionary the snapshots carry."""
    return render(request, "dictionary.html", title="Data dictionary", views=data_dictionary())


@router.get("/reports", name="console_reports")
def _reports(request: Request, service: ServiceDep, visitor: _HeadOffice) -> HTMLResponse:
    """The reports there are, each with when it was written."""
    found = []
    for kind, (title, _, _) in REPORTS.items():
        page = newest_report(service.folder.reports, kind)
        found.append({"kind": kind, "title": title, "page": page,
                      "written": _written(page) if page else None})  # fmt: skip
    return render(request, "reports.html", title="Reports", reports=found)


def _page_of(reports_dir: Path, kind: str) -> Path:
    page = newest_report(reports_dir, kind) if kind in REPORTS else None
    if page is None:
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such report",
            "this report has not been written yet (`fusion match` writes the match report, "
            "`fusion train` the model report)",
        )
    return page


@router.get("/reports/{kind}", name="console_report")
def _report(kind: str, request: Request, service: ServiceDep, visitor: _HeadOffice) -> HTMLResponse:
    """One report: its own page inside the console."""
    page = _page_of(service.folder.reports, kind)
    body = embedded_report(page, lambda name: f"/console/reports/{kind}/plots/{name}")
    return render(
        request, "report.html", title=REPORTS[kind][0], body=body, written=_written(page),
        folder=page.parent.name,
    )  # fmt: skip


@router.get("/reports/{kind}/plots/{name}", name="console_report_plot")
def _plot(kind: str, name: str, service: ServiceDep, visitor: _HeadOffice) -> FileResponse:
    """One plot of the newest report of `kind`."""
    page = _page_of(service.folder.reports, kind)
    path = page.parent / name
    if not (_PLOT.fullmatch(name) and path.is_file()):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND, "No such plot", "this report has no such plot"
        )
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})
