"""/v1/journeys and /v1/journey-events: declare, read, promote and close journey strategies,
send the journey event log, read a strategy out and dry-run its day.

Who may call what:

    POST /v1/journeys                                     marketer, admin
    GET  /v1/journeys, /v1/journeys/{id}                  marketer, admin, head-office analyst
    POST /v1/journeys/{id}/promote, /close                marketer, admin
    POST /v1/journey-events                               campaign_tool, admin
    GET  /v1/journeys/{id}/readout?as_of=                 marketer, admin, head-office analyst
    GET  /v1/journeys/{id}/dry-run?day=                   marketer, admin, head-office analyst

Journey events come from the systems that see them happen: the app (milestones, log-ins) and
the channels that delivered a touch (exposure, click, opt-out). They reach the bank through
the same integration that posts campaign outcome events today, so they take the same roles as
POST /v1/outcomes (campaign_tool, admin); marketers declare and steer strategies but never
write the facts a readout is computed from. A branch analyst reads none of these routes:
every figure here counts customers of every branch (403, as for campaigns).

Each request calls one function on the store bound to this request thread's cursor
(`Service.bank`): `fusion.journeys.book` (declare, read, promote, close),
`fusion.journeys.events.load_events`, and `fusion.pipeline.journeys` for the readout (written
to reports/journeys/<id>/ as the console shows it, with its opt-out comparison) and the dry run
(with the profile columns its conditions read, from the run's feature table and scores).
Declarations, promotions, closings and readouts (which write their files) hold
`Service.campaign_lock` (strategies and campaigns share the contacts their gates and screening
read); events hold `Service.outcomes_lock` so that two copies of one request never
both find an event new. A write DuckDB refuses as a conflict with an older reader runs again
for up to about 1.5 s (`api.writes.retrying`; then 503, retry). The caller's token id is the
actor, and the source of the events it sends; every request is audited (`api.app`), writes
with the strategy they touched and the rows they stored.

Answers: an unknown strategy 404; an invalid declaration 422 naming its field
(`nodes[<id>].<field>`); a refused gate 409 naming the gate and saying why; a closed strategy or
a declaration changed past its draft 409; a stored declaration this version cannot read 503.
The readout's tables leave `fusion.journeys.readout` k-anonymised (k = 10); the dry run's counts
are the strategy's own operational counts, exact for its marketers and admins and k-anonymised
(`fusion.reports.disclosure`) for a head-office analyst. No answer holds a key or a raw
identifier: customers appear only as the bank's internal customer id, and only where the caller
sent it (a refused event).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status

from api.deps import ServiceDep, SettingsDep, audit, require
from api.journey_schemas import (
    DRY_RUN_COUNTS,
    EARLIEST_DAY,
    LATEST_DAY,
    DryRunNodePublic,
    DryRunPublic,
    JourneyEventRefusedPublic,
    JourneyEventsAccepted,
    JourneyEventsCreate,
    JourneyPromoteCreate,
    JourneyPromotedPublic,
    JourneyPublic,
    JourneysPublic,
    strategy_schema,
)
from api.service import Service
from api.writes import refuse_too_many, retrying, unreadable
from contracts.errors import CampaignError, DeclarationError
from contracts.journeys import JOURNEY_EVENT_LOG
from fusion.campaigns.declaration import NAME_PATTERN
from fusion.campaigns.stages import Promoted
from fusion.journeys.book import (
    StrategyRecord,
    close_strategy,
    create_strategy,
    get_strategy,
    list_strategies,
    promote_strategy,
    strategy_history,
)
from fusion.journeys.events import load_events
from fusion.journeys.strategy import load_strategy
from fusion.pipeline.journeys import journey_dry_run, journey_readout
from fusion.reports.disclosure import DEFAULT_K, DisclosurePolicy, Layout, disclose
from fusion.store import Store
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["journeys"])

_MARKETERS = require("marketer", "admin")
_READERS = require("marketer", "admin", "analyst")
_SENDERS = require("campaign_tool", "admin")
_StrategyId = Annotated[str, Path(pattern=NAME_PATTERN, description="the strategy's name")]
_ERROR = {"content": {"application/json": {"schema": {"type": "object"}}}}
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {**_ERROR, "description": "no such strategy"}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {**_ERROR, "description": "the strategy's state refuses; `gate` names a failed check"}
}


def _known(store: Store, strategy_id: str) -> StrategyRecord:
    """Return the stored strategy; 404 when there is none, 503 when it cannot be read."""
    try:
        return get_strategy(store, strategy_id)
    except DeclarationError as error:  # a CampaignError too: caught first
        raise unreadable("strategy", strategy_id, error, plural="strategies") from None
    except CampaignError as error:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"{error}; GET /v1/journeys lists them, and POST /v1/journeys declares one",
        ) from None


def _public(store: Store, record: StrategyRecord) -> JourneyPublic:
    """Return the record with its stage history, as answered."""
    history = strategy_history(store, record.strategy_id)
    return JourneyPublic.model_validate({**record.to_dict(), "history": history})


def _promoted(moved: Promoted) -> JourneyPromotedPublic:
    """Return a promotion (or a closing) as answered: the strategy's id and the gate's checks."""
    answer = moved.to_dict()
    answer["strategy_id"] = answer.pop("campaign_id")
    return JourneyPromotedPublic.model_validate(answer)


def _head_office(principal: Principal) -> None:
    """Refuse (403) an analyst tied to branches: journey figures count every branch."""
    if principal.role == "analyst" and principal.branches is not None:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="journey strategies are read by head office: their figures count customers "
            "of every branch; ask head office for a readout",
        )


def _day(value: date | None, service: Service, name: str) -> date:
    """Return the day asked for (today in UTC when left out), within the engine's calendar."""
    if value is None:
        return service.clock().date()
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["query", name],
                    "msg": f"a day between {EARLIEST_DAY} and {LATEST_DAY}",
                    "type": "value_error",
                }
            ],
        )
    return value


