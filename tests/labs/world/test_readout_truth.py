"""The readout against the world's truth, over 20 seeds of assignment and execution:

- the 95% interval of the measured lift covers the true intention-to-treat lift at least 17
  times;
- adjusted by what the bank knew before assignment (CUPED on the AUM metric's own pre-period,
  CUPAC on success with a propensity score trained on pre-assignment data), the AUM interval is
  at least 20% narrower in every seed and still covers the true effect at least 17 times; the
  variance reduction of each metric is printed, the small one of success included.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from fusion.campaigns.assignment import assign_arms
from fusion.campaigns.readout import read_out
from labs.demo_campaigns import demo_declarations
from labs.world import WorldConfig, generate_world, load_world
from labs.world.execution import BALANCE_METRIC, execute_balances, execute_campaign
from matcher.keyed_hash import hmac_digest

START = date(2026, 10, 1)
MEASURED = datetime(2026, 12, 1)

pytestmark = pytest.mark.slow  # a world and 80 assignments, executions and readouts

# Pre-assignment inputs of each objective's propensity model (CUPAC): the world's label for
# opening mobile banking, and the past coupon campaign's control responses.
_LABEL_FEATURES = ("age", "ukey_holder", "wealth_mgmt", "time_deposit", "online_banking",
                   "tenure_months", "wechat_bound")  # fmt: skip
_RESPONSE_FEATURES = ("aum_month_avg", "tenure_months", "has_relationship_manager", "payroll")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    """A 16k world: its unregistered customers (id, branch), truth, balances and propensities."""
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=16_000, seed=21), out)
    files = load_world(out)
    truth = pl.read_parquet(files.propensity)
    bank = pl.read_parquet(files.customers)
    customers = (
        bank.select("customer_id", "branch_id")
        .join(truth.filter(~pl.col("mb_registered")).select("customer_id"), on="customer_id")
        .with_columns(pl.lit(None, dtype=pl.Int8).alias("decile"))
    )
    past = pl.read_parquet(files.campaign).filter(~pl.col("treatment"))
    scores = {
        "mobile_banking": _propensity(bank.filter(pl.col("opened_mb").is_not_null()),
                                      "opened_mb", _LABEL_FEATURES, bank),
        "food_coupon": _propensity(bank.join(past, on="customer_id"), "responded",
                                   _RESPONSE_FEATURES, bank),
    }  # fmt: skip
    return {"customers": customers, "truth": truth, "bank": bank, **scores}


def _propensity(
    train: pl.DataFrame, label: str, features: tuple[str, ...], everyone: pl.DataFrame
) -> pl.DataFrame:
    """Return customer_id and a logistic model's score fitted on pre-assignment rows."""

    def design(frame: pl.DataFrame) -> np.ndarray:
        return np.log1p(frame.select(pl.col(features).cast(pl.Float64)).to_numpy().clip(0))

    model = LogisticRegression(max_iter=500).fit(design(train), train[label].to_numpy())
    return everyone.select("customer_id").with_columns(
        pl.Series("propensity", model.predict_proba(design(everyone))[:, 1])
    )


def _assigned(customers: pl.DataFrame, name: str, salt: bytes) -> pl.DataFrame:
    candidates = customers.with_columns(pl.lit(name).alias("campaign_id"))
    arms = assign_arms(candidates, {name: salt}, {name: 0.5})
    return arms.with_columns(
        pl.lit("ab").alias("stage"),
        pl.lit(None, dtype=pl.String).alias("segment"),
        pl.lit(datetime(2026, 9, 30)).alias("assigned_at"),
        pl.when(pl.col("arm") == "treatment").then(pl.lit(START)).alias("contact_day"),
    )


def _true_lift(effects: pl.DataFrame) -> float:
    treated = effects.filter(pl.col("arm") == "treatment")["p_treatment"].mean()
    control = effects.filter(pl.col("arm") == "control")["p_control"].mean()
    return float(treated) - float(control)  # type: ignore[arg-type]


