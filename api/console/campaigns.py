"""Campaign pages: the book, one campaign (declaration, gate, plans, deliveries, history), its
readout, and the marketer's actions (plan a window, deliver, promote, close).

Roles are the API's (`api/routes/campaigns.py`): marketers and admins act; marketers, admins and
head-office analysts read; a branch analyst reads only its branches' rows of a readout. Each
page and action calls the same `fusion.pipeline.campaigns` step as the API route, on a `Bank`
bound to this request thread's cursor, and writes and readouts hold `Service.campaign_lock`.
A refused gate is shown on the campaign's page with its reason (409); a passed action redirects
to the page (303), so reloading it never sends the form again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import polars as pl
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.campaign_schemas import CampaignPlanCreate
from api.console.access import (
    CAMPAIGN_READERS,
    MARKETERS,
    READOUT_READERS,
    ConsoleRefusal,
    Form,
    Visitor,
    allow,
    check_csrf,
    is_head_office,
)
from api.console.pages import attempt, counts_policy, disclosed, embedded_report, render
from api.deps import ServiceDep, audit
from api.service import Service
from contracts.errors import (
    DeclarationError,
    GateRefused,
)
from fusion.campaigns.book import CampaignRecord, get_campaign, list_campaigns, stage_history
from fusion.campaigns.declaration import LIVE_STAGES, NAME_PATTERN
from fusion.campaigns.readout import BREAKDOWNS
from fusion.campaigns.stages import NEXT_STAGE, GateCheck, gate_checks
from fusion.pipeline.bank import Bank
from fusion.pipeline.campaigns import (
    campaign_readout,
    close,
    deliver_campaign,
    plan_window,
    promote_campaign,
)
from fusion.reports.campaign import PLOT_FILES
from fusion.reports.disclosure import DEFAULT_K, DisclosurePolicy, Layout
from fusion.store import Store

__all__ = ["gate_board", "head_office_reader", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_NAME = re.compile(NAME_PATTERN)
_DONE = {
    "promoted": "Promoted: the gate held.",
    "closed": "Closed: the campaign plans and delivers nothing more.",
    "delivered": "Delivered: the next version's files are written.",
    "planned": "Planned: the window's plan is stored.",
}
_T = TypeVar("_T")
_Marketer = Annotated[Visitor, Depends(allow(*MARKETERS))]
_Reader = Annotated[Visitor, Depends(allow(*CAMPAIGN_READERS, head_office=True))]


def _known(store: Store, campaign_id: str) -> CampaignRecord:
    """Return the stored campaign; a 404 page when the name is not one."""
    found = (
        _NAME.fullmatch(campaign_id)
        and store.execute(
            "SELECT count(*) FROM campaigns WHERE campaign_id = ?", [campaign_id]
        ).fetchall()[0][0]
    )
    if not found:
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such campaign",
            "there is no campaign of that name; the campaigns page lists them",
        )
    try:
        return get_campaign(store, campaign_id)
    except DeclarationError as error:
        raise ConsoleRefusal(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Campaign unreadable",
            f"this campaign is stored with a declaration this service cannot read "
            f"({error.field}); ask the bank's operators to check the store's campaigns",
        ) from None


def gate_board(store: Store) -> list[dict[str, Any]]:
    """Return each live campaign with its next stage and its gate: ready, or what it waits for."""
    board = []
    for record in list_campaigns(store):
        if record.stage not in LIVE_STAGES:
            continue
        checks = gate_checks(store, record)
        waiting = next((c for c in checks if not c.passed), None)
        board.append({"record": record, "next": NEXT_STAGE[record.stage], "waiting": waiting})
    return board


@router.get("/campaigns", name="console_campaigns")
def _book(request: Request, service: ServiceDep, visitor: _Reader) -> HTMLResponse:
    """The campaign book: every campaign, its stage and its gate."""
    with service.bank() as bank:
        board = gate_board(bank.store)
        closed = [r for r in list_campaigns(bank.store) if r.stage not in LIVE_STAGES]
    return render(request, "campaigns.html", title="Campaigns", board=board, closed=closed)


@router.get("/campaigns/{campaign_id}", name="console_campaign")
def _campaign(
    campaign_id: str,
    request: Request,
    service: ServiceDep,
    visitor: _Reader,
    done: str | None = None,
) -> HTMLResponse:
    """One campaign: declaration, stage and gate, plans, deliveries, history, actions."""
    with service.bank() as bank:
        context = _campaign_context(bank, _known(bank.store, campaign_id), visitor)
    return render(request, "campaign.html", notice=_DONE.get(done or ""), **context)


def _campaign_context(
    bank: Bank, record: CampaignRecord, visitor: Visitor, refused: GateRefused | None = None
) -> dict[str, Any]:
    """Return what the campaign page shows (its gate's checks as they stand now); the plan and
    delivery counts exact to the campaign's operators, k-anonymised to anyone else."""
    store = bank.store
    checks: list[GateCheck] = gate_checks(store, record) if record.stage in LIVE_STAGES else []
    policy = counts_policy(visitor)
    plans, rules = _plans(store, record.campaign_id, policy)
    return {
        "title": f"Campaign {record.campaign_id}",
        "record": record,
        "declaration": json.dumps(record.campaign.model_dump(mode="json"), indent=2),
        "next_stage": NEXT_STAGE.get(record.stage),
        "checks": checks,
        "refused": refused,
        "plans": plans,
        "plan_counts": ["audience", *rules, "assigned", "treatment", "control"],
        "deliveries": _deliveries(store, record.campaign_id, policy),
        "history": stage_history(store, record.campaign_id),
        "k": DEFAULT_K,
        "exact": policy is DisclosurePolicy.OPERATIONAL,
    }


def _plans(
    store: Store, campaign_id: str, policy: DisclosurePolicy
) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the campaign's stored plans under `policy` and the removal rules they name."""
    rows = store.execute(
        "SELECT stage, window_start, window_end, audience, assigned, treatment, control, "
        "removed FROM plans WHERE campaign_id = ? ORDER BY created_at, plan_id",
        [campaign_id],
    ).fetchall()
    removed = [json.loads(row[7]) for row in rows]
    rules = list(dict.fromkeys(rule for plan in removed for rule in plan))
    frame = pl.DataFrame(
        [
            {"plan": f"{stage} {start.isoformat()} to {end.isoformat()}", "audience": audience,
             **{rule: int(gone.get(rule, 0)) for rule in rules}, "assigned": assigned,
             "treatment": treated, "control": control}
            for (stage, start, end, audience, assigned, treated, control, _), gone
            in zip(rows, removed, strict=True)
        ]
    )  # fmt: skip
    # What a reader knows: the audience is the entrants plus every rule's removals, and the
    # entrants are the two arms.
    layout = Layout(
        counts=("audience", *rules, "assigned", "treatment", "control"),
        sums=(("audience", (*rules, "assigned")), ("assigned", ("treatment", "control"))),
    )
    return disclosed(frame, layout, policy=policy, k=DEFAULT_K), rules


def _deliveries(store: Store, campaign_id: str, policy: DisclosurePolicy) -> list[dict[str, Any]]:
    """Return the campaign's delivered rows per version and branch under `policy`."""
    frame = store.execute(
        "SELECT version, stage, channel, branch_id, rows FROM deliveries WHERE campaign_id = ? "
        "ORDER BY version, branch_id",
        [campaign_id],
    ).pl()
    return disclosed(frame, Layout(counts=("rows",)), policy=policy, k=DEFAULT_K)


@router.post("/campaigns/{campaign_id}/promote", name="console_promote")
def _promote(
    campaign_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> Response:
    """Promote to the stage the page showed next; a refused gate is shown with its reason."""
    check_csrf(visitor, form)
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        try:
            promoted = attempt(
                lambda: promote_campaign(
                    bank, campaign_id, actor=visitor.principal.token_id, now=service.clock(),
                    to_stage=form.get("to_stage") or None,
                ),
                subject="campaign",
            )  # fmt: skip
        except GateRefused as refused:
            context = _campaign_context(bank, _known(bank.store, campaign_id), visitor, refused)
            audit(request, detail=f"{campaign_id} refused at gate {refused.gate}")
            return render(request, "campaign.html", status=409, notice=None, **context)
    audit(request, detail=f"{campaign_id} {promoted.from_stage}->{promoted.to_stage}")
    return _back(campaign_id, "promoted")


def _act(campaign_id: str, service: Service, step: Callable[[Bank], _T]) -> _T:
    """Return `step(bank)` on the known campaign, under the campaign lock (as the API's)."""
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        return attempt(lambda: step(bank), subject="campaign")


@router.post("/campaigns/{campaign_id}/close", name="console_close")
def _close(
    campaign_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> RedirectResponse:
    """Close the campaign from any stage."""
    check_csrf(visitor, form)
    audit(request, detail=campaign_id)
    actor = visitor.principal.token_id
    closed = _act(
        campaign_id,
        service,
        lambda bank: close(bank, campaign_id, actor=actor, now=service.clock()),
    )
    audit(request, detail=f"{campaign_id} {closed.from_stage}->closed")
    return _back(campaign_id, "closed")


@router.post("/campaigns/{campaign_id}/deliveries", name="console_deliver")
def _deliver(
    campaign_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> RedirectResponse:
    """Write the next delivery version (treated customers not delivered before)."""
    check_csrf(visitor, form)
    audit(request, detail=campaign_id)
    delivery = _act(
        campaign_id, service, lambda bank: deliver_campaign(bank, campaign_id, now=service.clock())
    )
    audit(request, rows=delivery.rows if delivery.new else 0,
          detail=f"{campaign_id} v{delivery.version}")  # fmt: skip
    return _back(campaign_id, "delivered")


@router.post("/campaigns/{campaign_id}/plan", name="console_plan")
def _plan(
    campaign_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> RedirectResponse:
    """Plan the campaign's current stage for the window starting on the form's date."""
    check_csrf(visitor, form)
    audit(request, detail=campaign_id)
    try:  # the API's own body rules: a real date, not before 2000 nor past 2999
        body = CampaignPlanCreate.model_validate_json(
            json.dumps({"campaigns": [campaign_id], "window_start": form.get("window_start")})
        )
    except ValidationError:
        raise ConsoleRefusal(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Not a window",
            "the window's first day is a date written YYYY-MM-DD (e.g. 2028-01-03), and the "
            "campaign's name is the one in the address; go back and correct it",
        ) from None
    actor = visitor.principal.token_id
    result = _act(
        campaign_id, service,
        lambda bank: plan_window(bank, [campaign_id], window_start=body.window_start,
                                 actor=actor, now=service.clock()),
    )  # fmt: skip
    audit(request, rows=sum(p.assigned for p in result.plans if not p.stored_before))
    return _back(campaign_id, "planned")


def _back(campaign_id: str, done: str) -> RedirectResponse:
    """Return the redirect to the campaign's page after an action (post, redirect, get)."""
    return RedirectResponse(
        f"/console/campaigns/{campaign_id}?done={done}", status_code=status.HTTP_303_SEE_OTHER
    )


@router.get("/campaigns/{campaign_id}/readout", name="console_readout")
def _readout(
    campaign_id: str,
    request: Request,
    service: ServiceDep,
    visitor: Annotated[Visitor, Depends(allow(*READOUT_READERS))],
) -> HTMLResponse:
    """The readout: the report page itself; a branch analyst, its branches' rows only."""
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        result = attempt(lambda: campaign_readout(bank, campaign_id), subject="campaign")
    title = f"Readout of {campaign_id}"
    mine = visitor.branches
    if mine is not None:
        column = BREAKDOWNS["by_branch"]
        rows = [r for r in result.readout.breakdowns["by_branch"].to_dicts() if r[column] in mine]
        return render(
            request, "readout_branch.html", title=title, rows=rows, column=column,
            readout=result.readout, branches=sorted(mine),
        )  # fmt: skip
    body = embedded_report(
        result.files["html"], lambda name: f"/console/campaigns/{campaign_id}/plots/{name}"
    )
    return render(request, "readout.html", title=title, body=body, campaign_id=campaign_id)


@router.get("/campaigns/{campaign_id}/plots/{name}", name="console_readout_plot")
def _plot(
    campaign_id: str,
    name: str,
    service: ServiceDep,
    visitor: Annotated[Visitor, Depends(allow(*READOUT_READERS, head_office=True))],
) -> FileResponse:
    """A plot of the campaign's last readout (head office: the plots count every branch)."""
    path = service.folder.reports / "campaigns" / campaign_id / name
    if not (_NAME.fullmatch(campaign_id) and name in PLOT_FILES.values() and path.is_file()):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such plot",
            "this campaign has no such plot; open its readout first, which draws them",
        )
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})


def head_office_reader(visitor: Visitor) -> bool:
    """Return whether the visitor may read the campaign book (the API's rule)."""
    return visitor.role in CAMPAIGN_READERS and is_head_office(visitor.principal)
