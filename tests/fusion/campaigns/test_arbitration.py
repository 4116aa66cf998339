"""Arbitration: one campaign per customer, priorities, the keyed tiebreak and channel capacity.

The property test draws small worlds (2-6 campaigns, shared or separate channels, overlapping
candidate sets with repeats, suppressions and contacts, earlier assignments, used slots), runs
screen -> arbitrate -> assign_arms and checks the result against a plain-Python reading of the
rules: exact rationals for the treated shares, full 32-byte HMACs for the tiebreak.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError
from fusion.campaigns.arbitration import OUTCOMES, ArbitrationPolicy, arbitrate
from fusion.campaigns.assignment import assign_arms
from fusion.campaigns.declaration import FrequencyCap, Screening
from fusion.campaigns.screening import ScreeningContext, screen
from matcher.keyed_hash import hmac_sha256

KEY = "tiebreak-key"
DAY = date(2026, 3, 2)
SCREENED_SCHEMA = {
    "campaign_id": pl.String,
    "customer_id": pl.Int64,
    "branch_id": pl.String,
    "decile": pl.Int8,
    "expected_uplift": pl.Float64,
}


def policy(
    priority: int = 1,
    channel: str = "sms",
    *,
    capacity: int = 1000,
    days: int = 28,
    control: float = 0.5,
    value: float = 100.0,
    cost: float = 1.0,
) -> ArbitrationPolicy:
    return ArbitrationPolicy(priority, channel, capacity, days, control, value, cost)


def screened(*rows: tuple[str, int, str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [(c, i, b, 1, u) for c, i, b, u in rows], schema=SCREENED_SCHEMA, orient="row"
    )


def taken(*pairs: tuple[int, str]) -> pl.DataFrame:
    return pl.DataFrame(
        list(pairs), schema={"customer_id": pl.Int64, "campaign_id": pl.String}, orient="row"
    )


def used(*rows: tuple[str, str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema={"channel": pl.String, "branch_id": pl.String, "used": pl.Int64},
        orient="row",
    )


def run(frame: pl.DataFrame, policies: dict[str, ArbitrationPolicy], **kw: pl.DataFrame):
    return arbitrate(
        frame,
        policies,
        taken=kw.get("taken", taken()),
        used_slots=kw.get("used_slots", used()),
        tiebreak_key=KEY,
    )


def digest(campaign: str, customer: int) -> bytes:
    return hmac_sha256(pl.Series([f"{campaign}|{customer}"]), KEY)[0]


def test_expected_value_is_uplift_times_value_less_cost():
    result = run(screened(("a", 1, "B1", 0.02)), {"a": policy(value=120.0, cost=2.5)})
    assert result.frame["expected_value"].to_list() == [pytest.approx(0.02 * 120.0 - 2.5)]
    assert result.frame.columns == [*SCREENED_SCHEMA, "expected_value"]


def test_priority_then_value_then_the_keyed_tiebreak():
    policies = {"a": policy(2), "b": policy(1), "c": policy(1), "d": policy(3), "e": policy(3)}
    frame = screened(
        ("a", 1, "B1", 0.5),
        ("b", 1, "B1", 0.0),  # priority 1 beats a's larger value
        ("b", 2, "B1", 0.01),
        ("c", 2, "B1", 0.02),  # same priority: the larger value wins
        ("d", 3, "B1", 0.01),
        ("e", 3, "B1", 0.01),  # full tie: the lower HMAC wins
    )
    result = run(frame, policies)
    winner = "d" if digest("d", 3) < digest("e", 3) else "e"
    assert result.frame.select("campaign_id", "customer_id").rows() == sorted(
        [("b", 1), ("c", 2), (winner, 3)]
    )
    assert sum(counts["lost_arbitration"] for counts in result.removed.values()) == 3


def test_taken_elsewhere_is_removed_taken_by_the_same_campaign_is_not():
    frame = screened(("a", 1, "B1", 0.01), ("a", 2, "B1", 0.01), ("b", 2, "B1", 0.01))
    result = run(frame, {"a": policy(1), "b": policy(2)}, taken=taken((1, "old"), (2, "b")))
    assert result.removed["a"] == {"assigned_elsewhere": 2, "lost_arbitration": 0, "capacity": 0}
    assert result.frame.select("campaign_id", "customer_id").rows() == [("b", 2)]


def test_capacity_counts_the_expected_treated_and_is_shared_by_a_channel():
    # 2 slots a day for 2 days, 1 used: 3 slots; with control 0.5 each row uses half a slot.
    policies = {
        "a": policy(1, "call_centre", capacity=2, days=2, control=0.5, value=10.0, cost=0.0),
        "b": policy(2, "call_centre", capacity=2, days=2, control=0.5, value=10.0, cost=0.0),
        "c": policy(1, "sms", capacity=1, days=1, control=0.0),
    }
    rows = [("a", i, "B1", 0.1 - i / 1000) for i in range(1, 5)]
    rows += [("b", i, "B1", 0.1) for i in range(5, 9)]
    rows += [("a", 9, "B2", 0.1), ("c", 10, "B1", 0.1), ("c", 11, "B1", 0.0)]
    result = run(screened(*rows), policies, used_slots=used(("call_centre", "B1", 1)))
    kept = result.frame.select("campaign_id", "customer_id").rows()
    a_b1 = [i for c, i in kept if c == "a" and i < 9]
    b_b1 = [i for c, i in kept if c == "b"]
    assert a_b1 == [1, 2, 3, 4] and len(b_b1) == 2  # 6 rows x 0.5 = 3 slots
    assert ("a", 9) in kept  # another branch has its own slots
    assert ("c", 10) in kept and ("c", 11) not in kept  # control 0: a whole slot each
    assert result.removed["b"]["capacity"] == 2 and result.removed["c"]["capacity"] == 1


def test_the_smallest_declared_window_applies_to_a_shared_channel():
    policies = {
        "a": policy(1, "sms", capacity=10, days=1, control=0.0),
        "b": policy(2, "sms", capacity=1, days=2, control=0.0),
    }
    rows = [("a", i, "B1", 0.1) for i in range(1, 5)]
    result = run(screened(*rows), policies)
    assert result.frame.height == 2 and result.removed["a"]["capacity"] == 2


def test_used_beyond_the_window_leaves_no_slot():
    result = run(
        screened(("a", 1, "B1", 0.1)),
        {"a": policy(capacity=1, days=1, control=0.0)},
        used_slots=used(("sms", "B1", 5)),
    )
    assert result.frame.height == 0 and result.removed["a"]["capacity"] == 1


def test_a_nan_value_ranks_last():
    frame = screened(("a", 1, "B1", float("nan")), ("b", 1, "B1", 0.0))
    result = run(frame, {"a": policy(1, value=10.0), "b": policy(1, value=10.0)})
    assert result.frame["campaign_id"].to_list() == ["b"]


def test_refusals():
    frame = screened(("a", 1, "B1", 0.1))
    with pytest.raises(ConfigError, match="no arbitration policy"):
        run(frame, {})
    with pytest.raises(ConfigError, match="repeats"):
        run(pl.concat([frame, frame]), {"a": policy()})
    other_value = screened(("a", 1, "B1", 0.2))
    with pytest.raises(ConfigError, match="repeats 1"):
        run(pl.concat([frame, other_value]), {"a": policy()})
    huge = screened(("a", 2**62, "B1", 0.1), ("a", 2**62, "B1", 0.3))
    with pytest.raises(ConfigError, match="repeats"):
        run(huge, {"a": policy(), "b": policy()})
    with pytest.raises(ConfigError, match="control_share"):
        run(frame, {"a": policy(control=1.5)})
    with pytest.raises(ConfigError, match="used_slots"):
        run(frame, {"a": policy()}, used_slots=pl.DataFrame({"channel": ["sms"]}))


def test_an_empty_frame_gives_zero_counts():
    result = run(screened(), {"a": policy()})
    assert result.frame.height == 0
    assert result.removed == {"a": dict.fromkeys(OUTCOMES, 0)}


# ---------------------------------------------------------------------------------------------
# The property test


@dataclass(frozen=True)
class World:
    policies: dict[str, ArbitrationPolicy]
    rules: dict[str, Screening]
    candidates: list[tuple[str, int, str, int | None, float]]
    suppressions: list[tuple[str, int, date, date | None]]
    contacts: list[tuple[int, str, str, date]]
    holders: list[tuple[int, bool]]
    taken: list[tuple[int, str]]
    used: list[tuple[str, str, int]]


CHANNELS = ("sms", "call_centre", "app_push")
BRANCHES = ("B1", "B2", "B3")


@st.composite
def worlds(draw: st.DrawFn) -> World:
    names = [f"c{k}" for k in range(draw(st.integers(2, 6)))]
    channels = draw(st.sampled_from([CHANNELS[:1], CHANNELS[:2], CHANNELS]))
    policies = {
        name: ArbitrationPolicy(
            priority=draw(st.integers(1, 3)),
            channel=draw(st.sampled_from(channels)),
            capacity_per_branch_per_day=draw(st.integers(1, 4)),
            window_days=draw(st.integers(1, 3)),
            control_share=draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.9])),
            value=draw(st.sampled_from([0.0, 50.0, 100.0])),
            cost_per_contact=draw(st.sampled_from([0.0, 0.5])),
        )
        for name in names
    }
    rules = {
        name: Screening(
            suppression_lists=draw(st.sampled_from([[], ["opt-out"], ["dnd", "opt-out"]])),
            complaint_months=0,
            frequency_cap=FrequencyCap(contacts=draw(st.integers(1, 3)), days=10),
            cooling_off_days=draw(st.sampled_from([0, 3])),
            exclude_holders=draw(st.sampled_from([[], ["mb"]])),
        )
        for name in names
    }
    people = list(range(1, draw(st.integers(1, 40)) + 1))
    branch = {i: draw(st.sampled_from(BRANCHES)) for i in people}
    candidates = []
    for name in names:
        for i in draw(st.lists(st.sampled_from(people), max_size=30)):  # repeats: duplicates
            decile = draw(st.sampled_from([None, 1, 2]))
            uplift = draw(st.sampled_from([-0.01, 0.0, 0.01, 0.02]))
            candidates.append((name, i, branch[i], decile, uplift))
    some = st.lists(st.sampled_from(people), max_size=8)
    ago = [DAY - timedelta(days=d) for d in (1, 2, 5, 12)]
    return World(
        policies=policies,
        rules=rules,
        candidates=candidates,
        suppressions=[
            (draw(st.sampled_from(["dnd", "opt-out"])), i, ago[3], None) for i in draw(some)
        ],
        contacts=[(i, "x", "sms", draw(st.sampled_from(ago))) for i in draw(some)],
        holders=[(i, draw(st.booleans())) for i in people],
        taken=[(i, draw(st.sampled_from([*names, "old"]))) for i in draw(some)],
        used=[
            (
                draw(st.sampled_from(CHANNELS)),
                draw(st.sampled_from(BRANCHES)),
                draw(st.integers(0, 6)),
            )
            for _ in range(draw(st.integers(0, 4)))
        ],
    )


def plan(world: World, shuffle: random.Random | None = None):
    """Screen, arbitrate and assign the world's rows (shuffled first when asked)."""

    def rows(values: list) -> list:
        values = list(values)
        if shuffle is not None:
            shuffle.shuffle(values)
        return values

    candidates = pl.DataFrame(rows(world.candidates), schema=SCREENED_SCHEMA, orient="row")
    context = ScreeningContext(
        day=DAY,
        suppressions=pl.DataFrame(
            rows(world.suppressions),
            schema={
                "list_name": pl.String,
                "customer_id": pl.Int64,
                "since": pl.Date,
                "until": pl.Date,
            },
            orient="row",
        ),
        contacts=pl.DataFrame(
            rows(world.contacts),
            schema={
                "customer_id": pl.Int64,
                "source": pl.String,
                "channel": pl.String,
                "day": pl.Date,
            },
            orient="row",
        ),
        complaints=pl.DataFrame(schema={"customer_id": pl.Int64, "occurred_at": pl.Datetime}),
        holders=pl.DataFrame(
            rows(world.holders), schema={"customer_id": pl.Int64, "mb": pl.Boolean}, orient="row"
        ),
    )
    screened_ = screen(candidates, world.rules, context)
    arbitrated = arbitrate(
        screened_.frame,
        world.policies,
        taken=pl.DataFrame(
            rows(world.taken),
            schema={"customer_id": pl.Int64, "campaign_id": pl.String},
            orient="row",
        ),
        used_slots=used(*rows(world.used)),
        tiebreak_key=KEY,
    )
    salts = {name: bytes([k + 1]) * 32 for k, name in enumerate(sorted(world.policies))}
    shares = {name: p.control_share for name, p in world.policies.items()}
    arms = assign_arms(arbitrated.frame, salts, shares)
    return screened_, arbitrated, arms


