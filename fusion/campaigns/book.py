"""Campaigns in the store: declared once, read back, moved from stage to stage with a history.

A campaign is created in stage `draft` with a random 32-byte salt that keys its assignment (never
shown, never exported). While it is a draft, declaring it again replaces the declaration and
counts a new version; once it has left the draft its declaration is fixed, so every plan and
readout of it reads the same rules. Declaring the same document again is harmless.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.errors import CampaignError
from fusion.campaigns.declaration import STAGES, Campaign, load_declaration
from fusion.store import Store

__all__ = [
    "SALT_BYTES",
    "CampaignRecord",
    "Promotion",
    "campaign_salts",
    "create_campaign",
    "get_campaign",
    "list_campaigns",
    "set_stage",
    "stage_history",
]

SALT_BYTES = 32
_COLUMNS = "campaign_id, version, declaration, stage, created_at, created_by, updated_at"


@dataclass(frozen=True)
class CampaignRecord:
    """A campaign as the store holds it (its salt stays in the store)."""

    campaign: Campaign
    version: int
    stage: str
    created_at: datetime
    created_by: str
    updated_at: datetime

    @property
    def campaign_id(self) -> str:
        return self.campaign.name

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (the declaration under "declaration")."""
        return {
            "campaign_id": self.campaign_id,
            "version": self.version,
            "stage": self.stage,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "declaration": self.campaign.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class Promotion:
    """One stage change: from, to, when, who, and the gate's checks."""

    from_stage: str
    to_stage: str
    promoted_at: datetime
    actor: str
    checks: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Return the promotion as JSON-ready data."""
        return {
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "promoted_at": self.promoted_at.isoformat(),
            "actor": self.actor,
            "checks": self.checks,
        }


def _record(row: tuple[Any, ...]) -> CampaignRecord:
    _, version, declaration, stage, created_at, created_by, updated_at = row
    campaign = load_declaration(json.loads(declaration))
    return CampaignRecord(campaign, int(version), stage, created_at, created_by, updated_at)


def create_campaign(
    store: Store,
    campaign: Campaign,
    *,
    actor: str,
    now: datetime,
    salt: bytes | None = None,
) -> tuple[CampaignRecord, bool]:
    """Return the stored campaign and whether this call changed the store.

    A new name is stored as a draft, version 1. The same document again changes nothing. A new
    document for a draft replaces it (version + 1); for a campaign past its draft it raises
    CampaignError, since its plans and readouts were made under the stored rules.
    """
    if salt is not None and len(salt) != SALT_BYTES:
        raise CampaignError(f"a campaign salt is {SALT_BYTES} bytes", campaign=campaign.name)
    document = campaign.canonical_json()
    stamp = now.replace(tzinfo=None)
    with store.transaction():
        row = store.execute(
            f"SELECT {_COLUMNS} FROM campaigns WHERE campaign_id = ?",  # noqa: S608
            [campaign.name],
        ).fetchone()
        if row is None:
            store.execute(
                "INSERT INTO campaigns VALUES (?, 1, ?, ?, 'draft', ?, ?, ?)",
                [campaign.name, document, salt or secrets.token_bytes(SALT_BYTES), stamp,
                 actor, stamp],
            )  # fmt: skip
            return get_campaign(store, campaign.name), True
        existing = _record(row)
        if existing.campaign.canonical_json() == document:
            return existing, False
        if existing.stage != "draft":
            raise CampaignError(
                f"campaign {campaign.name!r} is in stage {existing.stage!r}: its declaration is "
                "fixed once it leaves the draft, because its plans and readouts were made under "
                "it. Declare the change as a new campaign (another name), or close this one.",
                campaign=campaign.name,
            )
        store.execute(
            "UPDATE campaigns SET declaration = ?, version = version + 1, updated_at = ? "
            "WHERE campaign_id = ?",
            [document, stamp, campaign.name],
        )
    return get_campaign(store, campaign.name), True


def get_campaign(store: Store, campaign_id: str) -> CampaignRecord:
    """Return the stored campaign; CampaignError naming the known ones when there is none."""
    row = store.execute(
        f"SELECT {_COLUMNS} FROM campaigns WHERE campaign_id = ?",  # noqa: S608
        [campaign_id],
    ).fetchone()
    if row is None:
        known = [
            r[0] for r in store.execute("SELECT campaign_id FROM campaigns ORDER BY 1").fetchall()
        ]
        listed = ", ".join(known[:20]) if known else "none yet"
        raise CampaignError(
            f"there is no campaign {campaign_id!r} (known: {listed}); declare it first with "
            "`fusion campaign create FILE`",
            campaign=campaign_id,
        )
    return _record(row)


def list_campaigns(store: Store) -> list[CampaignRecord]:
    """Return every stored campaign, by name."""
    rows = store.execute(
        f"SELECT {_COLUMNS} FROM campaigns ORDER BY campaign_id"  # noqa: S608
    ).fetchall()
    return [_record(row) for row in rows]


def campaign_salts(store: Store, campaign_ids: list[str]) -> dict[str, bytes]:
    """Return the assignment salt of each campaign (for the planner only; never shown)."""
    rows = store.execute(
        "SELECT campaign_id, salt FROM campaigns WHERE list_contains(?, campaign_id)",
        [campaign_ids],
    ).fetchall()
    return {name: bytes(salt) for name, salt in rows}


def set_stage(
    store: Store,
    campaign_id: str,
    *,
    from_stage: str,
    to_stage: str,
    actor: str,
    now: datetime,
    checks: Mapping[str, Any],
) -> None:
    """Move the campaign from `from_stage` to `to_stage` and record who did it and why.

    Raises CampaignError when the stored stage is no longer `from_stage` (another promotion got
    there first), so two promotions cannot both pass one gate.
    """
    if to_stage not in STAGES:
        raise CampaignError(f"unknown stage {to_stage!r}; one of {', '.join(STAGES)}")
    stamp = now.replace(tzinfo=None)
    with store.transaction():
        changed = store.execute(
            "UPDATE campaigns SET stage = ?, updated_at = ? WHERE campaign_id = ? AND stage = ? "
            "RETURNING campaign_id",
            [to_stage, stamp, campaign_id, from_stage],
        ).fetchall()
        if not changed:
            current = get_campaign(store, campaign_id).stage
            raise CampaignError(
                f"campaign {campaign_id!r} is in stage {current!r}, not {from_stage!r}: another "
                "promotion changed it; read its stage again and retry",
                campaign=campaign_id,
            )
        store.execute(
            "INSERT INTO campaign_stages VALUES (?, ?, ?, ?, ?, ?)",
            [campaign_id, from_stage, to_stage, stamp, actor,
             json.dumps(dict(checks), sort_keys=True, default=str)],
        )  # fmt: skip


def stage_history(store: Store, campaign_id: str) -> list[Promotion]:
    """Return the campaign's promotions, oldest first."""
    rows = store.execute(
        "SELECT from_stage, to_stage, promoted_at, actor, checks FROM campaign_stages "
        "WHERE campaign_id = ? ORDER BY promoted_at, rowid",
        [campaign_id],
    ).fetchall()
    return [
        Promotion(a, b, at, actor, json.loads(checks) if checks else {})
        for a, b, at, actor, checks in rows
    ]
