"""The demo's campaigns: two overlapping campaigns run through every stage on the synthetic world.

    rescue-call       customers the in-bank model rejects, the rescue model's top half of that
                      pool, called by the call centre to open mobile banking (priority 1)
    food-coupon-sms   the uplift model's top 30%, a food-delivery coupon by SMS (priority 2)

Both are declared, promoted draft -> whitelist -> pilot -> ab -> full, planned together at every
stage (they compete for the customers both audiences hold, and the rescue call wins), delivered,
executed by the world (`labs.world.execution`: contact ~87% as in the CRM case, responses drawn
from the world's true propensities and true uplift), read out against their control groups and
closed. The campaign clock is simulated (a stage's window, then 31 days for its outcomes to come
in, then the next stage), so the loop runs in seconds and the same seed gives the same files.

Only this module and the world's executor read the world's truth: the readout knows nothing of
it, and the summary prints the truth beside what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl

from contracts.errors import GateRefused
from fusion.campaigns.book import get_campaign
from fusion.campaigns.declaration import Campaign, load_declaration
from fusion.campaigns.outcomes import EVENT_SCHEMA, record_events
from fusion.campaigns.stages import gate_checks
from fusion.pipeline.bank import Bank
from fusion.pipeline.campaigns import (
    CampaignReadout,
    campaign_readout,
    close,
    declare_campaign,
    deliver_campaign,
    plan_window,
    promote_campaign,
    record_campaign_metrics,
)
from fusion.progress import Progress, report_to
from labs.world import WorldFiles
from labs.world.execution import BALANCE_METRIC, execute_balances, execute_campaign
from matcher.keyed_hash import hmac_digest

__all__ = ["DEMO_CAMPAIGNS", "CampaignTruth", "DemoCampaigns", "demo_declarations", "run_campaigns"]

DEMO_CAMPAIGNS = ("rescue-call", "food-coupon-sms")
_ACTOR = "demo-marketer"
_OBJECTIVES = {"rescue-call": "mobile_banking", "food-coupon-sms": "food_coupon"}
_MAX_AB_WINDOWS = 3
_HORIZON = timedelta(days=31)  # from a window's end until its outcomes are all reported


@dataclass(frozen=True)
class CampaignTruth:
    """What the world really did for one campaign's assigned customers (pilot, A/B, full)."""

    treated: int
    control: int
    true_lift: float  # mean over assigned of P(success | treated) - P(success | control)
    true_ratio: float  # mean P(success | treated) / mean P(success | control)
    true_incremental: float  # sum over the treated of the lift each one had
    true_aum_effect: float = 0.0  # mean over assigned of the expected AUM a treatment adds

    def to_dict(self) -> dict[str, Any]:
        """Return the truth as JSON-ready data."""
        return {
            "treated": self.treated,
            "control": self.control,
            "true_lift": self.true_lift,
            "true_ratio": self.true_ratio,
            "true_incremental": self.true_incremental,
            "true_aum_effect": self.true_aum_effect,
        }


