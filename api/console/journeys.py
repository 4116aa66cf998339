"""Journey pages: the strategies with their stage and gate, one strategy (its flow of nodes,
its gate and a promote button, today's dry-run counts per node, its history), its readout, and
the cohort funnel of new customers.

Roles are the API's (`api/routes/journeys.py`): marketers and admins promote and close;
marketers, admins and head-office analysts read. A branch analyst reads none of these pages:
every figure counts customers of every branch. Each page and action calls the same
`fusion.journeys` function as the API route on the store bound to this request thread's cursor;
promotions and closings hold `Service.campaign_lock`, as the API's do, and so does the readout
page, which writes its report files. A refused gate is shown on the strategy's page with its
reason (409); a passed action redirects back to the page (303).

Tables of customer counts: the dry run's per-node counts are the strategy's own operational
counts, published through `fusion.reports.disclosure` under the reader's policy (exact to its
marketers and admins, k-anonymised to a head-office analyst, as the API); the readout page is the
report `fusion.pipeline.journeys.journey_readout` wrote (`write_readout`) from the k-anonymised
readout, with its opt-out comparison (withheld while a count is under k); the cohort
funnel is `fusion.journeys.lifecycle.cohort_funnel`, k-anonymised by that function.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.console.access import (
    CAMPAIGN_READERS,
    MARKETERS,
    ConsoleRefusal,
    Form,
    Visitor,
    allow,
    check_csrf,
)
from api.console.pages import attempt, counts_policy, disclosed, embedded_report, render
from api.deps import ServiceDep, audit
from api.journey_schemas import DRY_RUN_COUNTS, EARLIEST_DAY, LATEST_DAY
from api.service import Service
from contracts.errors import (
    CampaignError,
    DeclarationError,
    FusionError,
    GateRefused,
)
from fusion.campaigns.declaration import LIVE_STAGES, NAME_PATTERN
from fusion.campaigns.stages import NEXT_STAGE
from fusion.journeys.book import (
    StrategyRecord,
    close_strategy,
    get_strategy,
    list_strategies,
    promote_strategy,
    strategy_gate,
    strategy_history,
)
from fusion.journeys.lifecycle import RETENTION_DAYS, cohort_funnel
from fusion.journeys.strategy import (
    ActionNode,
    AnswerCondition,
    Condition,
    ConditionNode,
    EntryNode,
    FeatureCondition,
    IdleCondition,
    MilestoneCondition,
    ScoreCondition,
    StageCondition,
    Strategy,
    TagCondition,
    WaitNode,
)
from fusion.pipeline.journeys import journey_dry_run, journey_readout
from fusion.reports.disclosure import DEFAULT_K, DisclosurePolicy, Layout
from fusion.reports.journeys import FUNNEL_FILE
from fusion.store import Store

__all__ = ["flow_steps", "journey_board", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_NAME = re.compile(NAME_PATTERN)
_DONE = {
    "promoted": "Promoted: the gate held.",
    "closed": "Closed: the daily run moves no one in this strategy any more.",
}
_Marketer = Annotated[Visitor, Depends(allow(*MARKETERS))]
_Reader = Annotated[Visitor, Depends(allow(*CAMPAIGN_READERS, head_office=True))]


def _known(store: Store, strategy_id: str) -> StrategyRecord:
    """Return the stored strategy; a 404 page when the name is not one, 503 if unreadable."""
    if not _NAME.fullmatch(strategy_id):
        raise _no_such()
    try:
        return get_strategy(store, strategy_id)
    except DeclarationError as error:  # a CampaignError too: caught first
        raise ConsoleRefusal(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Strategy unreadable",
            f"this strategy is stored with a declaration this service cannot read "
            f"({error.field}); ask the bank's operators to check the store's strategies",
        ) from None
    except CampaignError:
        raise _no_such() from None


def _no_such() -> ConsoleRefusal:
    return ConsoleRefusal(
        status.HTTP_404_NOT_FOUND,
        "No such strategy",
        "there is no journey strategy of that name; the journeys page lists them",
    )


def journey_board(store: Store) -> tuple[list[dict[str, Any]], str | None]:
    """Return each strategy not closed with its next stage and gate (ready, or what it waits
    for), and why the book cannot be read when a stored strategy is unreadable (else None)."""
    try:
        records = list_strategies(store)
    except DeclarationError as error:
        return [], (
            f"the stored strategy {error.campaign!r} cannot be read by this service "
            f"({error.field}); ask the bank's operators to check the store's strategies"
        )
    board = []
    for record in records:
        if record.stage not in LIVE_STAGES:
            continue
        waiting = next((c for c in strategy_gate(store, record) if not c.passed), None)
        board.append({"record": record, "next": NEXT_STAGE[record.stage], "waiting": waiting})
    return board, None


def _day(value: str | None, name: str) -> date | None:
    """Return the page's day (None: today), or a 422 page for anything but a plain date."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not EARLIEST_DAY <= day <= LATEST_DAY or len(value) != 10:
        raise ConsoleRefusal(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Not a day",
            f"{name} is a date written YYYY-MM-DD between {EARLIEST_DAY} and {LATEST_DAY}; go "
            "back and correct it",
        )
    return day


