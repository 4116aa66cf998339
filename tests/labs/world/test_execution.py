"""The world executes a campaign: deterministic, the funnel's rates, control never contacted,
the true intention-to-treat effect matching what is observed, and events a store accepts."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fusion.campaigns.outcomes import EVENT_SCHEMA, record_events
from fusion.store import Store
from labs.world import WorldConfig, generate_world, load_world
from labs.world.errors import WorldError
from labs.world.execution import (
    BALANCE_METRIC,
    TRUE_BALANCE_SCHEMA,
    TRUE_EFFECT_SCHEMA,
    ExecutionConfig,
    execute_balances,
    execute_campaign,
)
from tests.support.stores import store_config

START = date(2026, 9, 1)
N = 200_000
CONTACTS = ("delivered", "contacted", "reached", "complained", "opted_out")


def synthetic_truth(n: int, seed: int = 0) -> pl.DataFrame:
    """A propensity frame like the world's: registered customers have null probabilities."""
    rng = np.random.default_rng(seed)
    registered = rng.random(n) < 0.3
    p_open = rng.uniform(0.0, 0.8, n)  # some past the cap: 1.5 x 0.8 > 0.95
    p_control = rng.uniform(0.01, 0.10, n)
    p_treatment = p_control + rng.uniform(0.0, 0.10, n)

    def nulled(values: np.ndarray) -> pl.Series:
        return pl.Series(values).scatter(np.flatnonzero(registered), None)

    return pl.DataFrame(
        {
            "customer_id": np.arange(1, n + 1, dtype=np.int64),
            "mb_registered": registered,
            "p_open": nulled(p_open),
            "p_response_control": nulled(p_control),
            "p_response_treatment": nulled(p_treatment),
            "uplift": nulled(p_treatment - p_control),
        }
    )


