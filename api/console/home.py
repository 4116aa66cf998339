"""The home page (what needs attention, by role), the readout finder and the stylesheets.

Home shows, to each role, what waits for it: head office the live campaigns with their next
gate (ready to promote, or what the gate waits for) and the latest monitoring verdict with its
alerts and warnings (the lines `fusion monitor` printed); admins the ledger's quarantined and
refused batches; list readers the lists of their branches. Each panel is one function of the
visitor returning its context, so a new area adds its panel here. Head office also sees the
journey strategies at a gate: those waiting (with the check they wait for) and those ready.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from api.console.access import (
    LIST_READERS,
    MONITORING_READERS,
    ConsoleRefusal,
    Visitor,
    is_head_office,
    signed_in,
)
from api.console.campaigns import gate_board, head_office_reader
from api.console.journeys import journey_board
from api.console.lists import visible_branches
from api.console.monitoring import attention
from api.console.pages import render
from api.deps import ServiceDep
from api.service import Service
from fusion.campaigns.declaration import NAME_PATTERN
from fusion.lists import LISTS
from fusion.pipeline.bank import ledger_counts
from fusion.pipeline.monitoring import read_monitoring
from fusion.reports.html import CSS

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_CONSOLE_CSS = (Path(__file__).parent / "static" / "console.css").read_text(encoding="utf-8")
_NAME = re.compile(NAME_PATTERN)
_SignedIn = Annotated[Visitor, Depends(signed_in)]


def _panels(service: Service, visitor: Visitor) -> dict[str, Any]:
    """Return each home panel the visitor's role has, by name."""
    panels: dict[str, Any] = {}
    if head_office_reader(visitor):
        with service.bank() as bank:
            board = gate_board(bank.store)
        panels["ready"] = [b for b in board if b["waiting"] is None]
        panels["waiting"] = [b for b in board if b["waiting"] is not None]
        with service.bank() as bank:
            panels["journeys"], panels["journeys_problem"] = journey_board(bank.store)
    if visitor.role in MONITORING_READERS and is_head_office(visitor.principal):
        panels["monitoring"] = attention(read_monitoring(service.folder))
    if visitor.role == "admin":
        with service.bank() as bank:
            counts = ledger_counts(bank.store)
        panels["ledger"] = {s: counts[s] for s in ("quarantined", "refused") if s in counts}
    if visitor.role in LIST_READERS:
        panels["lists"] = {
            name: visible_branches(service.folder.lists, name, visitor) for name in LISTS
        }
    return panels


@router.get("", name="console_home")
def _home(request: Request, service: ServiceDep, visitor: _SignedIn) -> HTMLResponse:
    """What needs attention now, for the visitor's role."""
    return render(request, "home.html", title="Home", panels=_panels(service, visitor))


@router.get("/readout", name="console_find_readout")
def _find_readout(visitor: _SignedIn, campaign: str = "") -> RedirectResponse:
    """Go to a campaign's readout by its name (for a branch analyst, who has no book)."""
    name = campaign.strip()
    if not _NAME.fullmatch(name):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such campaign",
            "a campaign's name is 2 to 63 lower-case letters, digits and '-'",
        )
    return RedirectResponse(
        f"/console/campaigns/{name}/readout", status_code=status.HTTP_303_SEE_OTHER
    )


@router.get("/static/report.css", name="console_report_css")
def _report_css() -> PlainTextResponse:
    """The reports' own stylesheet (`fusion.reports.html.CSS`), so pages read as reports do."""
    return PlainTextResponse(CSS, media_type="text/css")


@router.get("/static/console.css", name="console_css")
def _console_css() -> PlainTextResponse:
    """The console's navigation, forms and print rules."""
    return PlainTextResponse(_CONSOLE_CSS, media_type="text/css")