def slots(world: World) -> dict[tuple[str, str], Fraction]:
    """Return the slots of every (channel, branch) the rules give, as exact numbers."""
    window: dict[str, int] = {}
    for p in world.policies.values():
        size = p.capacity_per_branch_per_day * p.window_days
        window[p.channel] = min(window.get(p.channel, size), size)
    taken_slots: dict[tuple[str, str], int] = defaultdict(int)
    for channel, branch, n in world.used:
        taken_slots[channel, branch] += n
    return {
        (channel, branch): Fraction(max(0, size - taken_slots[channel, branch]))
        for channel, size in window.items()
        for branch in BRANCHES
    }


def reference_kept(world: World, screened_frame: pl.DataFrame) -> set[tuple[str, int]]:
    """Return the rows the rules keep, computed one row at a time in plain Python."""
    takers: dict[int, set[str]] = defaultdict(set)
    for customer, campaign in world.taken:
        takers[customer].add(campaign)

    def rank(row: dict) -> tuple:
        p = world.policies[row["campaign_id"]]
        value = row["expected_uplift"] * p.value - p.cost_per_contact
        return (p.priority, -value, digest(row["campaign_id"], row["customer_id"]))

    best: dict[int, dict] = {}
    for row in screened_frame.iter_rows(named=True):
        if takers[row["customer_id"]] - {row["campaign_id"]}:
            continue  # assigned elsewhere
        current = best.get(row["customer_id"])
        if current is None or rank(row) < rank(current):
            best[row["customer_id"]] = row
    left = slots(world)
    kept = set()
    full: set[tuple[str, str]] = set()
    taken: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in sorted(best.values(), key=rank):
        p = world.policies[row["campaign_id"]]
        group = (p.channel, row["branch_id"])
        share = 1 - Fraction(str(p.control_share))
        m = taken[(*group, row["campaign_id"])] + 1
        # The most assignment can treat of m rows of one campaign is ceil(share x m).
        weight = math.ceil(share * m) - math.ceil(share * (m - 1))
        if group in full or weight > left[group]:
            full.add(group)  # the rows are a prefix: once one does not fit, none after it
            continue
        left[group] -= weight
        taken[(*group, row["campaign_id"])] = m
        kept.add((row["campaign_id"], row["customer_id"]))
    return kept


