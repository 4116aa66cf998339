"""The demo's journeys: two strategies run over the journey world's 100 days, read out beside the
world's true effects.

    activation-push   new customers stuck before binding a card: a push three days into the
                      activate stage, a pop-up with an offer three days later if it was not
                      clicked (examples/journeys/activation-push.toml, priority 1)
    idle-sms          an SMS nudge after 14 idle days, checked again weekly
                      (examples/journeys/idle-sms.toml, priority 2)

Both are declared with two staff accounts as their whitelist (bank customers outside the
journey cohort, whose app events the demo loads as the staff's phones would send them, and who
confirm each touch they get), promoted draft -> whitelist -> pilot -> ab as each gate holds,
and left in the A/B test with its held-out control for the rest of the 100 days. Each day:

    events = simulator.step(day, touches)      the world's events, answering yesterday's touches
    load_events(...)                           into the store, received the next morning
    promote when the gate holds                whitelist -> pilot -> ab
    run_journey_days(day, day)                 the engine; its touches go to the world next

Then each strategy is read out (reports/journeys/<strategy>/) and the world replays the
treatment arm's customers with and without the strategy's touches (`true_effects`): the
measured lift in stage conversion, its interval and the opt-outs are printed beside the truth.
Only this module and the world read the truth; the readout knows nothing of it.
"""

from __future__ import annotations

import time as clock
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import GateRefused
from contracts.journeys import JOURNEY_EVENT_LOG, LIFECYCLE_STAGES, MILESTONES, STAGE_OF_MILESTONE
from fusion.journeys.book import create_strategy, get_strategy, promote_strategy
from fusion.journeys.events import load_events
from fusion.journeys.strategy import Strategy, load_strategy
from fusion.pipeline.bank import Bank
from fusion.pipeline.journeys import JourneyReadoutFiles, journey_readouts, run_journey_days
from fusion.progress import Progress, report_to
from labs.world import JourneyConfig, JourneySimulator, WorldFiles
from matcher.keyed_hash import hmac_digest

__all__ = [
    "DEMO_STRATEGIES",
    "EXAMPLES",
    "DemoJourneys",
    "JourneyTruth",
    "conversion_event",
    "demo_strategy",
    "run_journeys",
]

DEMO_STRATEGIES = ("activation-push", "idle-sms")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "journeys"
_ACTOR = "demo-marketer"
_TARGET = "ab"  # the strategies stay in the A/B test, with its hold-out, to the end
_STAFF = 2


@dataclass(frozen=True)
class JourneyTruth:
    """What the world really did to a strategy's treatment arm (`labs.world.true_effects`)."""

    treated: int  # treatment-arm customers of the cohort, replayed
    conversion_event: str  # the milestone that moves an entrant to the next lifecycle stage
    conversion: float  # its rate with the strategy's touches minus without
    goal: float  # the goal milestone's rate, with minus without
    opt_out: float  # the opt-out rate the strategy caused

    def to_dict(self) -> dict[str, Any]:
        """Return the truth as JSON-ready data."""
        return {
            "treated": self.treated,
            "conversion_event": self.conversion_event,
            "true_conversion_effect": self.conversion,
            "true_goal_effect": self.goal,
            "true_opt_out_effect": self.opt_out,
        }


