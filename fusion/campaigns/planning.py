"""One plan: who enters each campaign's current stage in a window, and in which arm.

For the campaigns planned together (their stages and declarations read from the store):

    audience -> minus customers already assigned to the campaign -> screening (suppressions,
    complaints, frequency cap, cooling off, holders) -> the stage's entrants (the earliest in the
    campaign's keyed entry order: pilot = a share of the audience, A/B = the power calculation's
    size, full = the rest) -> arbitration across campaigns (one campaign per customer per window,
    channel capacity per branch) -> arms within strata (branch x decile) -> contact days

Every step runs over whole columns. The plan and its assignments are written in one transaction:
a killed plan leaves the store as it was, and planning the same stage and window again returns
the stored plan. Arms and entry order depend only on the campaign's salt and the customer id, so
a rerun after a kill draws the same customers into the same arms.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from contracts.errors import CampaignError
from fusion.campaigns.arbitration import ArbitrationPolicy, arbitrate
from fusion.campaigns.assignment import assign_arms, take_entrants
from fusion.campaigns.audience import AudienceInputs, resolve_audience
from fusion.campaigns.book import CampaignRecord, campaign_salts, get_campaign
from fusion.campaigns.declaration import Campaign
from fusion.campaigns.screening import ScreeningContext, screen
from fusion.campaigns.statistics import planned_size, sample_ratio
from fusion.store import Store

__all__ = [
    "PLANNED_STAGES",
    "CampaignPlan",
    "PlanResult",
    "plan_campaigns",
    "plan_id_of",
    "stage_quota",
]

PLANNED_STAGES = ("whitelist", "pilot", "ab", "full")
_ASSIGNMENT_COLUMNS = (
    "campaign_id", "customer_id", "plan_id", "stage", "arm", "branch_id", "decile", "stratum",
    "expected_value", "window_start", "window_end", "contact_day", "assigned_at",
)  # fmt: skip


@dataclass(frozen=True)
class CampaignPlan:
    """What one campaign's plan did: its window, its counts and what each rule removed."""

    plan_id: str
    campaign_id: str
    stage: str
    window_start: date
    window_end: date
    audience: int
    assigned: int
    treatment: int
    control: int
    removed: dict[str, int]
    srm_p_value: float | None
    stored_before: bool = False  # an earlier run made this plan; nothing was written now

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data."""
        return {
            "plan_id": self.plan_id,
            "campaign_id": self.campaign_id,
            "stage": self.stage,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "audience": self.audience,
            "assigned": self.assigned,
            "treatment": self.treatment,
            "control": self.control,
            "removed": self.removed,
            "srm_p_value": self.srm_p_value,
            "stored_before": self.stored_before,
        }


@dataclass(frozen=True)
class PlanResult:
    """The plans of one planning run, one per campaign."""

    plans: list[CampaignPlan]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {"plans": [p.to_dict() for p in self.plans], "seconds": self.seconds}


def stage_quota(campaign: Campaign, stage: str, *, audience: int, assigned: int) -> int | None:
    """Return how many new customers the stage may take (None: everyone left)."""
    if stage == "pilot":
        return max(0, round(campaign.stages.pilot_share * audience) - assigned)
    if stage == "ab":
        planned = planned_size(campaign)
        # A margin of 1% and 100 keeps both arms at their planned size after the assignment's
        # rounding (within one per branch) and the odd customer lost to arbitration.
        return max(0, math.ceil(planned.total * 1.01) + 100 - assigned)
    return None


def plan_id_of(campaign_id: str, version: int, stage: str, window_start: date) -> str:
    """Return the id of a campaign's plan for a stage and window (the same on every rerun)."""
    return f"{campaign_id}@v{version}:{stage}:{window_start.isoformat()}"


def plan_campaigns(
    store: Store,
    campaign_ids: Sequence[str],
    *,
    inputs: AudienceInputs,
    holders: pl.DataFrame,
    window_start: date,
    actor: str,
    now: datetime,
) -> PlanResult:
    """Return the plans of the campaigns' current stages for the window, written to the store.

    Campaigns in a stage with nothing to plan (draft, closed) raise CampaignError. A campaign
    whose plan for this stage and window exists is returned as stored; the others are planned
    together, so they compete for customers and channel capacity.
    """
    started = time.perf_counter()
    records = [get_campaign(store, name) for name in dict.fromkeys(campaign_ids)]
    for record in records:
        if record.stage not in PLANNED_STAGES:
            raise CampaignError(
                f"campaign {record.campaign_id!r} is in stage {record.stage!r}: there is nothing "
                "to plan. Promote a draft to the whitelist first (`fusion campaign promote`); a "
                "closed campaign is finished.",
                campaign=record.campaign_id,
            )
    stored = {r.campaign_id: _stored_plan(store, r, window_start) for r in records}
    todo = [r for r in records if stored[r.campaign_id] is None]
    plans = [p for p in stored.values() if p is not None]
    if todo:
        plans += _plan_new(store, todo, inputs, holders, window_start, actor, now)
    plans.sort(key=lambda p: p.campaign_id)
    return PlanResult(plans, time.perf_counter() - started)


