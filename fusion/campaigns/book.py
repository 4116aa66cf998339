"""Campaigns in the store: declared once, read back, moved from stage to stage with a history.

A campaign is created in stage `draft` with a random 32-byte salt that keys its assignment (never
shown, never exported). While it is a draft, declaring it again replaces the declaration and
counts a new version; once it has left the draft its declaration is fixed, so every plan and
readout of it reads the same rules. Declaring the same document again is harmless. The store
side, stage changes included (`move_stage`), is `fusion.campaigns.staging`, which journey
strategies share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fusion.campaigns.declaration import Campaign, load_declaration
from fusion.campaigns.staging import (
    SALT_BYTES,
    Book,
    Promotion,
    Stored,
    declaration_salts,
    promotions,
    read_declaration,
    read_declarations,
    store_declaration,
)
from fusion.store import Store

__all__ = [
    "CAMPAIGN_BOOK",
    "SALT_BYTES",
    "CampaignRecord",
    "Promotion",
    "campaign_salts",
    "create_campaign",
    "get_campaign",
    "list_campaigns",
    "stage_history",
]

CAMPAIGN_BOOK: Book[Campaign] = Book(
    noun="campaign",
    table="campaigns",
    key="campaign_id",
    history_table="campaign_stages",
    load=load_declaration,
    made_under="its plans and readouts",
    declare_hint=" with `fusion campaign create FILE`",
    close_hint=" with `fusion campaign close`",
)
"""Where campaigns live in the store (`fusion.campaigns.staging`)."""


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


def _record(stored: Stored[Campaign]) -> CampaignRecord:
    return CampaignRecord(
        stored.declared,
        stored.version,
        stored.stage,
        stored.created_at,
        stored.created_by,
        stored.updated_at,
    )


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
    stored, changed = store_declaration(
        store, CAMPAIGN_BOOK, campaign, actor=actor, now=now, salt=salt
    )
    return _record(stored), changed


def get_campaign(store: Store, campaign_id: str) -> CampaignRecord:
    """Return the stored campaign; CampaignError naming the known ones when there is none."""
    return _record(read_declaration(store, CAMPAIGN_BOOK, campaign_id))


def list_campaigns(store: Store) -> list[CampaignRecord]:
    """Return every stored campaign, by name."""
    return [_record(stored) for stored in read_declarations(store, CAMPAIGN_BOOK)]


def campaign_salts(store: Store, campaign_ids: list[str]) -> dict[str, bytes]:
    """Return the assignment salt of each campaign (for the planner only; never shown)."""
    return declaration_salts(store, CAMPAIGN_BOOK, campaign_ids)


def stage_history(store: Store, campaign_id: str) -> list[Promotion]:
    """Return the campaign's promotions, oldest first."""
    return promotions(store, CAMPAIGN_BOOK, campaign_id)
