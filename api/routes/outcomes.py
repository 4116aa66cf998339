"""POST /v1/outcomes: campaign tools report contacts and responses back, for evaluation."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Request, status

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import OutcomesAccepted, OutcomesCreate
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post("/outcomes", status_code=status.HTTP_201_CREATED)
def record_outcomes(
    body: OutcomesCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require("campaign_tool", "admin"))],
) -> OutcomesAccepted:
    """Record who was offered or held out and who responded; unknown customers are listed."""
    if len(body.outcomes) > settings.max_outcomes:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"at most {settings.max_outcomes} outcomes per request; got "
            f"{len(body.outcomes)}. Send them in parts.",
        )
    now = service.clock().replace(tzinfo=None)
    frame = pl.DataFrame(
        {
            "campaign_id": [body.campaign_id] * len(body.outcomes),
            "customer_id": [o.customer_id for o in body.outcomes],
            "treatment": [o.treatment for o in body.outcomes],
            "contacted": [o.contacted for o in body.outcomes],
            "responded": [o.responded for o in body.outcomes],
            # Stored as naive UTC like every timestamp of the store; an offset is converted.
            "occurred_at": [
                o.occurred_at.astimezone(UTC).replace(tzinfo=None)
                if o.occurred_at and o.occurred_at.tzinfo
                else o.occurred_at
                for o in body.outcomes
            ],
            "recorded_at": [now] * len(body.outcomes),
            "token_id": [principal.token_id] * len(body.outcomes),
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
    cur = service.cursor()
    cur.register("incoming_outcomes", frame.to_arrow())
    try:
        known = {
            row[0]
            for row in cur.execute(
                "SELECT DISTINCT i.customer_id FROM incoming_outcomes i "
                "JOIN customers c ON c.customer_id = i.customer_id"
            ).fetchall()
        }
        cur.execute(
            "INSERT INTO outcomes SELECT * FROM incoming_outcomes "
            "WHERE customer_id IN (SELECT customer_id FROM customers)"
        )
    finally:
        cur.unregister("incoming_outcomes")
    unknown = sorted({o.customer_id for o in body.outcomes} - known)
    recorded = sum(1 for o in body.outcomes if o.customer_id in known)
    audit(request, rows=recorded, detail=body.campaign_id)
    return OutcomesAccepted(campaign_id=body.campaign_id, recorded=recorded, unknown=unknown)
