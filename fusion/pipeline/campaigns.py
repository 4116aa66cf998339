"""The campaign loop on a run folder: what `fusion campaign ...`, the API and the demo call.

Each function takes the open `Bank` (run folder, keyring, store) and calls one step of
`fusion.campaigns`; none holds a rule of its own. Audiences read the newest feature snapshot
and the scores `fusion score` kept; an audience SELECT runs in the analyst sandbox on the
published head-office snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from contracts.errors import CampaignError
from fusion.campaigns.audience import AudienceInputs, value_tiers
from fusion.campaigns.book import CampaignRecord, create_campaign, get_campaign
from fusion.campaigns.declaration import Campaign, load_declaration
from fusion.campaigns.delivery import Delivery, deliver
from fusion.campaigns.metrics import read_metrics, record_metrics
from fusion.campaigns.outcomes import EventsRecorded, read_event_file, record_events
from fusion.campaigns.planning import PlanResult, plan_campaigns
from fusion.campaigns.readout import Readout, read_out, write_readout
from fusion.campaigns.stages import Promoted, close_campaign, promote
from fusion.features import TABLE_FILE
from fusion.pipeline.bank import Bank, published_snapshot_key
from fusion.pipeline.feature_tables import features_dir
from fusion.query import QueryScope, run_query

__all__ = [
    "CampaignReadout",
    "audience_inputs",
    "campaign_readout",
    "close",
    "declare_campaign",
    "deliver_campaign",
    "load_outcome_file",
    "plan_window",
    "promote_campaign",
    "readout_covariates",
    "record_campaign_metrics",
]

# The CUPAC covariate: the acquisition model's score, P(opens mobile banking), trained on data
# before any campaign assignment and kept for the whole base by `fusion score`.
_COVARIATE_SCORES = "acquisition.parquet"
_COVARIATE_NAME = "acquisition_score"


@dataclass(frozen=True)
class CampaignReadout:
    """A readout and the files it was written to."""

    readout: Readout
    files: dict[str, Path]


def audience_inputs(bank: Bank, *, snapshot: date | None = None) -> AudienceInputs:
    """Return what audiences read: the feature snapshot's customers, scores, store, sandbox."""
    folder = features_dir(bank.folder, snapshot)
    customers = pl.read_parquet(folder / TABLE_FILE)
    snapshot_date = date.fromisoformat(folder.name)
    return AudienceInputs(
        customers=customers,
        scores_dir=bank.folder.scores,
        store=bank.store,
        snapshot_date=snapshot_date,
        query=_sandbox(bank),
    )


def _sandbox(bank: Bank) -> Callable[[str], pl.DataFrame] | None:
    """Return a runner of analyst SQL on the head-office snapshot, or None before a publish."""
    path = bank.folder.snapshots / "head_office.duckdb"
    if not path.is_file():
        return None
    key = published_snapshot_key(bank.keyring, bank.folder.snapshots)

    def run(sql: str) -> pl.DataFrame:
        return run_query(path, sql, key=key, scope=QueryScope.head_office()).frame

    return run


def declare_campaign(
    bank: Bank,
    source: Path | str | Campaign,
    *,
    actor: str,
    now: datetime,
    salt: bytes | None = None,
) -> tuple[CampaignRecord, bool]:
    """Return the stored campaign declared by a TOML/JSON file or text, and whether it changed.

    `salt` keys a new campaign's assignment: random unless given (a simulation pins it so that
    the same seed draws the same arms).
    """
    campaign = source if isinstance(source, Campaign) else load_declaration(source)
    return create_campaign(bank.store, campaign, actor=actor, now=now, salt=salt)


def plan_window(
    bank: Bank,
    names: Sequence[str],
    *,
    window_start: date,
    actor: str,
    now: datetime,
    snapshot: date | None = None,
) -> PlanResult:
    """Return the plans of the campaigns' current stages for the window (planned together)."""
    if not names:
        raise CampaignError("name at least one campaign to plan")
    inputs = audience_inputs(bank, snapshot=snapshot)
    return plan_campaigns(
        bank.store, names, inputs=inputs, holders=inputs.customers, window_start=window_start,
        actor=actor, now=now,
    )  # fmt: skip


def promote_campaign(
    bank: Bank, name: str, *, actor: str, now: datetime, to_stage: str | None = None
) -> Promoted:
    """Return the promotion of the campaign to its next stage (its gate checked)."""
    return promote(bank.store, name, actor=actor, now=now, to_stage=to_stage)


def close(bank: Bank, name: str, *, actor: str, now: datetime) -> Promoted:
    """Return the closing of the campaign."""
    return close_campaign(bank.store, name, actor=actor, now=now)


def deliver_campaign(bank: Bank, name: str, *, now: datetime) -> Delivery:
    """Return the campaign's next delivery version (files under the run's deliveries/)."""
    return deliver(bank.store, name, out_dir=bank.folder.deliveries, now=now)


def load_outcome_file(bank: Bank, path: Path, *, source: str, now: datetime) -> EventsRecorded:
    """Return what recording the events of a CSV or Parquet file did."""
    return record_events(bank.store, read_event_file(path), source=source, now=now)


def record_campaign_metrics(bank: Bank, frame: pl.DataFrame, *, now: datetime) -> int:
    """Record per-customer amount metrics with their pre-period (`fusion.campaigns.metrics`)."""
    return record_metrics(bank.store, frame, now=now)


def readout_covariates(bank: Bank) -> pl.DataFrame | None:
    """Return the readout's CUPAC covariate: customer_id and the acquisition score (None before
    `fusion score`)."""
    path = bank.folder.scores / _COVARIATE_SCORES
    if not path.is_file():
        return None
    return pl.read_parquet(path, columns=["customer_id", "score"]).rename(
        {"score": _COVARIATE_NAME}
    )


def campaign_readout(
    bank: Bank,
    name: str,
    *,
    k: int = 10,
    out_dir: Path | None = None,
    snapshot: date | None = None,
) -> CampaignReadout:
    """Return the campaign's readout against its control, written as JSON, Parquet and HTML.

    Success is adjusted by the acquisition score (CUPAC), each recorded amount metric by its
    pre-period (CUPED); the unadjusted figures stay beside them.
    """
    record = get_campaign(bank.store, name)
    customers = pl.read_parquet(features_dir(bank.folder, snapshot) / TABLE_FILE)
    segments = value_tiers(customers).select(
        "customer_id", pl.format("V{}", pl.col("value_tier")).alias("segment")
    )
    assignments = (
        bank.store.execute(
            "SELECT campaign_id, customer_id, stage, arm, branch_id, decile, stratum, assigned_at "
            "FROM assignments WHERE campaign_id = ?",
            [name],
        )
        .pl()
        .join(segments, on="customer_id", how="left")
    )
    events = bank.store.execute(
        "SELECT campaign_id, customer_id, event, amount, occurred_at FROM outcome_events "
        "WHERE campaign_id = ?",
        [name],
    ).pl()
    readout = read_out(
        record.campaign, assignments, events, k=k, covariates=readout_covariates(bank),
        metrics=read_metrics(bank.store, name),
    )  # fmt: skip
    target = out_dir or bank.folder.reports / "campaigns" / name
    return CampaignReadout(readout, write_readout(readout, target))