@router.post(
    "/journeys",
    status_code=status.HTTP_201_CREATED,
    name="declare_journey",
    responses={
        200: {"model": JourneyPublic, "description": "the same strategy again: unchanged"},
        422: {**_ERROR, "description": "the strategy is invalid; `field` names where"},
        **_REFUSED,
    },
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": strategy_schema()}}}},
)
def _declare(
    declaration: Annotated[dict[str, Any], Body(description="a journey strategy")],
    request: Request,
    response: Response,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> JourneyPublic:
    """Declare a strategy (201), or the same again (200); a draft's new document replaces it."""
    strategy = load_strategy(declaration)
    with service.campaign_lock, service.bank() as bank:
        try:
            record, changed = retrying(
                lambda: create_strategy(
                    bank.store, strategy, actor=principal.token_id, now=service.clock()
                )
            )
        except DeclarationError as error:  # the stored one, not the body: that one loaded
            raise unreadable("strategy", strategy.name, error, plural="strategies") from None
        answer = _public(bank.store, record)
    audit(request, detail=f"{record.strategy_id} v{record.version}")
    if not changed:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/journeys", name="list_journeys")
def _list(
    request: Request, service: ServiceDep, principal: Annotated[Principal, Depends(_READERS)]
) -> JourneysPublic:
    """List every strategy with its stage and history (head office)."""
    _head_office(principal)
    with service.bank() as bank:
        try:
            records = list_strategies(bank.store)
        except DeclarationError as error:
            name = error.campaign or "?"
            raise unreadable("strategy", name, error, plural="strategies") from None
        answer = JourneysPublic(journeys=[_public(bank.store, r) for r in records])
    audit(request, rows=len(answer.journeys))
    return answer


@router.get("/journeys/{strategy_id}", name="get_journey", responses=_UNKNOWN)
def _get(
    strategy_id: _StrategyId,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
) -> JourneyPublic:
    """Return one strategy: its declaration, stage and stage history (head office)."""
    _head_office(principal)
    with service.bank() as bank:
        return _public(bank.store, _known(bank.store, strategy_id))


@router.post(
    "/journeys/{strategy_id}/promote",
    name="promote_journey",
    responses={**_UNKNOWN, **_REFUSED},
)
def _promote(
    strategy_id: _StrategyId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
    body: JourneyPromoteCreate | None = None,
) -> JourneyPromotedPublic:
    """Promote the strategy to its next stage once the gate holds (409 names the failed check
    and says why)."""
    audit(request, detail=strategy_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        promoted = retrying(
            lambda: promote_strategy(
                bank.store,
                strategy_id,
                actor=principal.token_id,
                now=service.clock(),
                to_stage=body.to_stage if body else None,
            )
        )
    audit(request, detail=f"{strategy_id} {promoted.from_stage}->{promoted.to_stage}")
    return _promoted(promoted)


@router.post(
    "/journeys/{strategy_id}/close", name="close_journey", responses={**_UNKNOWN, **_REFUSED}
)
def _close(
    strategy_id: _StrategyId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> JourneyPromotedPublic:
    """Close the strategy from any stage: the daily run moves no one in it any more."""
    audit(request, detail=strategy_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        closed = retrying(
            lambda: close_strategy(
                bank.store, strategy_id, actor=principal.token_id, now=service.clock()
            )
        )
    audit(request, detail=f"{strategy_id} {closed.from_stage}->closed")
    return _promoted(closed)


@router.post("/journey-events", status_code=status.HTTP_201_CREATED, name="record_journey_events")
def _events(
    body: JourneyEventsCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(_SENDERS)],
) -> JourneyEventsAccepted:
    """Store the journey events that pass their checks, once each (by `event_key`); list the
    others with their reasons (201 even when some are refused)."""
    events = body.events
    refuse_too_many("events", len(events), settings.max_outcomes)
    frame = pl.DataFrame(
        {
            "event_key": [e.event_key for e in events],
            "customer_id": [e.customer_id for e in events],
            "event": [e.event for e in events],
            "occurred_at": [e.occurred_at for e in events],  # naive UTC (the schema made it so)
            "touch_id": [e.touch_id for e in events],
        },
        schema=JOURNEY_EVENT_LOG.columns,
    )
    with service.outcomes_lock, service.bank() as bank:
        result = retrying(
            lambda: load_events(
                bank.store,
                frame,
                source=principal.token_id,
                now=service.clock(),
                clock_skew=settings.outcome_clock_skew,
            )
        )
    audit(request, rows=result.recorded, detail="journey events")
    return JourneyEventsAccepted(
        recorded=result.recorded,
        already_recorded=result.already_recorded,
        refused=[JourneyEventRefusedPublic(**row) for row in result.refused.iter_rows(named=True)],
    )


@router.get(
    "/journeys/{strategy_id}/readout", name="journey_readout", responses={**_UNKNOWN, **_REFUSED}
)
def _readout(
    strategy_id: _StrategyId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
    as_of: Annotated[
        date | None, Query(description="the readout's day (ISO 8601); left out: today (UTC)")
    ] = None,
) -> dict[str, Any]:
    """Read the strategy out per arm and node against its held-out control, k-anonymised:
    customers, goal completion, exposure, clicks, opt-outs, stage conversion and day-30
    retention, the arms compared with intervals, the milestone funnel per arm, and `opt_outs`:
    the treatment arm's opt-out rate against the control's (null while a count is under k)."""
    _head_office(principal)
    day = _day(as_of, service, "as_of")
    audit(request, detail=f"{strategy_id} as of {day}")
    # The campaign lock, as for campaign readouts: the readout's files are written again.
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, strategy_id)
        result = journey_readout(
            service.folder, bank.store, strategy_id, as_of=day, now=service.clock()
        )
    answer = result.to_dict()
    del answer["files"]  # the service's own paths
    return answer


@router.get(
    "/journeys/{strategy_id}/dry-run", name="journey_dry_run", responses={**_UNKNOWN, **_REFUSED}
)
def _dry_run(
    strategy_id: _StrategyId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
    day: Annotated[
        date | None, Query(description="the day to compute (ISO 8601); left out: today (UTC)")
    ] = None,
) -> DryRunPublic:
    """Count per node what the daily run of `day` would do with the strategy, writing nothing
    (a draft or closed strategy is taken as at full launch with no control)."""
    _head_office(principal)
    chosen = _day(day, service, "day")
    audit(request, detail=f"{strategy_id} on {chosen}")
    with service.bank() as bank:
        record = _known(bank.store, strategy_id)
        counts = journey_dry_run(
            service.folder, bank.store, day=chosen, now=service.clock(), strategy_ids=[strategy_id]
        )
    policy = (
        DisclosurePolicy.OPERATIONAL
        if principal.role in ("marketer", "admin")
        else DisclosurePolicy.K_ANONYMOUS
    )
    published = disclose(
        counts.drop("strategy_id"), Layout(counts=DRY_RUN_COUNTS), policy=policy, k=DEFAULT_K
    )
    return DryRunPublic(
        strategy_id=strategy_id,
        stage=record.stage,
        day=chosen,
        policy=policy.value,
        k=DEFAULT_K,
        nodes=[
            DryRunNodePublic.model_validate(row)
            for row in published.drop("suppressed").iter_rows(named=True)
        ],
    )
