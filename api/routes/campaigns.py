"""/v1/campaigns: declare, plan, promote, deliver, close and read out campaigns.

Who may call what:

    POST /v1/campaigns                                    marketer, admin
    GET  /v1/campaigns, /v1/campaigns/{id}                marketer, admin, head-office analyst
    POST /v1/campaigns/plan                               marketer, admin
    POST /v1/campaigns/{id}/promote, /close               marketer, admin
    POST /v1/campaigns/{id}/deliveries                    marketer, admin
    GET  /v1/campaigns/{id}/deliveries                    campaign_tool, marketer, admin
    GET  /v1/campaigns/{id}/deliveries/{version}          campaign_tool, admin
    GET  /v1/campaigns/{id}/readout                       marketer, admin, analyst (scoped)

Each request calls one step of `fusion.pipeline.campaigns` on a `Bank` whose store is bound to
this request thread's cursor (`Service.bank`): the store's own connection is the ingest
worker's. Writes (declare, plan, promote, close, deliver) and readouts hold
`Service.campaign_lock`, so two plans or promotions never interleave and a promotion's gate is
checked against the stage it then moves from; a write DuckDB refuses as a conflict with an
older reader runs again for up to about 1.5 s (then 503, retry). The caller's token id is the
actor; every write is audited with the campaign it touched. Errors: an unknown campaign 404;
an invalid declaration 422 naming the field; a refused gate 409 naming the gate; any other
campaign error 409 (`api.app` maps the last three); a stored declaration this version cannot
read 503.
"""

from __future__ import annotations

import hashlib
from pathlib import Path as FilePath
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status

from api.campaign_schemas import (
    MAX_DELIVERY_PAGE,
    CampaignErrorPublic,
    CampaignPlanCreate,
    CampaignPromoteCreate,
    CampaignPublic,
    CampaignsPublic,
    DeclarationErrorPublic,
    DeliveriesPublic,
    DeliveryPublic,
    DeliveryRowPublic,
    DeliveryRowsPublic,
    DeliveryVersionPublic,
    GateRefusedPublic,
    PlansPublic,
    PromotedPublic,
    UnreadablePublic,
    declaration_schema,
)
from api.deps import ServiceDep, audit, require
from api.writes import retrying, unreadable
from contracts.errors import DeclarationError
from fusion.campaigns.book import CampaignRecord, get_campaign, stage_history
from fusion.campaigns.declaration import NAME_PATTERN, load_declaration
from fusion.campaigns.delivery import DELIVERY_COLUMNS, delivery_rows
from fusion.campaigns.readout import BREAKDOWNS
from fusion.pipeline.bank import Bank
from fusion.pipeline.campaigns import (
    campaign_readout,
    close,
    declare_campaign,
    deliver_campaign,
    plan_window,
    promote_campaign,
)
from fusion.store import Store
from fusion.tokens import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["campaigns"])

_MARKETERS = require("marketer", "admin")
_READERS = require("marketer", "admin", "analyst")
_DELIVERY_READERS = require("campaign_tool", "marketer", "admin")
_ROW_READERS = require("campaign_tool", "admin")
_CampaignId = Annotated[str, Path(pattern=NAME_PATTERN, description="the campaign's name")]
_BRANCH = r"^[A-Za-z0-9_-]{1,64}$"
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": CampaignErrorPublic, "description": "no such campaign"}
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": CampaignErrorPublic, "description": "the campaign's state refuses"}
}


def _actor(principal: Principal) -> str:
    """Return who acts, as stored and audited: the token's id, never the token."""
    return principal.token_id


def _known(store: Store, campaign_id: str) -> CampaignRecord:
    """Return the stored campaign; 404 when there is none, 503 when it cannot be read."""
    # Looked up here, not through get_campaign's miss, which reads every other campaign to
    # name them and would blame this request for another's unreadable row.
    found = store.execute(
        "SELECT count(*) FROM campaigns WHERE campaign_id = ?", [campaign_id]
    ).fetchall()
    if not found[0][0]:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"there is no campaign {campaign_id!r}; GET /v1/campaigns lists them, and "
            "POST /v1/campaigns declares one",
        )
    try:
        return get_campaign(store, campaign_id)
    except DeclarationError as error:
        raise unreadable("campaign", campaign_id, error, plural="campaigns") from None


