"""POST /v1/outcomes: campaign tools report contacts and responses back, for evaluation.

Two bodies. `events` (funnel events, each naming its campaign) go through
`fusion.campaigns.outcomes.record_events`: every event is stored or refused with its reason,
and the answer is 201 even when some are refused (422 only for a malformed body). The older
per-customer report, `campaign_id` with `outcomes`, works as it always has:

A retry is harmless. A report is keyed by (campaign, customer, occurred_at) and says
(treatment, contacted, responded); the newest report of a key wins. A row equal to the newest
report already stored under its key is not stored again, and the answer counts it as
`already_recorded`: the same body posted twice records once, while a correction (another state
under the same key, even one reverting to an older state) is recorded. One request may hold
only one state per key (422 otherwise: which would be newest?).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Request, status

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import (
    EventCreate,
    EventRefusedPublic,
    EventsAccepted,
    OutcomesAccepted,
    OutcomesCreate,
    OutcomesReportCreate,
)
from api.service import Service
from api.settings import ApiSettings
from api.writes import refuse_too_many
from fusion.campaigns.outcomes import EVENT_SCHEMA, record_events
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post("/outcomes", status_code=status.HTTP_201_CREATED, name="record_outcomes")
def _record_outcomes(
    report: OutcomesReportCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("campaign_tool", "admin"))],
) -> OutcomesAccepted | EventsAccepted:
    """Record funnel events, or who was offered or held out and who responded; once each."""
    if report.events is not None:
        return _record_events(report.events, request, service, settings, principal)
    body = report.legacy()
    refuse_too_many("outcomes", len(body.outcomes), settings.max_outcomes)
    now = service.clock()
    _refuse_future(body, latest=now + settings.outcome_clock_skew)
    frame = _frame(body, recorded_at=now, token_id=principal.token_id)
    key = ["customer_id", "occurred_at"]
    frame = frame.unique(subset=[*key, "treatment", "contacted", "responded"], keep="first")
    clashes = frame.filter(pl.len().over(key) > 1)
    if not clashes.is_empty():
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"customer {clashes['customer_id'][0]} has two different reports with the "
            "same occurred_at in this request; send one state per customer and occurred_at "
            "(a later state in a later request, or with its own occurred_at)",
        )
    cur = service.cursor()
    cur.register("incoming_outcomes", frame.to_arrow())
    try:
        # One writer at a time: two copies of one request (a client retry while the first is
        # still running) must not both find the rows new.
        with service.outcomes_lock:
            known = {
                row[0]
                for row in cur.execute(
                    "SELECT DISTINCT i.customer_id FROM incoming_outcomes i "
                    "JOIN customers c ON c.customer_id = i.customer_id"
                ).fetchall()
            }
            inserted = cur.execute(_INSERT_NEW, [body.campaign_id]).fetchall()[0]
    finally:
        cur.unregister("incoming_outcomes")
    unknown = sorted({o.customer_id for o in body.outcomes} - known)
    matched = sum(1 for o in body.outcomes if o.customer_id in known)
    recorded = int(inserted[0]) if inserted else 0
    audit(request, rows=recorded, detail=body.campaign_id)
    return OutcomesAccepted(
        campaign_id=body.campaign_id,
        recorded=recorded,
        already_recorded=matched - recorded,
        unknown=unknown,
    )


def _record_events(
    events: list[EventCreate],
    request: Request,
    service: Service,
    settings: ApiSettings,
    principal: Principal,
) -> EventsAccepted:
    """Store the events that pass their checks; list the others with their reasons."""
    refuse_too_many("events", len(events), settings.max_outcomes)
    frame = pl.DataFrame(
        {
            "campaign_id": [e.campaign_id for e in events],
            "customer_id": [e.customer_id for e in events],
            "event": [e.event for e in events],
            "occurred_at": [e.occurred_at for e in events],  # naive UTC (the schema made it so)
            "amount": [e.amount for e in events],
            "event_key": [e.event_key for e in events],
        },
        schema=EVENT_SCHEMA,
    )
    # This thread's cursor: the store's own connection belongs to the ingest worker.
    store = service.store.on_cursor(service.cursor())
    # The lock of the per-customer reports: two copies of one request (a client retry while
    # the first still runs) must not both find the events new.
    with service.outcomes_lock:
        result = record_events(
            store,
            frame,
            source=principal.token_id,
            now=service.clock(),
            clock_skew=settings.outcome_clock_skew,
        )
    audit(request, rows=result.recorded, detail="events")
    return EventsAccepted(
        recorded=result.recorded,
        already_recorded=result.already_recorded,
        refused=[EventRefusedPublic(**row) for row in result.refused.iter_rows(named=True)],
    )


def _refuse_future(body: OutcomesCreate, *, latest: datetime) -> None:
    """Raise a 422 naming the first outcome whose occurred_at is past `latest`."""
    # occurred_at is naive UTC already; a naive clock is taken as UTC too.
    bound = (latest.astimezone(UTC) if latest.tzinfo else latest).replace(tzinfo=None)
    for index, outcome in enumerate(body.outcomes):
        if outcome.occurred_at is not None and outcome.occurred_at > bound:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"outcomes[{index}].occurred_at is in the future (later than the "
                "service's clock plus its allowed skew); report an outcome once it happened, "
                "and check the caller's clock",
            )


def _frame(body: OutcomesCreate, *, recorded_at: datetime, token_id: str) -> pl.DataFrame:
    """Return the body's outcomes as rows of the `outcomes` table."""
    now = recorded_at.replace(tzinfo=None)
    return pl.DataFrame(
        {
            "campaign_id": [body.campaign_id] * len(body.outcomes),
            "customer_id": [o.customer_id for o in body.outcomes],
            "treatment": [o.treatment for o in body.outcomes],
            "contacted": [o.contacted for o in body.outcomes],
            "responded": [o.responded for o in body.outcomes],
            # Naive UTC like every timestamp of the store (the schema converted an offset).
            "occurred_at": [o.occurred_at for o in body.outcomes],
            "recorded_at": [now] * len(body.outcomes),
            "token_id": [token_id] * len(body.outcomes),
        },
        schema={
            "campaign_id": pl.String,
            "customer_id": pl.Int64,
            "treatment": pl.Boolean,
            "contacted": pl.Boolean,
            "responded": pl.Boolean,
            "occurred_at": pl.Datetime("us"),
            "recorded_at": pl.Datetime("us"),
            "token_id": pl.String,
        },
    )


# Rows of known customers whose state differs from the newest stored report of their key
# (NULLs compare equal: a report without occurred_at or contacted is keyed like any other).
_INSERT_NEW = """
INSERT INTO outcomes
SELECT i.* FROM incoming_outcomes AS i
WHERE i.customer_id IN (SELECT customer_id FROM customers)
  AND NOT EXISTS (
    SELECT 1 FROM (
        SELECT * FROM outcomes WHERE campaign_id = $1
        QUALIFY row_number() OVER (
            PARTITION BY customer_id, occurred_at ORDER BY recorded_at DESC
        ) = 1
    ) AS n
    WHERE n.customer_id = i.customer_id
      AND n.occurred_at IS NOT DISTINCT FROM i.occurred_at
      AND n.treatment = i.treatment
      AND n.contacted IS NOT DISTINCT FROM i.contacted
      AND n.responded = i.responded
  )
"""