@pytest.mark.slow  # over a second: out of the inner loop
@settings(max_examples=40, deadline=None)
@given(world=worlds(), seed=st.integers(0, 2**32 - 1))
def test_plans_follow_the_rules_whatever_the_world(world: World, seed: int):
    screened_, arbitrated, arms = plan(world)
    kept = arbitrated.frame.select("campaign_id", "customer_id").rows()

    # One campaign per customer, nobody taken by another campaign.
    customers = [i for _, i in kept]
    assert len(customers) == len(set(customers))
    takers = defaultdict(set)
    for customer, campaign in world.taken:
        takers[customer].add(campaign)
    assert not any(takers[i] - {c} for c, i in kept)

    # Priorities, values, tiebreak and capacity exactly as the rules read in plain Python. In
    # words: a customer kept in A who was also a candidate of B ranking above A was taken by
    # another campaign for B; a customer whose best row met a full channel is nowhere.
    assert set(kept) == reference_kept(world, screened_.frame)

    # The treated count after assignment never exceeds the slots.
    treated: dict[tuple[str, str], int] = defaultdict(int)
    for row in arms.filter(pl.col("arm") == "treatment").iter_rows(named=True):
        treated[world.policies[row["campaign_id"]].channel, row["branch_id"]] += 1
    limits = slots(world)
    assert all(n <= limits[group] for group, n in treated.items())

    # Every candidate row is accounted for once, across screening and arbitration.
    for name in world.policies:
        inputs = sum(1 for row in world.candidates if row[0] == name)
        mine = sum(1 for c, _ in kept if c == name)
        removed = sum(screened_.removed[name].values()) + sum(arbitrated.removed[name].values())
        assert inputs == mine + removed

    # Row order does not matter.
    again = plan(world, shuffle=random.Random(seed))
    assert again[1].frame.equals(arbitrated.frame)
    assert again[1].removed == arbitrated.removed
    assert again[0].removed == screened_.removed
    assert again[2].equals(arms)