def _public(store: Store, record: CampaignRecord) -> CampaignPublic:
    """Return the record with its stage history, as answered."""
    history = [p.to_dict() for p in stage_history(store, record.campaign_id)]
    return CampaignPublic.model_validate({**record.to_dict(), "history": history})


def _head_office(principal: Principal) -> None:
    """Refuse (403) an analyst tied to branches: campaigns are read at head office."""
    if principal.role == "analyst" and principal.branches is not None:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="campaigns are read by head office; a branch analyst reads its branches' "
            "cells of a readout at GET /v1/campaigns/{campaign_id}/readout",
        )


@router.post(
    "/campaigns",
    status_code=status.HTTP_201_CREATED,
    name="declare_campaign",
    responses={
        200: {"model": CampaignPublic, "description": "the same declaration again: unchanged"},
        422: {"model": DeclarationErrorPublic, "description": "the declaration is invalid"},
        **_REFUSED,
    },
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": declaration_schema()}}}
    },
)
def _declare(
    declaration: Annotated[dict[str, Any], Body(description="a campaign declaration")],
    request: Request,
    response: Response,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> CampaignPublic:
    """Declare a campaign (201), or the same again (200); a draft's new document replaces it."""
    campaign = load_declaration(declaration)
    with service.campaign_lock, service.bank() as bank:
        try:
            record, changed = retrying(
                lambda: declare_campaign(
                    bank, campaign, actor=_actor(principal), now=service.clock()
                )
            )
        except DeclarationError as error:  # the stored one, not the body: that one loaded
            raise unreadable("campaign", campaign.name, error, plural="campaigns") from None
        answer = _public(bank.store, record)
    audit(request, detail=f"{record.campaign_id} v{record.version}")
    if not changed:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/campaigns", name="list_campaigns")
def _list(
    service: ServiceDep, principal: Annotated[Principal, Depends(_READERS)]
) -> CampaignsPublic:
    """List every campaign with its stage history (head office: marketers, admins, analysts)."""
    _head_office(principal)
    campaigns, unreadable = [], []
    with service.bank() as bank:
        store = bank.store
        names = store.execute("SELECT campaign_id FROM campaigns ORDER BY campaign_id").fetchall()
        for (name,) in names:
            # One unreadable row must not hide the others, nor be dropped without a word.
            try:
                campaigns.append(_public(store, get_campaign(store, name)))
            except DeclarationError as error:
                unreadable.append(UnreadablePublic(campaign_id=name, field=error.field))
    return CampaignsPublic(campaigns=campaigns, unreadable=unreadable)


@router.get("/campaigns/{campaign_id}", name="get_campaign", responses=_UNKNOWN)
def _get(
    campaign_id: _CampaignId,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
) -> CampaignPublic:
    """Return one campaign: its declaration, stage and stage history (head office)."""
    _head_office(principal)
    with service.bank() as bank:
        return _public(bank.store, _known(bank.store, campaign_id))


@router.post("/campaigns/plan", name="plan_campaigns", responses={**_UNKNOWN, **_REFUSED})
def _plan(
    body: CampaignPlanCreate,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> PlansPublic:
    """Plan the campaigns' current stages for a window, together: they compete for customers."""
    names = list(dict.fromkeys(body.campaigns))
    audit(request, detail=",".join(names)[:200])
    with service.campaign_lock, service.bank() as bank:
        for name in names:
            _known(bank.store, name)
        result = retrying(
            lambda: plan_window(
                bank,
                names,
                window_start=body.window_start,
                actor=_actor(principal),
                now=service.clock(),
            )
        )
    audit(request, rows=sum(p.assigned for p in result.plans if not p.stored_before))
    return PlansPublic.model_validate(result.to_dict())


@router.post(
    "/campaigns/{campaign_id}/promote",
    name="promote_campaign",
    responses={
        **_UNKNOWN,
        409: {"model": GateRefusedPublic, "description": "the gate refused; `gate` says which"},
    },
)
def _promote(
    campaign_id: _CampaignId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
    body: CampaignPromoteCreate | None = None,
) -> PromotedPublic:
    """Promote the campaign to its next stage once that stage's gate holds (409 names it)."""
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        promoted = retrying(
            lambda: promote_campaign(
                bank,
                campaign_id,
                actor=_actor(principal),
                now=service.clock(),
                to_stage=body.to_stage if body else None,
            )
        )
    audit(request, detail=f"{campaign_id} {promoted.from_stage}->{promoted.to_stage}")
    return PromotedPublic.model_validate(promoted.to_dict())


@router.post(
    "/campaigns/{campaign_id}/close", name="close_campaign", responses={**_UNKNOWN, **_REFUSED}
)
def _close(
    campaign_id: _CampaignId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> PromotedPublic:
    """Close the campaign from any stage: it plans and delivers nothing more."""
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        closed = retrying(
            lambda: close(bank, campaign_id, actor=_actor(principal), now=service.clock())
        )
    audit(request, detail=f"{campaign_id} {closed.from_stage}->closed")
    return PromotedPublic.model_validate(closed.to_dict())


@router.post(
    "/campaigns/{campaign_id}/deliveries",
    status_code=status.HTTP_201_CREATED,
    name="deliver_campaign",
    responses={**_UNKNOWN, **_REFUSED},
)
def _deliver(
    campaign_id: _CampaignId,
    request: Request,
    response: Response,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_MARKETERS)],
) -> DeliveryPublic:
    """Write the next delivery version: treated customers not delivered before, by branch."""
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        delivery = retrying(lambda: deliver_campaign(bank, campaign_id, now=service.clock()))
        (version,) = _versions(bank.store, campaign_id, only=delivery.version)
    audit(request, rows=delivery.rows if delivery.new else 0, detail=f"{campaign_id} "
          f"v{delivery.version}")  # fmt: skip
    if not delivery.new:
        response.status_code = status.HTTP_200_OK
    return DeliveryPublic.model_validate(
        {**version.model_dump(), "campaign_id": campaign_id, "new": delivery.new}
    )


@router.get("/campaigns/{campaign_id}/deliveries", name="list_deliveries", responses=_UNKNOWN)
def _deliveries(
    campaign_id: _CampaignId,
    service: ServiceDep,
    _: Annotated[Principal, Depends(_DELIVERY_READERS)],
) -> DeliveriesPublic:
    """List the campaign's delivery versions: stage, channel, rows and SHA-256 per branch."""
    with service.bank() as bank:
        _known(bank.store, campaign_id)
        versions = _versions(bank.store, campaign_id)
    return DeliveriesPublic(campaign_id=campaign_id, versions=versions)


def _versions(
    store: Store, campaign_id: str, *, only: int | None = None
) -> list[DeliveryVersionPublic]:
    """Return the campaign's recorded delivery versions (or version `only`), oldest first."""
    rows = store.execute(
        "SELECT version, stage, channel, branch_id, rows, sha256, created_at FROM deliveries "
        "WHERE campaign_id = ? AND (? IS NULL OR version = ?) ORDER BY version, branch_id",
        [campaign_id, only, only],
    ).fetchall()
    grouped: dict[int, dict[str, Any]] = {}
    for version, stage, channel, branch, n, digest, created_at in rows:
        entry = grouped.setdefault(
            int(version),
            {"version": int(version), "stage": stage, "channel": channel, "rows": 0,
             "created_at": created_at, "branches": {}},
        )  # fmt: skip
        entry["rows"] += int(n)
        entry["created_at"] = max(entry["created_at"], created_at)
        entry["branches"][branch] = {"rows": int(n), "sha256": digest}
    return [DeliveryVersionPublic.model_validate(v) for v in grouped.values()]


@router.get(
    "/campaigns/{campaign_id}/deliveries/{version}",
    name="delivery_rows",
    responses={404: {"model": CampaignErrorPublic, "description": "no such version/branch"}},
)
def _delivery_rows(
    campaign_id: _CampaignId,
    version: Annotated[int, Path(ge=1, le=2**31 - 1, description="the delivery version")],
    request: Request,
    service: ServiceDep,
    _: Annotated[Principal, Depends(_ROW_READERS)],
    branch_id: Annotated[str, Query(pattern=_BRANCH, description="e.g. B001")],
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERY_PAGE)] = 1000,
) -> DeliveryRowsPublic:
    """Return one branch's rows of a delivery version, in contact order, a page at a time."""
    with service.bank() as bank:
        _known(bank.store, campaign_id)
        frame = _branch_file(bank, campaign_id, version, branch_id)
    page = frame.slice(offset, limit)
    audit(request, rows=page.height, detail=f"{campaign_id} v{version} {branch_id}")
    return DeliveryRowsPublic(
        campaign_id=campaign_id,
        version=version,
        branch_id=branch_id,
        total=frame.height,
        offset=offset,
        rows=[DeliveryRowPublic.model_validate(row) for row in page.iter_rows(named=True)],
    )


