"""How console pages are drawn: Jinja templates, the navigation, tables, embedded reports.

Templates autoescape every value. Pages carry no script of their own, and their headers say so
(a Content-Security-Policy without any script source), forbid framing, and keep pages out of
caches. Every table of customer counts passes `fusion.reports.disclosure.disclose` here
(`disclosed`) under a named policy: K_ANONYMOUS for analytic tables, OPERATIONAL for a
campaign's or a list's own counts shown to the people who run it (`counts_policy`). The
readout, match and model pages embed the very HTML their `fusion.reports` function wrote, so a
page shows the report's figures and no second computation of them. A platform error of an
action becomes the page that keeps its advice (`attempt`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl
from fastapi import Request, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from api.console.access import (
    LIST_READERS,
    MARKETERS,
    MONITORING_READERS,
    ConsoleRefusal,
    Visitor,
    is_head_office,
)
from contracts.errors import CampaignError, FusionError, GateRefused, ModelError, StoreError
from fusion.reports import html as report_html
from fusion.reports.disclosure import DisclosurePolicy, Layout, disclose

__all__ = [
    "SECURITY_HEADERS",
    "attempt",
    "counts_policy",
    "disclosed",
    "embedded_report",
    "navigation",
    "render",
]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_TEMPLATES = Path(__file__).parent / "templates"
_BODY = re.compile(r"<body>(.*)</body>", re.DOTALL)
_TITLE = re.compile(r"\s*<h1>.*?</h1>", re.DOTALL)
_IMAGE = re.compile(r'src="([A-Za-z0-9_.-]+\.png)"')
_T = TypeVar("_T")

_environment = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# The reports' own number formats, so a figure reads the same on a page and in a report.
_environment.filters.update(
    count=report_html.count,
    percent=report_html.percent,
    fixed=report_html.fixed,
    money=report_html.money,
    points=report_html.points,
)


def navigation(visitor: Visitor | None) -> list[tuple[str, str]]:
    """Return the (label, path) of every console area the visitor's role may open."""
    if visitor is None:
        return []
    head_office = is_head_office(visitor.principal)
    areas = [("Home", "/console")]
    if visitor.role in ("marketer", "admin", "analyst") and head_office:
        areas += [
            ("Campaigns", "/console/campaigns"),
            ("Journeys", "/console/journeys"),
            ("Reports", "/console/reports"),
        ]
    if visitor.role in MONITORING_READERS and head_office:
        areas.append(("Monitoring", "/console/monitoring"))
    if visitor.role in LIST_READERS:
        areas.append(("Lists", "/console/lists"))
    if visitor.role in ("marketer", "admin", "analyst"):
        areas.append(("Dictionary", "/console/dictionary"))
    if visitor.role == "admin":
        areas += [("Batches", "/console/batches"), ("Tokens", "/console/tokens")]
    return areas


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Return the page of `template` with the visitor's navigation and the console's headers."""
    visitor: Visitor | None = getattr(request.state, "console_visitor", None)
    context.setdefault("notice", None)
    page = _environment.get_template(template).render(
        visitor=visitor, nav=navigation(visitor), path=request.url.path, **context
    )
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def counts_policy(visitor: Visitor) -> DisclosurePolicy:
    """Return the policy of a campaign's operational counts (plans, deliveries) for `visitor`.

    Its operators (marketers and admins, who plan and deliver it and get these counts exactly
    from the API) read them as they are; anyone else reads them k-anonymised.
    """
    if visitor.role in MARKETERS:
        return DisclosurePolicy.OPERATIONAL
    return DisclosurePolicy.K_ANONYMOUS


def disclosed(
    frame: pl.DataFrame,
    layout: Layout,
    *,
    policy: DisclosurePolicy,
    k: int,
    margin: pl.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Return the rows of a table of customer counts as published under `policy`.

    Withheld cells are None and named in each row's `suppressed_cells`; the page prints them
    "suppressed".
    """
    if frame.is_empty():
        return []
    return disclose(frame, layout, policy=policy, k=k, margin=margin).to_dicts()


def embedded_report(path: Path, image: Callable[[str], str]) -> Markup:
    """Return the body of a report page `fusion.reports` wrote, its title dropped, each
    image's file name replaced by `image(name)` (a console URL)."""
    text = path.read_text(encoding="utf-8")
    found = _BODY.search(text)
    body = _TITLE.sub("", found.group(1) if found else "", count=1)
    # The page is the platform's own output, every value escaped when it was written.
    return Markup(_IMAGE.sub(lambda m: f'src="{image(m.group(1))}"', body))  # noqa: S704


def attempt(step: Callable[[], _T], *, subject: str) -> _T:
    """Return `step()`, its platform errors turned into pages that keep their own advice.

    A GateRefused goes on (the promote page shows it beside the gate's checks); a write DuckDB
    refused as a conflict over the same `subject` ("campaign", "strategy") is a 503 to send the
    form again.
    """
    try:
        return step()
    except GateRefused:
        raise
    except CampaignError as error:
        raise ConsoleRefusal(status.HTTP_409_CONFLICT, "Not possible now", str(error)) from None
    except (ModelError, StoreError) as error:
        raise ConsoleRefusal(
            status.HTTP_503_SERVICE_UNAVAILABLE, "Not available", str(error)
        ) from None
    except FusionError as error:
        raise ConsoleRefusal(status.HTTP_400_BAD_REQUEST, "Refused", str(error)) from None
    except duckdb.TransactionException as error:
        if "conflict" not in str(error).lower():
            raise
        raise ConsoleRefusal(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Busy",
            f"another writer changed the same {subject} while this ran; nothing was written: "
            "send the form again in a few seconds",
        ) from None
