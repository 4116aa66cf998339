"""/v1/models: the registry's versions, and an admin moving a model's CURRENT.

    GET  /v1/models[?name=]              admin   every saved version, CURRENT marked
    POST /v1/models/{name}/promote       admin   promote a challenger through the gate
    POST /v1/models/{name}/rollback      admin   return CURRENT to the version it replaced

Each call runs one step of `fusion.pipeline.modelling` on a `Bank` bound to this request
thread's cursor. A promotion the gate refuses is recorded and answered 409 with the judgement
(both metrics, the difference and its interval); an unknown model or version, or a rollback
with nothing to return to, 409 with the reason; a reason too short to be one, 400. The
caller's token id is the actor, and each call is audited with the model and versions. Moves
run one at a time, so two promotions never judge against a champion that is being replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import JSONResponse

from api.deps import ServiceDep, audit, require
from api.model_schemas import (
    ModelDecisionPublic,
    ModelPromoteCreate,
    ModelRollbackCreate,
    ModelVersionPublic,
    ModelVersionsPublic,
)
from api.service import Service
from contracts.errors import ModelError
from fusion.models.promotion import Decision
from fusion.pipeline.bank import Bank
from fusion.pipeline.modelling import model_versions, promote_model, rollback_model
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["models"])

_ADMIN = require("admin")
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
_MOVES = threading.Lock()
ModelName = Annotated[str, Path(pattern=_NAME, description="the model's registry name")]
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "the gate refused (with the judgement), or no such model or version"}
}


@router.get("/models", name="model_versions")
def _versions(
    request: Request,
    service: ServiceDep,
    _: Annotated[Principal, Depends(_ADMIN)],
    name: Annotated[str | None, Query(pattern=_NAME)] = None,
) -> ModelVersionsPublic:
    """List every saved model version, CURRENT marked, with its held-out figure."""
    found = model_versions(service.folder, name)
    audit(request, rows=len(found), detail=name)
    return ModelVersionsPublic(
        versions=[ModelVersionPublic.model_validate(vars(v), strict=False) for v in found]
    )


def _moved(request: Request, service: Service, name: str, move: Callable[[Bank], Decision]) -> Any:
    """Return the answer of one move of `name`'s CURRENT, made on this thread's bank."""
    try:
        with _MOVES, service.bank() as bank:
            decision = move(bank)
    except ModelError as error:
        audit(request, detail=f"{name}: refused")
        return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(error)})
    finally:
        service.scorer.refresh()  # the next score request reads CURRENT afresh
    audit(request, detail=f"{name}: {decision.from_version} -> {decision.to_version}")
    public = ModelDecisionPublic.model_validate(
        {**decision.to_dict(), "message": decision.message()}, strict=False
    )
    if not decision.moved:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={"detail": decision.message(), **public.model_dump(mode="json")},
        )
    return public


@router.post("/models/{name}/promote", name="promote_model", responses=_REFUSED)
def _promote(
    name: ModelName,
    body: ModelPromoteCreate,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_ADMIN)],
) -> Any:
    """Promote a challenger: CURRENT moves only when it beats the champion, or by override."""
    return _moved(
        request,
        service,
        name,
        lambda bank: promote_model(
            bank.folder, bank.store, name, actor=principal.token_id, now=service.clock(),
            version=body.version, reason=body.reason, override=body.override,
        ),
    )  # fmt: skip


@router.post("/models/{name}/rollback", name="rollback_model", responses=_REFUSED)
def _rollback(
    name: ModelName,
    body: ModelRollbackCreate,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_ADMIN)],
) -> Any:
    """Return CURRENT to the version the last promotion replaced (or the one named)."""
    return _moved(
        request,
        service,
        name,
        lambda bank: rollback_model(
            bank.folder, bank.store, name, actor=principal.token_id, now=service.clock(),
            reason=body.reason, version=body.version,
        ),
    )  # fmt: skip
