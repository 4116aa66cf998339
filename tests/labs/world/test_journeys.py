"""The journey world: a cohort's days, answers to touches and the true effects of strategies.

One 40-day run of the package's world with a toy engine (a card-binding push to the registered
customers without a card on days 8 and 18, an SMS to every customer of the cohort on day 12; a
third of each held out) serves most tests.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from contracts.journeys import (
    ANSWER_EVENTS,
    JOURNEY_EVENT_LOG,
    JOURNEY_EVENTS,
    JOURNEY_TOUCHES,
    MILESTONES,
)
from labs.world import WorldFiles, WorldSummary
from labs.world.errors import WorldError
from labs.world.journeys import JourneyConfig, JourneySimulator, customer_effects, true_effects

CONFIG = JourneyConfig(days=40, cohort_share=0.2, intake_days=7, seed=3)
PUSH_DAYS = (8, 18)
SMS_DAY = 12

Policy = Callable[[date, pl.DataFrame, pl.DataFrame], pl.DataFrame | None]


@dataclass(frozen=True)
class Run:
    simulator: JourneySimulator
    events: list[pl.DataFrame]  # one frame per day

    @property
    def log(self) -> pl.DataFrame:
        return pl.concat(self.events)


def _touches(strategy: str, channel: str, ids: list[int], day: date) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "touch_id": [f"{strategy}-{day}-{i}" for i in ids],
            "strategy_id": strategy,
            "node_id": "n1",
            "customer_id": ids,
            "branch_id": "B001",
            "channel": channel,
            "content_id": f"{strategy}-content",
            "offer_id": "none",
            "day": day,
            "arm": ["control" if i % 3 == 0 else "treatment" for i in ids],
        },
        schema=JOURNEY_TOUCHES.polars_schema,
    )


def toy_engine(day: date, log: pl.DataFrame, cohort: pl.DataFrame) -> pl.DataFrame | None:
    """Return the touches of `day`, read from the log up to that day and the cohort."""
    t = CONFIG.day_index(day)
    registered = log.filter(pl.col("event") == "register")["customer_id"]
    bound = log.filter(pl.col("event") == "bind_card")["customer_id"]
    parts = []
    if t in PUSH_DAYS:
        stuck = registered.filter(~registered.is_in(bound.implode())).sort().to_list()
        parts.append(_touches("push", "app_push", stuck, day))
    if t == SMS_DAY:
        parts.append(_touches("sms", "sms", cohort["customer_id"].to_list(), day))
    return pl.concat(parts) if parts else None


def simulate(world: WorldFiles, config: JourneyConfig, policy: Policy, days: int) -> Run:
    """Return a run: the touches the policy emits on day d are handed to the step of d + 1."""
    simulator = JourneySimulator(world, config)
    events: list[pl.DataFrame] = []
    touches = None
    for day in simulator.days[:days]:
        events.append(simulator.step(day, touches))
        touches = policy(day, pl.concat(events), simulator.cohort)
    return Run(simulator, events)


@pytest.fixture(scope="module")
def files(world: tuple[WorldFiles, WorldSummary]) -> WorldFiles:
    return world[0]


@pytest.fixture(scope="module")
def run(files: WorldFiles) -> Run:
    return simulate(files, CONFIG, toy_engine, CONFIG.days)


def test_the_cohort_is_the_worlds_unregistered_customers(run: Run, customers: pl.DataFrame):
    cohort = run.simulator.cohort
    assert cohort.height == round(CONFIG.cohort_share * customers.height)
    joined = cohort.join(customers, on="customer_id", how="left")
    assert joined["mb_registered"].null_count() == 0
    assert not joined["mb_registered"].any()
    assert (joined["branch_id"] == joined["branch_id_right"]).all()
    days = cohort.select((pl.col("entered_on") - CONFIG.start).dt.total_days()).to_series()
    assert days.min() == 0 and days.max() == CONFIG.intake_days - 1
    assert cohort["customer_id"].is_sorted()


def test_same_seed_same_bytes(files: WorldFiles, run: Run):
    again = simulate(files, CONFIG, toy_engine, 20)

    def ipc(frames: list[pl.DataFrame]) -> bytes:
        sink = io.BytesIO()
        pl.concat(frames).write_ipc(sink)
        return sink.getvalue()

    assert ipc(again.events) == ipc(run.events[:20])
    other = simulate(files, replace(CONFIG, seed=4), toy_engine, 20)
    assert ipc(other.events) != ipc(run.events[:20])


def test_events_follow_the_event_log_schema(run: Run):
    for day, frame in zip(run.simulator.days, run.events, strict=True):
        JOURNEY_EVENT_LOG.check(frame)
        assert (frame["occurred_at"].dt.date() == day).all()
        assert frame["occurred_at"].is_sorted()
    log = run.log
    assert set(log["event"].unique()) == set(JOURNEY_EVENTS)
    answers = log["event"].is_in(ANSWER_EVENTS)
    assert (log["touch_id"].is_not_null() == answers).all()
    assert log["event_key"].is_unique().all()
    assert log.filter(pl.col("event") == "opt_out").height > 0


def test_milestones_come_in_order_after_entering(run: Run):
    log = run.log.join(run.simulator.cohort, on="customer_id")
    assert (log["occurred_at"].dt.date() >= log["entered_on"]).all()
    milestones = (
        log.filter(pl.col("event").is_in(MILESTONES))
        .with_columns(k=pl.col("event").replace_strict(MILESTONES, range(len(MILESTONES))))
        .sort("customer_id", "occurred_at")
        .group_by("customer_id", maintain_order=True)
        .agg("k")
    )
    for reached in milestones["k"].to_list():
        assert reached == list(range(len(reached)))
    registered = log.filter(pl.col("event") == "register").select(
        "customer_id", on=pl.col("occurred_at").dt.date()
    )
    logins = log.filter(pl.col("event") == "login").join(registered, on="customer_id", how="left")
    assert (logins["occurred_at"].dt.date() > logins["on"]).all()


def test_answers_name_delivered_treatment_touches(run: Run):
    delivered = run.simulator.delivered()
    assert (delivered["arm"] == "control").sum() > 100  # held out: recorded, never answered
    answered = run.log.filter(pl.col("touch_id").is_not_null()).join(
        delivered, on="touch_id", how="left"
    )
    assert answered["arm"].null_count() == 0
    assert (answered["arm"] == "treatment").all()
    assert (answered["customer_id"] == answered["customer_id_right"]).all()
    assert (answered["occurred_at"].dt.date() == answered["delivered_on"]).all()
    assert (answered["delivered_on"] == answered["day"] + timedelta(days=1)).all()
    # Clicks and opt-outs follow the exposure of their touch.
    exposed = answered.filter(pl.col("event") == "exposure").select("touch_id", seen="occurred_at")
    later = answered.filter(pl.col("event") != "exposure").join(exposed, on="touch_id", how="left")
    assert (later["occurred_at"] > later["seen"]).all()


def test_events_of_a_day_do_not_depend_on_touches_of_that_day_or_later(files: WorldFiles, run: Run):
    cut = 15

    def earlier_only(day: date, log: pl.DataFrame, cohort: pl.DataFrame) -> pl.DataFrame | None:
        return toy_engine(day, log, cohort) if CONFIG.day_index(day) < cut else None

    def extra_sms(day: date, log: pl.DataFrame, cohort: pl.DataFrame) -> pl.DataFrame | None:
        touches = toy_engine(day, log, cohort)
        if CONFIG.day_index(day) != cut:
            return touches
        ids = cohort["customer_id"].to_list()
        return pl.concat([t for t in (touches, _touches("more", "sms", ids, day)) if t is not None])

    for policy in (earlier_only, extra_sms):
        other = simulate(files, CONFIG, policy, 25)
        for t in range(25):
            if t <= cut:
                assert other.events[t].equals(run.events[t]), (policy.__name__, t)
        assert not pl.concat(other.events[cut + 1 :]).equals(pl.concat(run.events[cut + 1 : 25]))


def test_the_world_refuses_touches_from_the_future_and_skipped_days(files: WorldFiles):
    simulator = JourneySimulator(files, replace(CONFIG, cohort_share=0.01))
    start = CONFIG.start
    customer = simulator.cohort["customer_id"][0]
    with pytest.raises(WorldError, match="dated after"):
        simulator.step(start, _touches("push", "app_push", [customer], start + timedelta(days=1)))
    with pytest.raises(WorldError, match="expected 2026-10-01"):
        simulator.step(start + timedelta(days=1))
    simulator.step(start)
    bad = _touches("push", "fax", [customer], start).with_columns(channel=pl.lit("fax"))
    with pytest.raises(WorldError, match="outside in_app_popup"):
        simulator.step(start + timedelta(days=1), bad)
    with pytest.raises(WorldError, match="lack day"):
        simulator.step(start + timedelta(days=1), bad.drop("day"))
    with pytest.raises(WorldError, match="cohort_share"):
        JourneyConfig(cohort_share=0.0)


def _treated(run: Run, strategy: str) -> list[int]:
    delivered = run.simulator.delivered()
    own = delivered.filter((pl.col("strategy_id") == strategy) & (pl.col("arm") == "treatment"))
    return own["customer_id"].unique().to_list()


@pytest.fixture(scope="module")
def push_effects(run: Run) -> pl.DataFrame:
    return run.simulator.customer_effects("push", customers=_treated(run, "push"))


@pytest.fixture(scope="module")
def sms_effects(run: Run) -> pl.DataFrame:
    return run.simulator.customer_effects("sms", customers=_treated(run, "sms"))


def _gain(frame: pl.DataFrame, event: str) -> float:
    """Return the share reaching `event` with the touches less the share without."""
    gained = (frame[f"{event}_with"] > 0).cast(pl.Float64) - (frame[f"{event}_without"] > 0)
    return float(gained.mean())  # type: ignore[arg-type]


def test_the_push_works_on_commuters_and_little_on_others(push_effects: pl.DataFrame):
    commuters = push_effects.filter(pl.col("persona") == "commuter")
    others = push_effects.filter(pl.col("persona") != "commuter")
    assert commuters.height >= 40
    assert _gain(commuters, "bind_card") > 0.12
    assert 0.0 <= _gain(others, "bind_card") < _gain(commuters, "bind_card") / 3
    # The push moves no one backwards (common random numbers: a boost only brings steps earlier).
    assert (push_effects["bind_card_with"] >= push_effects["bind_card_without"]).all()


def test_the_sms_brings_the_young_back_and_drives_seniors_away(sms_effects: pl.DataFrame):
    seniors = sms_effects.filter(pl.col("persona") == "senior")
    young = sms_effects.filter(pl.col("age") < 30)
    middle = sms_effects.filter(pl.col("age").is_between(30, 54) & (pl.col("persona") != "senior"))
    assert seniors.height >= 100 and young.height >= 100
    assert _gain(seniors, "opt_out") > 0.08
    assert _gain(seniors, "opt_out") > 3 * _gain(young, "opt_out")
    logins = {
        name: float((frame["login_with"] - frame["login_without"]).mean())  # type: ignore[arg-type]
        for name, frame in (("young", young), ("middle", middle))
    }
    assert 0 < logins["middle"] < logins["young"]
    # Seniors do less: fewer log-ins and milestones with the SMS than without.
    active = ("login", *MILESTONES)
    change = seniors.select(
        pl.sum_horizontal(f"{e}_with" for e in active)
        - pl.sum_horizontal(f"{e}_without" for e in active)
    ).to_series()
    assert change.mean() < 0  # type: ignore[operator]


def test_the_truth_equals_a_direct_simulation_without_the_touches(files: WorldFiles, run: Run):
    delivered = run.simulator.delivered()
    effects = customer_effects(
        files,
        delivered,
        strategy_id="push",
        until=run.simulator.days[-1],
        config=CONFIG,
    )
    assert effects.height == len(set(_treated(run, "push")))

    def replayed(strategies: tuple[str, ...]) -> Policy:
        def policy(day: date, log: pl.DataFrame, cohort: pl.DataFrame) -> pl.DataFrame | None:
            del log, cohort
            kept = delivered.filter(
                (pl.col("delivered_on") == day + timedelta(days=1))
                & pl.col("strategy_id").is_in(strategies)
            )
            return kept.drop("delivered_on")

        return policy

    without = simulate(files, CONFIG, replayed(("sms",)), CONFIG.days).log
    again = simulate(files, CONFIG, replayed(("sms", "push")), CONFIG.days).log
    assert again.equals(run.log)
    for log, arm in ((without, "without"), (run.log, "with")):
        counted = (
            log.join(effects.select("customer_id", "since"), on="customer_id")
            .filter(pl.col("occurred_at").dt.date() >= pl.col("since"))
            .group_by("customer_id", "event")
            .len()
            .pivot("event", index="customer_id", values="len")
        )
        merged = effects.join(counted, on="customer_id", how="left")
        for event in JOURNEY_EVENTS:
            direct = merged[event].fill_null(0) if event in merged.columns else 0
            assert (merged[f"{event}_{arm}"] == direct).all(), (arm, event)


def test_true_effects_summarise_the_customer_effects(files: WorldFiles, run: Run):
    treated = _treated(run, "push")
    summary = run.simulator.true_effects("push", customers=treated)
    assert summary["event"].to_list() == list(JOURNEY_EVENTS)
    assert (summary["customers"] == len(treated)).all()
    row = summary.filter(pl.col("event") == "bind_card").row(0, named=True)
    assert row["effect"] == pytest.approx(row["rate_with"] - row["rate_without"])
    assert row["effect"] > 0.01
    loaded = true_effects(
        files,
        run.simulator.delivered(),
        strategy_id="push",
        until=run.simulator.days[-1],
        config=CONFIG,
        customers=np.array(treated),
    )
    assert loaded.equals(summary)
    opt_out = run.simulator.true_effects("sms").filter(pl.col("event") == "opt_out")
    assert opt_out["effect"][0] > 0.01  # the sms's; the pushes' opt-outs are in both lives