def _stored_plan(store: Store, record: CampaignRecord, window_start: date) -> CampaignPlan | None:
    """Return the stored plan of the record's stage and window, or None."""
    plan_id = plan_id_of(record.campaign_id, record.version, record.stage, window_start)
    row = store.execute(
        "SELECT plan_id, campaign_id, stage, window_start, window_end, audience, assigned, "
        "treatment, control, removed, srm_p_value FROM plans WHERE plan_id = ?",
        [plan_id],
    ).fetchone()
    if row is None:
        return None
    plan_id, name, stage, start, end, audience, assigned, treated, control, removed, srm = row
    return CampaignPlan(
        plan_id, name, stage, start, end, audience, assigned, treated, control,
        json.loads(removed), srm, stored_before=True,
    )  # fmt: skip


def _plan_new(
    store: Store,
    records: list[CampaignRecord],
    inputs: AudienceInputs,
    holders: pl.DataFrame,
    window_start: date,
    actor: str,
    now: datetime,
) -> list[CampaignPlan]:
    """Plan the records' stages together and write them; return their plans."""
    names = [r.campaign_id for r in records]
    by_name = {r.campaign_id: r for r in records}
    salts = campaign_salts(store, names)
    window_end = {n: window_start + timedelta(days=by_name[n].campaign.window_days) for n in names}
    assigned_before = _assigned(store, names)
    removed: dict[str, dict[str, int]] = {n: {} for n in names}
    audiences: dict[str, int] = {}
    whitelist: list[pl.DataFrame] = []
    rest: list[pl.DataFrame] = []
    for record in records:
        frame = _stage_candidates(record, inputs)
        audiences[record.campaign_id] = frame.height
        before = assigned_before.filter(pl.col("campaign_id") == record.campaign_id)
        fresh = frame.join(before.select("customer_id"), on="customer_id", how="anti")
        removed[record.campaign_id]["already_assigned"] = frame.height - fresh.height
        (whitelist if record.stage == "whitelist" else rest).append(fresh)

    chosen = _contest(store, by_name, rest, assigned_before, salts, window_start, removed, inputs)
    if whitelist:
        named = pl.concat(whitelist).with_columns(expected_value=pl.lit(0.0))
        chosen.append(named)
    entrants = pl.concat(chosen) if chosen else _empty_arbitrated()
    arms = assign_arms(
        entrants,
        salts,
        {n: by_name[n].campaign.stage_control_share(by_name[n].stage) for n in names},
    )
    arms = _contact_days(store, arms, by_name, window_start)
    plans = []
    for name in names:
        record = by_name[name]
        mine = arms.filter(pl.col("campaign_id") == name)
        treated = int(mine.filter(pl.col("arm") == "treatment").height)
        control = mine.height - treated
        share = record.campaign.stage_control_share(record.stage)
        srm = (
            sample_ratio(treated, control, expected_control_share=share).p_value
            if 0 < share < 1 and mine.height
            else None
        )
        plans.append(
            CampaignPlan(
                plan_id_of(name, record.version, record.stage, window_start), name,
                record.stage, window_start, window_end[name], audiences[name], mine.height,
                treated, control, removed[name], srm,
            )
        )  # fmt: skip
    versions = {n: by_name[n].version for n in names}
    _write(store, plans, arms, actor=actor, now=now, versions=versions)
    return plans


