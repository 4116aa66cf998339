"""The readout against the world's truth: over 20 seeds of assignment and execution, the 95%
interval of the measured lift covers the true intention-to-treat lift at least 17 times."""

from __future__ import annotations

import secrets
from datetime import date, datetime

import polars as pl
import pytest

from fusion.campaigns.assignment import assign_arms
from fusion.campaigns.readout import read_out
from labs.demo_campaigns import demo_declarations
from labs.world import WorldConfig, generate_world, load_world
from labs.world.execution import execute_campaign

START = date(2026, 10, 1)

pytestmark = pytest.mark.slow  # a world and 40 assignments, executions and readouts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A 16k world: its unregistered customers (id, branch) and its truth."""
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=16_000, seed=21), out)
    files = load_world(out)
    truth = pl.read_parquet(files.propensity)
    customers = (
        pl.read_parquet(files.customers, columns=["customer_id", "branch_id"])
        .join(truth.filter(~pl.col("mb_registered")).select("customer_id"), on="customer_id")
        .with_columns(pl.lit(None, dtype=pl.Int8).alias("decile"))
    )
    return customers, truth


@pytest.mark.parametrize("objective", ["food_coupon", "mobile_banking"])
def test_the_lift_interval_covers_the_true_lift_in_17_of_20_seeds(world, objective):
    customers, truth = world
    campaign = demo_declarations([1])[0 if objective == "mobile_banking" else 1]
    name = campaign.name
    covered = 0
    for seed in range(20):
        candidates = customers.with_columns(pl.lit(name).alias("campaign_id"))
        arms = assign_arms(candidates, {name: secrets.token_bytes(32)}, {name: 0.5})
        assigned = arms.with_columns(
            pl.lit("ab").alias("stage"),
            pl.lit(None, dtype=pl.String).alias("segment"),
            pl.lit(datetime(2026, 9, 30)).alias("assigned_at"),
            pl.when(pl.col("arm") == "treatment").then(pl.lit(START)).alias("contact_day"),
        )
        events, effects = execute_campaign(
            assigned.select("customer_id", "arm", "contact_day"),
            truth,
            campaign_id=name,
            objective=objective,
            start=START,
            seed=seed,
        )
        readout = read_out(campaign, assigned, events, k=10)
        comparison = readout.comparison
        assert comparison is not None
        true_lift = float(
            effects.filter(pl.col("arm") == "treatment")["p_treatment"].mean()  # type: ignore[arg-type]
            - effects.filter(pl.col("arm") == "control")["p_control"].mean()  # type: ignore[operator]
        )
        covered += comparison.diff_ci_low <= true_lift <= comparison.diff_ci_high
    assert covered >= 17, covered