@router.get("/journeys", name="console_journeys")
def _book(request: Request, service: ServiceDep, visitor: _Reader) -> HTMLResponse:
    """Every strategy: stage, next stage and its gate; the closed ones below."""
    with service.bank() as bank:
        board, problem = journey_board(bank.store)
        closed = (
            []
            if problem
            else [r for r in list_strategies(bank.store) if r.stage not in LIVE_STAGES]
        )
    return render(
        request, "journeys.html", title="Journeys", board=board, closed=closed, problem=problem
    )


_FUNNEL_RATES = (
    "rate_first_open",
    "rate_register",
    "rate_bind_card",
    "rate_first_transaction",
    "rate_assets_10k",
    "conversion_activate",
    "conversion_grow",
    *(f"retention_d{n}" for n in RETENTION_DAYS),
)


@router.get("/journeys/funnel", name="console_journey_funnel")
def _funnel(
    request: Request, service: ServiceDep, visitor: _Reader, as_of: str | None = None
) -> HTMLResponse:
    """The cohort funnel of new customers by download week and branch, k-anonymised."""
    day = _day(as_of, "the day") or service.clock().date()
    audit(request, detail=f"funnel as of {day}")
    with service.bank() as bank:
        table = attempt(
            lambda: cohort_funnel(bank.store, as_of=day, now=service.clock()), subject="strategy"
        )
    audit(request, rows=table.height)
    return render(
        request,
        "journey_funnel.html",
        title="New customers' funnel",
        rows=table.to_dicts(),
        rates=_FUNNEL_RATES,
        as_of=day,
        k=DEFAULT_K,
    )


@router.get("/journeys/{strategy_id}", name="console_journey")
def _journey(
    strategy_id: str,
    request: Request,
    service: ServiceDep,
    visitor: _Reader,
    done: str | None = None,
) -> HTMLResponse:
    """One strategy: its flow with today's dry-run counts, stage and gate, history, actions."""
    with service.bank() as bank:
        context = _journey_context(service, bank.store, _known(bank.store, strategy_id), visitor)
    return render(request, "journey.html", notice=_DONE.get(done or ""), **context)


def _journey_context(
    service: Service,
    store: Store,
    record: StrategyRecord,
    visitor: Visitor,
    refused: GateRefused | None = None,
) -> dict[str, Any]:
    """Return what the strategy page shows (its gate's checks as they stand now)."""
    today = service.clock().date()
    policy = counts_policy(visitor)
    counts, problem = _dry_run(service, store, record, today, policy)
    return {
        "title": f"Journey {record.strategy_id}",
        "record": record,
        "strategy": record.strategy,
        "steps": flow_steps(record.strategy),
        "counts": counts,
        "dry_run_problem": problem,
        "today": today,
        "next_stage": NEXT_STAGE.get(record.stage) if record.stage in LIVE_STAGES else None,
        "checks": strategy_gate(store, record) if record.stage in LIVE_STAGES else [],
        "refused": refused,
        "history": strategy_history(store, record.strategy_id),
        "k": DEFAULT_K,
        "exact": policy is DisclosurePolicy.OPERATIONAL,
    }