def _stage_candidates(record: CampaignRecord, inputs: AudienceInputs) -> pl.DataFrame:
    """Return the candidates of the record's stage: the whitelist's named customers, else the
    resolved audience."""
    campaign = record.campaign
    if record.stage != "whitelist":
        return resolve_audience(campaign, inputs)
    named = pl.DataFrame(
        {"customer_id": campaign.stages.whitelist}, schema={"customer_id": pl.Int64}
    )
    known = inputs.customers.select("customer_id", "branch_id").join(named, on="customer_id")
    if known.height != named.height:
        raise CampaignError(
            f"{named.height - known.height} of the {named.height} whitelisted customers of "
            f"campaign {campaign.name!r} are not customers of the snapshot; fix "
            "stages.whitelist (it lists the bank's customer ids of the test customers)",
            campaign=campaign.name,
        )
    return known.with_columns(
        pl.lit(campaign.name).alias("campaign_id"),
        pl.lit(None, dtype=pl.Int8).alias("decile"),
        pl.lit(0.0).alias("expected_uplift"),
    ).select("campaign_id", "customer_id", "branch_id", "decile", "expected_uplift")


def _contest(
    store: Store,
    by_name: Mapping[str, CampaignRecord],
    frames: list[pl.DataFrame],
    assigned_before: pl.DataFrame,
    salts: Mapping[str, bytes],
    window_start: date,
    removed: dict[str, dict[str, int]],
    inputs: AudienceInputs,
) -> list[pl.DataFrame]:
    """Return the entrants of the non-whitelist campaigns after screening, quotas, arbitration."""
    if not frames:
        return []
    candidates = pl.concat(frames)
    names = sorted(set(candidates["campaign_id"].unique().to_list()) | {
        n for n, r in by_name.items() if r.stage != "whitelist"})  # fmt: skip
    context = _screening_context(store, inputs, window_start)
    screened = screen(candidates, {n: by_name[n].campaign.screening for n in names}, context)
    quotas = {}
    for name in names:
        record = by_name[name]
        mine = assigned_before.filter(pl.col("campaign_id") == name).height
        audience = int((candidates["campaign_id"] == name).sum()) + mine
        quotas[name] = stage_quota(record.campaign, record.stage, audience=audience, assigned=mine)
        removed[name].update(screened.removed.get(name, {}))
    entrants = take_entrants(screened.frame, salts, quotas)
    for name in names:
        left = int((screened.frame["campaign_id"] == name).sum())
        removed[name]["stage_quota"] = left - int((entrants["campaign_id"] == name).sum())
    policies = {n: _policy(by_name[n]) for n in names}
    days = max(by_name[n].campaign.window_days for n in names)
    arbitrated = arbitrate(
        entrants,
        policies,
        taken=_taken(store, window_start, window_start + timedelta(days=days)),
        used_slots=_used_slots(store, window_start, window_start + timedelta(days=days)),
        tiebreak_key=salts[names[0]].hex(),
    )
    for name in names:
        removed[name].update(arbitrated.removed.get(name, {}))
    return [arbitrated.frame]


def _policy(record: CampaignRecord) -> ArbitrationPolicy:
    campaign = record.campaign
    return ArbitrationPolicy(
        priority=campaign.priority,
        channel=campaign.channel.kind,
        capacity_per_branch_per_day=campaign.channel.capacity_per_branch_per_day,
        window_days=campaign.window_days,
        control_share=campaign.stage_control_share(record.stage),
        value=campaign.objective.value,
        cost_per_contact=campaign.objective.cost_per_contact,
    )


def _empty_arbitrated() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "campaign_id": pl.String, "customer_id": pl.Int64, "branch_id": pl.String,
            "decile": pl.Int8, "expected_uplift": pl.Float64, "expected_value": pl.Float64,
        }
    )  # fmt: skip


def _assigned(store: Store, names: list[str]) -> pl.DataFrame:
    """Return campaign_id, customer_id, stage of the customers already assigned to `names`."""
    return store.execute(
        "SELECT campaign_id, customer_id, stage FROM assignments "
        "WHERE list_contains(?, campaign_id)",
        [names],
    ).pl()


def _taken(store: Store, start: date, end: date) -> pl.DataFrame:
    """Return customer_id, campaign_id of assignments of live campaigns overlapping the window."""
    return store.execute(
        "SELECT a.customer_id, a.campaign_id FROM assignments a JOIN campaigns c "
        "ON c.campaign_id = a.campaign_id WHERE c.stage <> 'closed' "
        "AND a.window_start < ? AND a.window_end > ?",
        [end, start],
    ).pl()


def _used_slots(store: Store, start: date, end: date) -> pl.DataFrame:
    """Return channel, branch_id, used: treatment contacts already planned in the window."""
    planned = store.execute(
        "SELECT json_extract_string(c.declaration, '$.channel.kind') AS channel, a.branch_id, "
        "count(*) AS used FROM assignments a JOIN campaigns c ON c.campaign_id = a.campaign_id "
        "WHERE a.arm = 'treatment' AND a.contact_day >= ? AND a.contact_day < ? "
        "GROUP BY ALL",
        [start, end],
    ).pl()
    return planned.with_columns(pl.col("used").cast(pl.Int64))