@dataclass(frozen=True)
class DemoCampaigns:
    """Every campaign's readout (as JSON data), its files, its truth, and the stage log."""

    readouts: dict[str, CampaignReadout]
    truth: dict[str, CampaignTruth]
    log: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Return the campaigns as demo-summary.json holds them."""
        campaigns: dict[str, Any] = {
            name: {
                "readout": self.readouts[name].readout.to_dict(),
                "truth": self.truth[name].to_dict(),
                "files": {k: str(p) for k, p in self.readouts[name].files.items()},
            }
            for name in self.readouts
        }
        return {**campaigns, "log": self.log}


def demo_declarations(whitelist: list[int]) -> list[Campaign]:
    """Return the two demo campaigns, with `whitelist` as their named test customers."""
    common: dict[str, Any] = {"window_days": 28, "control_share": 0.5}
    rescue = {
        "name": "rescue-call",
        "description": "Call the customers the in-bank model rejects and the rescue model "
        "ranks highest, to open mobile banking.",
        "priority": 1,
        "objective": {"event": "converted", "value": 120.0, "cost_per_contact": 3.0,
                      "expected_uplift": 0.05},
        "audience": {"source": "model", "model": "rescue", "top_share": 0.5},
        "channel": {"kind": "call_centre", "capacity_per_branch_per_day": 60},
        "stages": {"whitelist": whitelist, "pilot_share": 0.05,
                   "ab": {"baseline_rate": 0.01, "minimum_detectable_effect": 0.02}},
        **common,
    }  # fmt: skip
    coupon = {
        "name": "food-coupon-sms",
        "description": "A food-delivery coupon by SMS to the customers it moves most.",
        "priority": 2,
        "objective": {"event": "responded", "value": 40.0, "cost_per_contact": 0.05,
                      "uplift_model": "uplift"},
        "audience": {"source": "model", "model": "uplift", "top_share": 0.3},
        "channel": {"kind": "sms", "capacity_per_branch_per_day": 2000},
        "stages": {"whitelist": whitelist, "pilot_share": 0.05,
                   "ab": {"baseline_rate": 0.05, "minimum_detectable_effect": 0.02}},
        **common,
    }  # fmt: skip
    return [load_declaration(rescue), load_declaration(coupon)]


def _at(day: date) -> datetime:
    return datetime.combine(day, time(9), tzinfo=UTC)


def run_campaigns(
    bank: Bank,
    world: WorldFiles,
    *,
    start: date,
    seed: int,
    progress: Progress | None = None,
) -> DemoCampaigns:
    """Return the demo campaigns run from `start` through every stage to their readouts."""
    report = report_to(progress)
    truth = pl.read_parquet(world.propensity)
    balances = pl.read_parquet(
        world.customers, columns=["customer_id", "aum_current", "aum_month_avg"]
    )
    whitelist = (
        pl.read_parquet(world.customers, columns=["customer_id"])["customer_id"].head(3).to_list()
    )
    log: list[str] = []
    for campaign in demo_declarations(whitelist):
        # A salt from the seed: the same seed draws the same arms (the product draws it at random).
        salt = hmac_digest(seed.to_bytes(8, "big"), f"demo-campaign|{campaign.name}".encode())
        declare_campaign(bank, campaign, actor=_ACTOR, now=_at(start), salt=salt)
    names = list(DEMO_CAMPAIGNS)
    day = start
    for stage in ("whitelist", "pilot", "ab", "full"):
        report(f"campaigns: {stage}", 0.0)
        names = [name for name in names if _promoted(bank, name, day, log)]
        if not names:
            break
        world_now = _World(truth, balances, seed)
        day = _run_stage(bank, names, world_now, day=day, stage=stage, log=log)
        if stage == "ab":
            day = _until_planned_size(bank, names, world_now, day=day, log=log)
        report(f"campaigns: {stage}", 1.0)
    names = list(DEMO_CAMPAIGNS)
    readouts, truths = {}, {}
    for name in names:
        readouts[name] = campaign_readout(bank, name)
        truths[name] = _truth(bank, name, truth, balances)
        log.extend(_adjusted_lines(readouts[name], truths[name]))
        close(bank, name, actor=_ACTOR, now=_at(day))
        log.append(f"{day} {name}: closed")
    return DemoCampaigns(readouts, truths, log)


def _promoted(bank: Bank, name: str, day: date, log: list[str]) -> bool:
    """Promote the campaign to its next stage; log and return False when its gate refuses."""
    try:
        promoted = promote_campaign(bank, name, actor=_ACTOR, now=_at(day))
    except GateRefused as refused:
        log.append(f"{day} {name}: stays in its stage, gate {refused.gate}: {refused}")
        return False
    log.append(f"{day} {name}: {promoted.from_stage} -> {promoted.to_stage}")
    return True


@dataclass(frozen=True)
class _World:
    """What executes the campaigns: the truth, the bank's balances and the seed."""

    truth: pl.DataFrame
    balances: pl.DataFrame  # customer_id, aum_current, aum_month_avg
    seed: int