@dataclass(frozen=True)
class DemoJourneys:
    """Every strategy's readout, its truth, the stage log, and the backfill's figures."""

    readouts: dict[str, JourneyReadoutFiles]
    truth: dict[str, JourneyTruth]
    log: list[str]
    days: int
    delivered: int
    held_out: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the journeys as demo-summary.json holds them."""
        strategies = {
            name: {"readout": self.readouts[name].to_dict(), "truth": self.truth[name].to_dict()}
            for name in self.readouts
        }
        return {
            **strategies,
            "days": self.days,
            "delivered": self.delivered,
            "held_out": self.held_out,
            "seconds": self.seconds,
            "log": self.log,
        }


def demo_strategy(name: str, whitelist: list[int]) -> Strategy:
    """Return the example strategy `name` with `whitelist` as its named staff accounts."""
    document = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    document["stages"]["whitelist"] = whitelist
    return load_strategy(document)


def conversion_event(strategy: Strategy) -> str:
    """Return the milestone whose reaching is the readout's stage conversion for an entrant:
    the first milestone of the stage after the one the strategy's customers enter in."""
    entry = strategy.entry()
    stage = entry.stage or STAGE_OF_MILESTONE.get(entry.event or "", LIFECYCLE_STAGES[0])
    following = LIFECYCLE_STAGES[min(LIFECYCLE_STAGES.index(stage) + 1, len(LIFECYCLE_STAGES) - 1)]
    return next(m for m in MILESTONES if STAGE_OF_MILESTONE[m] == following)


def _morning(day: date) -> datetime:
    """Return when the bank has received a day's events: the next morning, before any new one."""
    return datetime.combine(day + timedelta(days=1), time(6), tzinfo=UTC)


def _staff(bank: Bank, world: WorldFiles, cohort: pl.DataFrame) -> list[int]:
    """Return the staff accounts: the first bank customers outside the journey cohort whom no
    campaign contacted (a campaign's contact would hold their touches back)."""
    customers = pl.read_parquet(world.customers, columns=["customer_id"]).sort("customer_id")
    contacted = bank.store.execute("SELECT DISTINCT customer_id FROM contacts").pl()
    outside = customers.join(cohort.select("customer_id"), on="customer_id", how="anti").join(
        contacted.cast({"customer_id": pl.Int64}), on="customer_id", how="anti"
    )
    return outside.head(_STAFF).get_column("customer_id").to_list()


def _staff_events(staff: list[int], start: date) -> pl.DataFrame:
    """Return the staff's app events: installed, opened and registered four weeks before."""
    rows = [
        (
            f"staff:{who}:{event}",
            who,
            event,
            datetime.combine(start - timedelta(days=30 - i), time(9)),
            None,
        )
        for who in staff
        for i, event in enumerate(MILESTONES[:3])
    ]
    return pl.DataFrame(rows, schema=JOURNEY_EVENT_LOG.polars_schema, orient="row")


def _confirmations(touches: pl.DataFrame, staff: list[int], day: date) -> pl.DataFrame:
    """Return the staff's exposure events for the touches they get on `day` (they confirm)."""
    mine = touches.filter(pl.col("customer_id").is_in(staff))
    return mine.select(
        pl.format("{}:exposure", pl.col("touch_id")).alias("event_key"),
        "customer_id",
        pl.lit("exposure").alias("event"),
        pl.lit(datetime.combine(day, time(9, 30))).cast(pl.Datetime("us")).alias("occurred_at"),
        "touch_id",
    )


def _promote(bank: Bank, name: str, day: date, log: list[str]) -> None:
    """Promote the strategy toward the A/B test when its gate holds; log what moved."""
    while get_strategy(bank.store, name).stage != _TARGET:
        try:
            moved = promote_strategy(bank.store, name, actor=_ACTOR, now=_morning(day))
        except GateRefused:
            return
        checks = "; ".join(f"{c.name}: {c.detail}" for c in moved.checks)
        log.append(f"{day} {name}: {moved.from_stage} -> {moved.to_stage} ({checks})")