def _branch_file(bank: Bank, campaign_id: str, version: int, branch: str) -> pl.DataFrame:
    """Return the rows of a branch's delivery file (DELIVERY_COLUMNS only).

    The file is read when it holds the digest the store recorded; a file gone or changed is
    rebuilt from the store, which `deliver` writes the files from.
    """
    row = bank.store.execute(
        "SELECT channel, sha256 FROM deliveries WHERE campaign_id = ? AND version = ? "
        "AND branch_id = ?",
        [campaign_id, version, branch],
    ).fetchone()
    if row is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"campaign {campaign_id!r} has no delivery version {version} for branch "
            f"{branch}; GET /v1/campaigns/{campaign_id}/deliveries lists its versions and "
            "branches",
        )
    channel, digest = row
    path = bank.folder.deliveries / campaign_id / f"v{version}" / channel / f"{branch}.parquet"
    if path.is_file() and _sha256(path) == digest:
        frame = pl.read_parquet(path)
    else:
        frame = delivery_rows(bank.store, campaign_id, version).filter(
            pl.col("branch_id") == branch
        )
    return frame.select(DELIVERY_COLUMNS)


def _sha256(path: FilePath) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@router.get(
    "/campaigns/{campaign_id}/readout",
    name="campaign_readout",
    responses={**_UNKNOWN, **_REFUSED},
)
def _readout(
    campaign_id: _CampaignId,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(_READERS)],
) -> dict[str, Any]:
    """Read the campaign out against its control, k-anonymised (branch analysts: see below).

    Marketers, admins and head-office analysts get the whole readout (arms, funnel, lift, money,
    the A/B test, breakdowns). An analyst of some branches gets only `campaign`, `stages`,
    `analysis`, `objective`, `k`, `alpha`, `scope` (its branches) and
    `breakdowns.by_branch` filtered to the rows of its branches: no total, status, decision,
    test, money or other breakdown, since each of those counts customers of other branches.
    """
    audit(request, detail=campaign_id)
    with service.campaign_lock, service.bank() as bank:
        _known(bank.store, campaign_id)
        readout = campaign_readout(bank, campaign_id).readout.to_dict()
    if principal.role == "analyst" and principal.branches is not None:
        return _branch_scoped(readout, principal.branches)
    return readout


def _branch_scoped(readout: dict[str, Any], branches: frozenset[str]) -> dict[str, Any]:
    """Return the parts of a readout that describe only customers of `branches`."""
    column = BREAKDOWNS["by_branch"]
    rows = [row for row in readout["breakdowns"]["by_branch"] if row[column] in branches]
    kept = ("campaign", "stages", "analysis", "objective", "k", "alpha")
    return {
        **{key: readout[key] for key in kept},
        "scope": {"branches": sorted(branches)},
        "breakdowns": {"by_branch": rows},
    }