def _screening_context(store: Store, inputs: AudienceInputs, day: date) -> ScreeningContext:
    """Return what screening reads: suppressions, touches (made and planned), complaints."""
    suppressions = store.execute(
        "SELECT list_name, customer_id, since, until FROM suppressions"
    ).pl()
    contacts = store.execute(
        "SELECT DISTINCT customer_id, source, channel, day FROM ("
        " SELECT customer_id, source, channel, day FROM contacts"
        " UNION ALL"
        " SELECT a.customer_id, a.campaign_id, json_extract_string(c.declaration,"
        "  '$.channel.kind'), a.contact_day FROM assignments a JOIN campaigns c"
        "  ON c.campaign_id = a.campaign_id WHERE a.arm = 'treatment' AND a.contact_day IS NOT NULL"
        ")"
    ).pl()
    complaints = store.execute(
        "SELECT customer_id, occurred_at FROM outcome_events WHERE event = 'complained'"
    ).pl()
    return ScreeningContext(
        day=day,
        suppressions=suppressions,
        contacts=contacts,
        complaints=complaints,
        holders=inputs.customers,
    )


def _contact_days(
    store: Store, arms: pl.DataFrame, by_name: Mapping[str, CampaignRecord], start: date
) -> pl.DataFrame:
    """Return `arms` with contact_day: treated customers spread over the window's days at each
    (channel, branch)'s capacity, best expected value first; control and whitelist: none."""
    channel = pl.col("campaign_id").replace_strict(
        {n: r.campaign.channel.kind for n, r in by_name.items()}, return_dtype=pl.String
    )
    capacity = pl.col("campaign_id").replace_strict(
        {n: r.campaign.channel.capacity_per_branch_per_day for n, r in by_name.items()},
        return_dtype=pl.Int64,
    )
    priority = pl.col("campaign_id").replace_strict(
        {n: r.campaign.priority for n, r in by_name.items()}, return_dtype=pl.Int64
    )
    used = _used_slots(store, start, start + timedelta(days=366))
    treated = (
        arms.filter(pl.col("arm") == "treatment")
        .with_columns(channel.alias("channel"), capacity.alias("capacity"), priority.alias("p"))
        .join(used, on=["channel", "branch_id"], how="left")
        .sort(["p", "expected_value", "customer_id"], descending=[False, True, False])
        .with_columns(
            (
                (pl.int_range(pl.len()).over("channel", "branch_id") + pl.col("used").fill_null(0))
                // pl.col("capacity")
            ).alias("offset")
        )
        .select(
            "campaign_id",
            "customer_id",
            (pl.lit(start) + pl.duration(days=pl.col("offset"))).cast(pl.Date).alias("contact_day"),
        )
    )
    return arms.join(treated, on=["campaign_id", "customer_id"], how="left")


def _write(
    store: Store,
    plans: list[CampaignPlan],
    arms: pl.DataFrame,
    *,
    actor: str,
    now: datetime,
    versions: Mapping[str, int],
) -> None:
    """Write the plans and their assignments in one transaction."""
    stamp = now.replace(tzinfo=None)
    by_campaign = {p.campaign_id: p for p in plans}
    rows = arms.with_columns(
        pl.col("campaign_id").replace_strict({n: p.plan_id for n, p in by_campaign.items()})
        .alias("plan_id"),
        pl.col("campaign_id").replace_strict({n: p.stage for n, p in by_campaign.items()})
        .alias("stage"),
        pl.col("campaign_id").replace_strict({n: p.window_start for n, p in by_campaign.items()},
                                             return_dtype=pl.Date).alias("window_start"),
        pl.col("campaign_id").replace_strict({n: p.window_end for n, p in by_campaign.items()},
                                             return_dtype=pl.Date).alias("window_end"),
        pl.lit(stamp).alias("assigned_at"),
    ).select(_ASSIGNMENT_COLUMNS)  # fmt: skip
    with store.transaction():
        for plan in plans:
            store.execute(
                "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [plan.plan_id, plan.campaign_id, versions[plan.campaign_id], plan.stage,
                 plan.window_start, plan.window_end, plan.audience, plan.assigned,
                 plan.treatment, plan.control, json.dumps(plan.removed, sort_keys=True),
                 plan.srm_p_value, stamp, actor],
            )  # fmt: skip
        store.insert_frame("assignments", rows)