def _run_stage(
    bank: Bank, names: list[str], world: _World, *, day: date, stage: str, log: list[str]
) -> date:
    """Plan the campaigns' stage for the window at `day`, deliver, execute; return the next day."""
    plans = plan_window(
        bank, names, window_start=day, actor=_ACTOR, now=_at(day - timedelta(days=1))
    )
    for plan in plans.plans:
        log.append(
            f"{day} {plan.campaign_id} {stage}: {plan.assigned:,} assigned "
            f"({plan.treatment:,} treated, {plan.control:,} control)"
        )
    end = day
    for name in names:
        delivery = deliver_campaign(bank, name, now=_at(day))
        log.append(f"{day} {name}: delivery v{delivery.version}, {delivery.rows:,} rows")
        assigned = bank.store.execute(
            "SELECT customer_id, arm, contact_day FROM assignments WHERE campaign_id = ? "
            "AND plan_id = ?",
            [name, next(p.plan_id for p in plans.plans if p.campaign_id == name)],
        ).pl()
        seed = world.seed * 1000 + len(log)
        events, effects = execute_campaign(
            assigned, world.truth, campaign_id=name, objective=_OBJECTIVES[name],  # type: ignore[arg-type]
            start=day, seed=seed,
        )  # fmt: skip
        window = next(p for p in plans.plans if p.campaign_id == name)
        end = max(end, window.window_end)
        # The events come in once the window's outcomes are all in: a success may follow a late
        # contact by three weeks, and one refused as "in the future" would bias the lift down.
        recorded = record_events(bank.store, events, source="world", now=_at(end + _HORIZON))
        if recorded.refused.height:
            log.append(f"{day} {name}: {recorded.refused.height} events refused")
        # The AUM month average of the month after the window, beside its pre-period.
        metrics, _ = execute_balances(
            effects, events, world.balances, campaign_id=name, objective=_OBJECTIVES[name],  # type: ignore[arg-type]
            measured_at=_at(window.window_end + _HORIZON), seed=seed,
        )  # fmt: skip
        record_campaign_metrics(bank, metrics, now=_at(window.window_end + _HORIZON))
    return end + _HORIZON


def _until_planned_size(
    bank: Bank, names: list[str], world: _World, *, day: date, log: list[str]
) -> date:
    """Plan further A/B windows for any campaign short of its planned size; return the day."""
    for _ in range(_MAX_AB_WINDOWS):
        short = [
            name
            for name in names
            if not all(
                check.passed
                for check in gate_checks(bank.store, get_campaign(bank.store, name))
                if check.name == "ab_size"
            )
        ]
        if not short:
            return day
        day = _run_stage(bank, short, world, day=day, stage="ab", log=log)
    return day


def _truth(bank: Bank, name: str, truth: pl.DataFrame, balances: pl.DataFrame) -> CampaignTruth:
    """Return the world's true effect on the campaign's assigned customers (whitelist aside)."""
    assigned = bank.store.execute(
        "SELECT customer_id, arm FROM assignments WHERE campaign_id = ? AND stage <> 'whitelist'",
        [name],
    ).pl()
    _, effects = execute_campaign(
        assigned.with_columns(pl.lit(None, dtype=pl.Date).alias("contact_day")),
        truth, campaign_id=name, objective=_OBJECTIVES[name],  # type: ignore[arg-type]
        start=date(2000, 1, 1), seed=0,
    )  # fmt: skip
    no_events = pl.DataFrame(schema=EVENT_SCHEMA)  # the truth is in the probabilities alone
    _, aum = execute_balances(
        effects, no_events, balances, campaign_id=name, objective=_OBJECTIVES[name],  # type: ignore[arg-type]
        measured_at=datetime(2000, 1, 1), seed=0,
    )  # fmt: skip
    treated = effects.filter(pl.col("arm") == "treatment")
    n = max(effects.height, 1)
    p_t = float(effects["p_treatment"].sum()) / n
    p_c = float(effects["p_control"].sum()) / n
    return CampaignTruth(
        treated=treated.height,
        control=effects.height - treated.height,
        true_lift=p_t - p_c,
        true_ratio=p_t / p_c if p_c > 0 else float("inf"),
        true_incremental=float((treated["p_treatment"] - treated["p_control"]).sum()),
        true_aum_effect=float(aum["effect"].sum()) / n,
    )


def _adjusted_lines(result: CampaignReadout, truth: CampaignTruth) -> list[str]:
    """Return the log's lines of the adjusted readout, each beside the world's truth."""
    readout = result.readout
    true = {readout.success_event: truth.true_lift, BALANCE_METRIC: truth.true_aum_effect}
    lines = []
    for a in readout.adjusted:
        scale, unit = (100.0, " points") if a.kind == "rate" else (1.0, "")
        est = a.adjusted
        lines.append(
            f"{readout.campaign} {a.metric}: unadjusted {a.unadjusted.estimate * scale:+,.2f} "
            f"({a.unadjusted.ci_low * scale:+,.2f} to {a.unadjusted.ci_high * scale:+,.2f}), "
            f"adjusted by {a.covariate} {est.estimate * scale:+,.2f} ({est.ci_low * scale:+,.2f}"
            f" to {est.ci_high * scale:+,.2f}){unit}; variance reduction "
            f"{a.variance_reduction:.1%}, interval narrower by {a.interval_narrowing:.1%}, "
            f"control saved {a.control_saved:,}; truth "
            f"{true.get(a.metric, float('nan')) * scale:+,.2f}"
        )
    return lines