def assignments(customer_ids: np.ndarray, seed: int = 0) -> pl.DataFrame:
    """Half treatment (contact days spread over a week), half control."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own: not the truth's draws
    n = len(customer_ids)
    frame = pl.DataFrame(
        {
            "customer_id": customer_ids,
            "treated": rng.random(n) < 0.5,
            "offset": rng.integers(0, 7, n),
        }
    )
    return frame.select(
        "customer_id",
        pl.when("treated").then(pl.lit("treatment")).otherwise(pl.lit("control")).alias("arm"),
        pl.when("treated")
        .then(pl.lit(START) + pl.duration(days=pl.col("offset")))
        .otherwise(None)
        .cast(pl.Date)
        .alias("contact_day"),
    )


@pytest.fixture(scope="module")
def truth() -> pl.DataFrame:
    return synthetic_truth(N)


@pytest.fixture(scope="module")
def assigned(truth: pl.DataFrame) -> pl.DataFrame:
    return assignments(truth["customer_id"].to_numpy())


@pytest.fixture(scope="module")
def executed(
    truth: pl.DataFrame, assigned: pl.DataFrame
) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    return {
        objective: execute_campaign(
            assigned,
            truth,
            campaign_id="c1",
            objective=objective,
            start=START,
            seed=11,  # type: ignore[arg-type]
        )
        for objective in ("mobile_banking", "food_coupon")
    }


def test_the_same_seed_gives_the_same_frames_whatever_the_row_order(
    truth: pl.DataFrame, assigned: pl.DataFrame
):
    head, facts = assigned.head(5_000), truth.head(5_000)

    def run(frame: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        return execute_campaign(
            frame, facts, campaign_id="c1", objective="food_coupon", start=START, seed=seed
        )

    events, effects = run(head, 3)
    shuffled = run(head.sample(fraction=1.0, shuffle=True, seed=1), 3)
    assert events.equals(shuffled[0]) and effects.equals(shuffled[1])
    assert not events.equals(run(head, 4)[0])
    assert events.schema == EVENT_SCHEMA
    assert effects.schema == pl.Schema(TRUE_EFFECT_SCHEMA)
    assert events["event_key"].null_count() == events.height
    assert events["occurred_at"].is_sorted()


def _share(hits: int, of: int, expected: float) -> None:
    """Assert hits/of is within four standard errors of `expected`."""
    se = np.sqrt(expected * (1 - expected) / of)
    assert abs(hits / of - expected) < 4 * se + 1e-12, (hits, of, expected)


def test_the_funnel_runs_at_its_rates_and_control_is_never_contacted(
    executed: dict[str, tuple[pl.DataFrame, pl.DataFrame]], assigned: pl.DataFrame
):
    events, _ = executed["mobile_banking"]
    config = ExecutionConfig()
    arms = events.join(assigned, on="customer_id")
    counts = dict(arms.filter(pl.col("arm") == "treatment").group_by("event").len().iter_rows())
    delivered = counts["delivered"]
    assert delivered == (assigned["arm"] == "treatment").sum()
    _share(counts["contacted"], delivered, config.contact_rate)
    _share(counts["reached"], counts["contacted"], config.reach_rate)
    _share(counts["complained"], counts["contacted"], config.complaint_rate)
    _share(counts["opted_out"], counts["contacted"], config.opt_out_rate)
    control = arms.filter(pl.col("arm") == "control")
    assert not control.is_empty() and set(control["event"]) == {"responded", "converted"}
    # Delivery is on the contact day; contacts follow within the delay; one of each per customer.
    firsts = arms.filter(pl.col("event") == "delivered")
    assert (firsts["occurred_at"].dt.date() == firsts["contact_day"]).all()
    assert not events.select("customer_id", "event").is_duplicated().any()
    # Amounts on conversions only, positive; every success responded first.
    converted = events.filter(pl.col("event") == "converted")
    assert (converted["amount"] > 0).all()
    assert (
        events.filter(pl.col("event") != "converted")["amount"].null_count()
        == events.height - converted.height
    )
    # Responders and converters are never the same set: every converter responded (or, for a
    # coupon, its responders mostly ordered), and some responded without converting.
    responders = set(events.filter(pl.col("event") == "responded")["customer_id"].to_list())
    assert set(converted["customer_id"].to_list()) < responders


@pytest.mark.parametrize("objective", ["mobile_banking", "food_coupon"])
def test_the_true_effect_matches_the_observed_success_rates(
    executed: dict[str, tuple[pl.DataFrame, pl.DataFrame]], objective: str
):
    events, effects = executed[objective]
    success = "converted" if objective == "mobile_banking" else "responded"
    succeeded = events.filter(pl.col("event") == success).select("customer_id", success=pl.lit(1))
    observed = effects.join(succeeded, on="customer_id", how="left").with_columns(
        pl.col("success").fill_null(0)
    )
    means, variances = {}, {}
    for arm, truth_column in (("treatment", "p_treatment"), ("control", "p_control")):
        rows = observed.filter(pl.col("arm") == arm)
        p = rows[truth_column].to_numpy()
        # Bernoulli draws with known p: the rate's mean and variance under the truth.
        means[arm], variances[arm] = p.mean(), (p * (1 - p)).sum() / len(p) ** 2
        observed_rate = float(rows["success"].mean())  # type: ignore[arg-type]
        assert abs(observed_rate - means[arm]) < 4 * np.sqrt(variances[arm]), (arm, objective)
        means[f"observed_{arm}"] = observed_rate
    # The intention-to-treat effect: the observed difference of the arms, within its CI.
    effect = means["treatment"] - means["control"]
    seen = means["observed_treatment"] - means["observed_control"]
    assert effect > 0
    assert abs(seen - effect) < 4 * np.sqrt(variances["treatment"] + variances["control"])


def test_mobile_banking_opens_six_times_as_often_once_reached_and_never_when_registered(
    truth: pl.DataFrame, executed: dict[str, tuple[pl.DataFrame, pl.DataFrame]]
):
    events, effects = executed["mobile_banking"]
    facts = effects.join(truth, on="customer_id")
    registered = facts.filter("mb_registered")
    assert (registered["p_control"] == 0).all() and (registered["p_treatment"] == 0).all()
    successes = events.filter(pl.col("event").is_in(["responded", "converted"]))
    assert successes.join(registered, on="customer_id").is_empty()
    open_ = facts.filter(~pl.col("mb_registered"))
    assert np.allclose(open_["p_control"], 0.25 * open_["p_open"])
    reach = 0.87 * 0.80
    reached_p = np.minimum(0.95, 1.5 * open_["p_open"].to_numpy())
    assert np.allclose(
        open_["p_treatment"],
        open_["p_control"] + reach * (reached_p - open_["p_control"].to_numpy()),
    )
    assert (reached_p == 0.95).any()  # the cap is met


def test_inputs_the_world_cannot_execute_are_refused(truth: pl.DataFrame, assigned: pl.DataFrame):
    head = assigned.head(100)

    def run(
        frame: pl.DataFrame, objective: str = "food_coupon", facts: pl.DataFrame = truth
    ) -> None:
        execute_campaign(frame, facts, campaign_id="c", objective=objective, start=START, seed=1)  # type: ignore[arg-type]

    with pytest.raises(WorldError, match="objective must be one of"):
        run(head, "sms")
    with pytest.raises(WorldError, match="no column contact_day"):
        run(head.drop("contact_day"))
    with pytest.raises(WorldError, match="truth has no column p_open"):
        run(head, facts=truth.drop("p_open"))
    with pytest.raises(WorldError, match="not in the truth"):
        run(head, facts=truth.tail(10))
    with pytest.raises(WorldError, match="holds a customer twice"):
        run(pl.concat([head, head]))
    with pytest.raises(WorldError, match="an arm other than"):
        run(head.with_columns(arm=pl.lit("holdout")))
    with pytest.raises(WorldError, match="reach_rate must be a probability"):
        ExecutionConfig(reach_rate=1.2)


@pytest.mark.slow  # over a second: out of the inner loop
def test_the_events_of_a_real_world_pass_record_events_on_a_real_store(tmp_path: Path):
    world = tmp_path / "world"
    generate_world(WorldConfig(customers=2_000, seed=3), world)
    truth = pl.read_parquet(load_world(world).propensity)
    unregistered = truth.filter(~pl.col("mb_registered"))["customer_id"].to_numpy()
    assigned = assignments(unregistered, seed=2)
    events, _ = execute_campaign(
        assigned, truth, campaign_id="rescue-1", objective="mobile_banking", start=START, seed=5
    )
    assert set(events["event"]) >= {"delivered", "contacted", "reached", "converted"}
    config = store_config(tmp_path, tmp_path / "extensions")
    now = datetime(2026, 12, 1)
    with Store.open(config, key=secrets.token_urlsafe(32)) as store:
        store.insert_frame("customers", truth.select("customer_id", branch_id=pl.lit("B001")))
        store.execute(
            "INSERT INTO campaigns VALUES ('rescue-1', 1, '{}', ?, 'ab', ?, 'test', ?)",
            [b"\x00" * 32, now, now],
        )
        store.insert_frame(
            "assignments",
            assigned.with_columns(
                campaign_id=pl.lit("rescue-1"),
                plan_id=pl.lit("p1"),
                stage=pl.lit("ab"),
                branch_id=pl.lit("B001"),
                stratum=pl.lit("B001"),
                window_start=pl.lit(START),
                window_end=pl.lit(date(2026, 9, 29)),
                assigned_at=pl.lit(now),
            ),
        )
        result = record_events(store, events, source="world", now=now)
        assert result.refused.is_empty(), result.refused.head()
        assert result.recorded == events.height
        opted = events.filter(pl.col("event") == "opted_out")["customer_id"].n_unique()
        listed = store.execute("SELECT count(*) FROM suppressions").fetchone()
        assert listed == (opted,)


def test_a_treated_customer_without_a_contact_day_is_delivered_on_the_first_day(
    truth: pl.DataFrame, assigned: pl.DataFrame
):
    whitelist = assigned.filter(pl.col("arm") == "treatment").head(50)
    events, _ = execute_campaign(
        whitelist.with_columns(contact_day=None),
        truth,
        campaign_id="c1",
        objective="food_coupon",
        start=START,
        seed=2,
    )
    delivered = events.filter(pl.col("event") == "delivered")
    assert delivered.height == 50 and (delivered["occurred_at"].dt.date() == START).all()


def _bank(truth: pl.DataFrame, seed: int = 2) -> pl.DataFrame:
    """The extract's balances: aum_current, and its month average by the world's law."""
    rng = np.random.default_rng(seed)
    current = rng.lognormal(10.0, 1.5, truth.height)
    return pl.DataFrame(
        {
            "customer_id": truth["customer_id"],
            "aum_current": current,
            "aum_month_avg": current * rng.lognormal(0.0, 0.08, truth.height),
        }
    )


@pytest.mark.parametrize("objective", ["mobile_banking", "food_coupon"])
def test_balances_carry_the_new_money_and_their_true_effect(
    executed: dict[str, tuple[pl.DataFrame, pl.DataFrame]], truth: pl.DataFrame, objective: str
):
    events, effects = executed[objective]
    bank = _bank(truth)
    measured = datetime(2026, 11, 1)

    def run(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        return execute_balances(effects, events, bank, campaign_id="c1", objective=objective,  # type: ignore[arg-type]
                                measured_at=measured, seed=seed)  # fmt: skip

    metrics, true = run(5)
    assert metrics.equals(run(5)[0]) and not metrics.equals(run(6)[0])
    assert true.schema == pl.Schema(TRUE_BALANCE_SCHEMA)
    assert (metrics["metric"] == BALANCE_METRIC).all() and metrics.height == effects.height
    joined = metrics.join(bank, on="customer_id").join(effects, on="customer_id")
    assert joined["pre_value"].equals(joined["aum_month_avg"], check_names=False)
    treated = (joined["arm"] == "treatment").to_numpy()
    # Drift around the current balance, plus the new money a converted customer brought.
    gain = (joined["value"] - joined["aum_current"]).to_numpy()
    measured_effect = gain[treated].mean() - gain[~treated].mean()
    true_effect = true["effect"].to_numpy().mean()
    if objective == "food_coupon":
        assert true_effect == 0.0
    else:
        mean_balance = np.exp(8.0 + 0.5)  # the first month's balance: lognormal(8, 1)
        lift = (effects["p_treatment"] - effects["p_control"]).to_numpy().mean()
        assert true_effect == pytest.approx(lift * mean_balance)
    se = np.sqrt(gain[treated].var() / treated.sum() + gain[~treated].var() / (~treated).sum())
    assert abs(measured_effect - true_effect) < 4 * se