def run_journeys(
    bank: Bank, world: WorldFiles, *, seed: int, progress: Progress | None = None
) -> DemoJourneys:
    """Return the demo strategies run over the journey world's days, read out beside the truth."""
    report = report_to(progress)
    started = clock.perf_counter()
    simulator = JourneySimulator(world, JourneyConfig())
    start = simulator.days[0]
    staff = _staff(bank, world, simulator.cohort)
    log: list[str] = []
    for name in DEMO_STRATEGIES:
        # A salt from the seed: the same seed draws the same arms (the product draws it at random).
        salt = hmac_digest(seed.to_bytes(8, "big"), f"demo-journey|{name}".encode())
        create_strategy(
            bank.store,
            demo_strategy(name, staff),
            actor=_ACTOR,
            now=_morning(start - timedelta(days=1)),
            salt=salt,
        )
        promoted = promote_strategy(
            bank.store, name, actor=_ACTOR, now=_morning(start - timedelta(days=1))
        )
        log.append(f"{start} {name}: {promoted.from_stage} -> {promoted.to_stage}")
    load_events(
        bank.store,
        _staff_events(staff, start),
        source="staff",
        now=_morning(start - timedelta(days=1)),
    )
    touches: pl.DataFrame | None = None
    delivered = held_out = 0
    for index, day in enumerate(simulator.days):
        events = simulator.step(day, touches)
        if touches is not None:
            events = pl.concat([events, _confirmations(touches, staff, day)])
        load_events(bank.store, events, source="journey-world", now=_morning(day))
        for name in DEMO_STRATEGIES:
            _promote(bank, name, day, log)
        ran = run_journey_days(bank.folder, bank.store, day, day, now=_morning(day)).runs[0]
        touches, delivered, held_out = (
            ran.touches,
            delivered + ran.touches.height,
            held_out + ran.held_out.height,
        )
        report("journeys: 100 days", (index + 1) / len(simulator.days))
    last = simulator.days[-1]
    readouts = journey_readouts(
        bank.folder, bank.store, as_of=last, now=_morning(last), strategy_ids=DEMO_STRATEGIES
    )
    truth = {name: _truth(bank, simulator, name) for name in DEMO_STRATEGIES}
    log.extend(_lines(readouts[name], truth[name]) for name in DEMO_STRATEGIES)
    return DemoJourneys(
        readouts,
        truth,
        log,
        len(simulator.days),
        delivered,
        held_out,
        clock.perf_counter() - started,
    )


def _truth(bank: Bank, simulator: JourneySimulator, name: str) -> JourneyTruth:
    """Return the world's true effects of the strategy on its treatment arm."""
    strategy = get_strategy(bank.store, name).strategy
    treated = bank.store.execute(
        "SELECT customer_id FROM journey_state WHERE strategy_id = ? AND arm = 'treatment'",
        [name],
    ).fetchall()
    effects = simulator.true_effects(name, customers=[row[0] for row in treated])
    effect = dict(effects.select("event", "effect").iter_rows())
    event = conversion_event(strategy)
    return JourneyTruth(
        treated=int(effects["customers"][0]) if effects.height else 0,
        conversion_event=event,
        conversion=float(effect[event]),
        goal=float(effect[strategy.goal]),
        opt_out=float(effect["opt_out"]),
    )


def _lines(result: JourneyReadoutFiles, truth: JourneyTruth) -> str:
    """Return the log's line of a readout beside the world's truth."""
    found = result.readout.comparisons.get("converted")
    measured = (
        f"{found.diff * 100:+.2f} points ({found.diff_ci_low * 100:+.2f} to "
        f"{found.diff_ci_high * 100:+.2f})"
        if found
        else "withheld (a cell under k)"
    )
    harm = result.opt_outs.comparison if result.opt_outs else None
    bound = "at least " if result.opt_outs and result.opt_outs.control_withheld else ""
    opt_outs = (
        f"{bound}{harm.diff * 100:+.2f} points ({harm.diff_ci_low * 100:+.2f} to "
        f"{harm.diff_ci_high * 100:+.2f})"
        if harm
        else "withheld (a cell under k)"
    )
    return (
        f"{result.readout.strategy_id}: stage conversion ({truth.conversion_event}) {measured}, "
        f"truth {truth.conversion * 100:+.2f}; opt-outs {opt_outs}, truth "
        f"{truth.opt_out * 100:+.2f}"
    )