@pytest.mark.parametrize("objective", ["food_coupon", "mobile_banking"])
def test_the_lift_interval_covers_the_true_lift_in_17_of_20_seeds(world, objective):
    campaign = demo_declarations([1])[0 if objective == "mobile_banking" else 1]
    name = campaign.name
    covered = 0
    for seed in range(20):
        # The adjusted test's salts: with a fresh random salt on every run, 16 of 20 (about one
        # run in 60 at 95% coverage) failed the test now and then.
        salt = hmac_digest(b"readout-truth", f"{objective}|{seed}".encode())
        assigned = _assigned(world["customers"], name, salt)
        events, effects = execute_campaign(
            assigned.select("customer_id", "arm", "contact_day"), world["truth"],
            campaign_id=name, objective=objective, start=START, seed=seed,
        )  # fmt: skip
        comparison = read_out(campaign, assigned, events, k=10).comparison
        assert comparison is not None
        covered += comparison.diff_ci_low <= _true_lift(effects) <= comparison.diff_ci_high
    assert covered >= 17, covered


@pytest.mark.parametrize("objective", ["food_coupon", "mobile_banking"])
def test_adjusted_intervals_are_narrower_and_still_cover_the_truth(world, objective):
    campaign = demo_declarations([1])[0 if objective == "mobile_banking" else 1]
    name, success = campaign.name, campaign.objective.event
    covariates = world[objective].rename({"propensity": f"{objective}_propensity"})
    covered = {"aum": 0, success: 0, "stratified": 0}
    rows = []
    for seed in range(20):
        salt = hmac_digest(b"readout-truth", f"{objective}|{seed}".encode())
        assigned = _assigned(world["customers"], name, salt)
        events, effects = execute_campaign(
            assigned.select("customer_id", "arm", "contact_day"), world["truth"],
            campaign_id=name, objective=objective, start=START, seed=seed,
        )  # fmt: skip
        metrics, balance_truth = execute_balances(
            effects, events, world["bank"], campaign_id=name, objective=objective,
            measured_at=MEASURED, seed=seed,
        )  # fmt: skip
        readout = read_out(campaign, assigned, events, k=10, covariates=covariates, metrics=metrics)
        adjusted = {a.metric: a for a in readout.adjusted}
        truths = {BALANCE_METRIC: float(balance_truth["effect"].mean()),  # type: ignore[arg-type]
                  success: _true_lift(effects)}  # fmt: skip
        for metric, true in truths.items():
            a = adjusted[metric]
            covered["aum" if metric == BALANCE_METRIC else success] += (
                a.adjusted.ci_low <= true <= a.adjusted.ci_high
            )
        aum = adjusted[BALANCE_METRIC]
        assert aum.stratified is not None
        true_aum = truths[BALANCE_METRIC]
        covered["stratified"] += aum.stratified.ci_low <= true_aum <= aum.stratified.ci_high
        # The AUM month average against its own pre-period: the covariate buys a lot.
        assert aum.interval_narrowing >= 0.20, (seed, aum.interval_narrowing)
        assert not aum.buys_little
        rows.append((aum.variance_reduction, aum.interval_narrowing, aum.correlation,
                     adjusted[success].variance_reduction,
                     adjusted[success].interval_narrowing))  # fmt: skip
    figures = np.array(rows)
    print(
        f"\n{objective}, 20 seeds: AUM (CUPED) variance reduction "
        f"{figures[:, 0].min():.1%}-{figures[:, 0].max():.1%}, interval narrower by "
        f"{figures[:, 1].min():.1%}-{figures[:, 1].max():.1%} (rho {figures[:, 2].mean():.3f}), "
        f"covered {covered['aum']}/20 (stratified: {covered['stratified']}/20); {success} "
        f"(CUPAC) variance reduction "
        f"{figures[:, 3].min():.1%}-{figures[:, 3].max():.1%}, narrower by "
        f"{figures[:, 4].mean():.1%} on average, covered {covered[success]}/20"
    )
    assert covered["aum"] >= 17 and covered["stratified"] >= 17, covered
    assert covered[success] >= 17, covered