def _dry_run(
    service: Service, store: Store, record: StrategyRecord, day: date, policy: DisclosurePolicy
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Return the day's dry-run counts by node under `policy`, or why there are none."""
    try:
        frame = journey_dry_run(
            service.folder, store, day=day, now=service.clock(), strategy_ids=[record.strategy_id]
        )
    except FusionError as error:
        return {}, str(error)
    rows = disclosed(
        frame.drop("strategy_id"), Layout(counts=DRY_RUN_COUNTS), policy=policy, k=DEFAULT_K
    )
    return {row["node_id"]: row for row in rows}, None


@router.post("/journeys/{strategy_id}/promote", name="console_journey_promote")
def _promote(
    strategy_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> Response:
    """Promote to the stage the page showed next; a refused gate is shown with its reason."""
    check_csrf(visitor, form)
    audit(request, detail=strategy_id)
    actor = visitor.principal.token_id
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        try:
            promoted = attempt(
                lambda: promote_strategy(
                    bank.store, strategy_id, actor=actor, now=service.clock(),
                    to_stage=form.get("to_stage") or None,
                ),
                subject="strategy",
            )  # fmt: skip
        except GateRefused as refused:
            record = _known(bank.store, strategy_id)
            context = _journey_context(service, bank.store, record, visitor, refused)
            audit(request, detail=f"{strategy_id} refused at gate {refused.gate}")
            return render(request, "journey.html", status=409, notice=None, **context)
    audit(request, detail=f"{strategy_id} {promoted.from_stage}->{promoted.to_stage}")
    return _back(strategy_id, "promoted")


@router.post("/journeys/{strategy_id}/close", name="console_journey_close")
def _close(
    strategy_id: str, request: Request, service: ServiceDep, visitor: _Marketer, form: Form
) -> RedirectResponse:
    """Close the strategy from any stage."""
    check_csrf(visitor, form)
    audit(request, detail=strategy_id)
    actor = visitor.principal.token_id
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        closed = attempt(
            lambda: close_strategy(bank.store, strategy_id, actor=actor, now=service.clock()),
            subject="strategy",
        )
    audit(request, detail=f"{strategy_id} {closed.from_stage}->closed")
    return _back(strategy_id, "closed")


def _back(strategy_id: str, done: str) -> RedirectResponse:
    """Return the redirect to the strategy's page after an action (post, redirect, get)."""
    return RedirectResponse(
        f"/console/journeys/{strategy_id}?done={done}", status_code=status.HTTP_303_SEE_OTHER
    )


@router.get("/journeys/{strategy_id}/readout", name="console_journey_readout")
def _readout(
    strategy_id: str,
    request: Request,
    service: ServiceDep,
    visitor: _Reader,
    as_of: str | None = None,
) -> HTMLResponse:
    """The readout: the report page `write_readout` wrote, with its funnel plot."""
    day = _day(as_of, "the readout's day") or service.clock().date()
    audit(request, detail=f"{strategy_id} as of {day}")
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        result = attempt(
            lambda: journey_readout(
                service.folder, bank.store, strategy_id, as_of=day, now=service.clock()
            ),
            subject="strategy",
        )
    body = embedded_report(
        result.files["html"], lambda name: f"/console/journeys/{strategy_id}/plots/{name}"
    )
    return render(
        request,
        "journey_readout.html",
        title=f"Readout of {strategy_id}",
        body=body,
        strategy_id=strategy_id,
        as_of=day,
        opt_outs=result.opt_outs,
        k=result.readout.k,
    )


@router.get("/journeys/{strategy_id}/plots/{name}", name="console_journey_plot")
def _plot(strategy_id: str, name: str, service: ServiceDep, visitor: _Reader) -> FileResponse:
    """The funnel plot of the strategy's last readout page."""
    path = service.folder.reports / "journeys" / strategy_id / name
    if not (_NAME.fullmatch(strategy_id) and name == FUNNEL_FILE and path.is_file()):
        raise ConsoleRefusal(
            status.HTTP_404_NOT_FOUND,
            "No such plot",
            "this strategy has no such plot; open its readout first, which draws it",
        )
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- the flow in words -------------------------------------------------------------------------


def flow_steps(strategy: Strategy) -> list[dict[str, Any]]:
    """Return the strategy's nodes in declared order, each with what it does in words and the
    nodes it leads to: id, kind, text, leads (a list of (label, node id))."""
    steps = []
    for node in strategy.nodes:
        if isinstance(node, EntryNode):
            who = (
                f"customers in the {node.stage} stage"
                if node.stage is not None
                else f"customers with a {str(node.event).replace('_', ' ')} event"
            )
            text, leads = f"{who} enter (once each)", [("next", node.next)]
        elif isinstance(node, ConditionNode):
            text = f"if {_condition(node.when)}"
            leads = [("yes", node.then), ("no", node.otherwise)]
        elif isinstance(node, WaitNode):
            text, leads = (
                f"wait {node.days} day{'s' if node.days != 1 else ''}",
                [("next", node.next)],
            )
        elif isinstance(node, ActionNode):
            offer = f", offer {node.offer_id}" if node.offer_id else ""
            channel = node.channel.replace("_", " ")
            text = f"touch by {channel}: content {node.content_id}{offer}"
            leads = [("next", node.next)]
        else:
            text, leads = "the customer leaves", []
        steps.append({"id": node.id, "kind": node.kind, "text": text, "leads": leads})
    return steps


def _condition(when: Condition) -> str:
    """Return a condition in a marketer's words."""
    if isinstance(when, TagCondition):
        return f"the profile's tags hold any of {', '.join(map(str, when.any_of))}"
    if isinstance(when, FeatureCondition):
        return f"feature {when.column} {when.op} {when.value:g}"
    if isinstance(when, ScoreCondition):
        return f"the {when.model} score {when.op} {when.value:g}"
    if isinstance(when, MilestoneCondition):
        reached = "reached" if when.reached else "not reached"
        return f"{when.milestone.replace('_', ' ')} is {reached}"
    if isinstance(when, StageCondition):
        return f"the lifecycle stage is {' or '.join(when.stages)}"
    if isinstance(when, IdleCondition):
        return f"no app activity for {when.days} days"
    assert isinstance(when, AnswerCondition)
    answer = when.answer.replace("_", " ")
    return f"the latest touch of {when.touch} was {answer} within {when.within_days} days"
