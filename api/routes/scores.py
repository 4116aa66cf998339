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
def _score(
    body: ScoresCreate,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(require("campaign_tool", "admin"))],
) -> ScoresPublic:
    """Score customers with the current acquisition model: score, decile and three reasons."""
    if len(body.customer_ids) > settings.max_score_ids:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"at most {settings.max_score_ids} customer ids per request; got "
            f"{len(body.customer_ids)}. Split the request, or use GET /v1/lists for whole lists.",
        )
    scorer = service.scorer.get()
    frame, unknown = scorer.score(body.customer_ids)
    audit(request, rows=frame.height)
    scores = [
        ScorePublic(
            customer_id=row["customer_id"],
            branch_id=row["branch_id"],
            score=row["score"],
            decile=row["decile"],
            reasons=[r for r in (row["reason_1"], row["reason_2"], row["reason_3"]) if r],
        )
        for row in frame.iter_rows(named=True)
    ]
    return ScoresPublic(
        model=scorer.model.name,
        model_version=str(scorer.model.metadata.get("version", "")),
        scores=scores,
        unknown=unknown,
    )