def test_a_large_frame_in_any_row_order_gives_the_same_result():
    rng = random.Random(4)
    rows = [
        (c, i, f"B{i % 7}", rng.choice([0.0, 0.01, 0.02, rng.random()]))
        for c in ("a", "b", "c")
        for i in rng.sample(range(1, 30_000), 12_000)
    ]
    policies = {
        "a": policy(1, "sms", capacity=40, days=7, control=0.3),
        "b": policy(1, "sms", capacity=40, days=7, control=0.5),
        "c": policy(2, "call_centre", capacity=20, days=7, control=0.05),
    }
    old = taken(*((i, "old") for i in range(1, 30_000, 50)))
    frame = screened(*rows)
    first = run(frame, policies, taken=old, used_slots=used(("sms", "B1", 30)))
    again = run(
        frame.sample(fraction=1.0, shuffle=True, seed=1),
        policies,
        taken=old,
        used_slots=used(("sms", "B1", 30)),
    )
    assert first.frame.equals(again.frame) and first.removed == again.removed
    assert first.frame.select("campaign_id", "customer_id").equals(
        first.frame.select("campaign_id", "customer_id").sort("campaign_id", "customer_id")
    )
    counts = first.frame.group_by("campaign_id").len().sort("campaign_id")["len"].to_list()
    for name, kept in zip(sorted(policies), counts, strict=True):
        assert 12_000 == kept + sum(first.removed[name].values())
