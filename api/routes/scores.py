"""POST /v1/scores: campaign tools score up to a cap of customers (score, decile, reasons)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from api.deps import ServiceDep, SettingsDep, audit, require
from api.schemas import ScorePublic, ScoresCreate, ScoresPublic
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["scores"])


@router.post("/scores", name="score")
async def _score(
    body: ScoresCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(require("campaign_tool", "admin"))],
) -> ScoresPublic:
    """Score customers with the CURRENT acquisition model: the batch's stored rows, or live."""
    if len(body.customer_ids) > settings.max_score_ids:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"at most {settings.max_score_ids} customer ids per request; got "
            f"{len(body.customer_ids)}. Split the request, or use GET /v1/lists for whole lists.",
        )
    served = await service.scorer.score(body.customer_ids)
    audit(request, rows=len(served.scores))
    return ScoresPublic(
        model=served.model,
        model_version=served.version,
        scores=[
            ScorePublic(
                customer_id=s.customer_id,
                branch_id=s.branch_id,
                score=s.score,
                decile=s.decile,
                reasons=list(s.reasons),
                source=s.source,
                scored_at=s.scored_at,
            )
            for s in served.scores
        ],
        unknown=served.unknown,
    )
