"""What a world grows from (`WorldConfig`) and what its generation measured (`WorldSummary`)."""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any

from contracts.errors import ConfigError
from contracts.taxonomy import CURRENT_VERSION, Taxonomy, load_taxonomy
from labs.world.errors import WorldError

__all__ = ["WorldConfig", "WorldSummary", "validated_taxonomy"]


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """How big the world is and the seed it grows from; everything else is fixed by the code."""

    customers: int = 100_000
    seed: int = 7
    vendor_ratio: float = 3.0  # vendor users per bank customer
    coverage: float = 0.65  # share of bank customers with a valid phone who are at the vendor
    snapshot_date: datetime.date = datetime.date(2026, 9, 30)
    taxonomy_version: str = CURRENT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready values (the date as ISO text)."""
        values = asdict(self)
        values["snapshot_date"] = self.snapshot_date.isoformat()
        return values


@dataclass(frozen=True, kw_only=True)
class WorldSummary:
    """Measured facts of a generated world, with the sha256 of every file it wrote."""

    bank_customers: int
    vendor_users: int
    true_coverage: float  # bank customers in truth/intersection (best identifier) over all
    label_rate: float  # opened mobile banking in the window, among customers not registered
    registered_rate: float  # already on mobile banking at the snapshot
    campaign_size: int
    campaign_treated_share: float
    campaign_response_treatment: float
    campaign_response_control: float
    persona_mix: dict[str, float]  # main persona -> share of vendor users
    invalid_phones: int
    duplicated_phones: int  # customers whose (valid) phone another customer also gives
    bad_id_checksums: int
    # True best-identifier matches by the identifier that links them; customers whose extract
    # gives an old number (labs.world.identifiers).
    matched_by: dict[str, int] = field(default_factory=dict)
    changed_numbers: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 hex
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready values."""
        return asdict(self)


def validated_taxonomy(config: WorldConfig) -> Taxonomy:
    """Return the config's taxonomy after checking every parameter; WorldError names the bad one."""
    problems = []
    if not isinstance(config.customers, int) or not 100 <= config.customers <= 50_000_000:
        problems.append(
            f"customers must be an integer in 100..50,000,000, got {config.customers!r}"
        )
    if not isinstance(config.seed, int) or config.seed < 0:
        problems.append(f"seed must be a non-negative integer, got {config.seed!r}")
    if not 0.0 <= config.coverage <= 1.0:
        problems.append(f"coverage must be a share in 0..1, got {config.coverage!r}")
    if not 1.0 <= config.vendor_ratio <= 20.0:
        problems.append(
            f"vendor_ratio must be within 1..20 (the vendor holds at least the covered "
            f"customers), got {config.vendor_ratio!r}"
        )
    if not isinstance(config.snapshot_date, datetime.date):
        problems.append(f"snapshot_date must be a datetime.date, got {config.snapshot_date!r}")
    if problems:
        raise WorldError("cannot generate the world: " + "; ".join(problems))
    try:
        return load_taxonomy(config.taxonomy_version)
    except ConfigError as error:
        raise WorldError(f"cannot generate the world: {error}") from error
