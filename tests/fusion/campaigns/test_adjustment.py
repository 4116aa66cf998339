"""CUPED, CUPAC and post-stratification against a direct statsmodels OLS of outcome on arm and
covariate: the same estimates and HC2 standard errors to 1e-6."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.campaigns.adjustment import (
    adjust,
    adjust_frame,
    adjusted_readouts,
    covariate_matrix,
    cuped,
    stratified,
)

# statsmodels' regression module still uses a pandas decorator pandas 3 deprecates at import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings("ignore", message="Substitution is deprecated")
    from statsmodels.regression.linear_model import OLS, RegressionResultsWrapper


def _balances(seed: int, n: int = 4_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An amount with its pre-period (rho ~ 0.95), a 30% control, and an effect of +50."""
    rng = np.random.default_rng(seed)
    pre = rng.lognormal(8.0, 0.8, n)
    treated = rng.random(n) < 0.7
    y = pre * rng.lognormal(0.0, 0.2, n) + 50.0 * treated + rng.normal(0.0, 200.0, n)
    return y, pre, treated


def _ols(y: np.ndarray, *columns: np.ndarray) -> RegressionResultsWrapper:
    return OLS(y, np.column_stack([np.ones(len(y)), *columns])).fit(cov_type="HC2")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cuped_is_the_arms_ols_coefficient_with_its_hc2_error(seed):
    y, pre, treated = _balances(seed)
    result = cuped(y, pre, treated)
    fit = _ols(y, treated.astype(float), pre)
    assert result.adjusted.estimate == pytest.approx(fit.params[1], abs=1e-6)
    assert result.adjusted.std_error == pytest.approx(fit.bse[1], abs=1e-6)
    assert result.theta[0] == pytest.approx(fit.params[2], abs=1e-6)
    # The difference of adjusted means with theta pooled over arms is that same coefficient.
    y_adj = y - result.theta[0] * (pre - pre.mean())
    assert y_adj[treated].mean() - y_adj[~treated].mean() == pytest.approx(fit.params[1], abs=1e-6)
    lo, hi = fit.conf_int(alpha=0.05)[1]
    assert (result.adjusted.ci_low, result.adjusted.ci_high) == pytest.approx((lo, hi), abs=1e-6)
    # Unadjusted: OLS on the arm alone, whose HC2 error is Welch's.
    plain = _ols(y, treated.astype(float))
    assert result.unadjusted.estimate == pytest.approx(plain.params[1], abs=1e-6)
    assert result.unadjusted.std_error == pytest.approx(plain.bse[1], abs=1e-6)
    welch = np.sqrt(
        y[treated].var(ddof=1) / treated.sum() + y[~treated].var(ddof=1) / (~treated).sum()
    )
    assert result.unadjusted.std_error == pytest.approx(welch, rel=1e-9)
    # The classical (pooled) error is the homoscedastic OLS one.
    classical = OLS(y, np.column_stack([np.ones(len(y)), treated, pre])).fit()
    assert result.null_std_error == pytest.approx(classical.bse[1], abs=1e-6)
    # The variance reduction is about rho^2.
    assert result.variance_reduction == pytest.approx(result.correlation**2, abs=0.02)
    assert result.variance_reduction > 0.8


def test_two_covariates_are_one_ols_fit():
    y, pre, treated = _balances(4)
    score = np.log(pre) + np.random.default_rng(5).normal(0, 1, len(y))
    result = cuped(y, np.column_stack([pre, score]), treated)
    fit = _ols(y, treated.astype(float), pre, score)
    assert result.adjusted.estimate == pytest.approx(fit.params[1], abs=1e-6)
    assert result.adjusted.std_error == pytest.approx(fit.bse[1], abs=1e-6)
    assert result.theta == pytest.approx(tuple(fit.params[2:]), abs=1e-6)


def test_stratified_estimate_is_the_interacted_ols_coefficient():
    y, pre, treated = _balances(6)
    strata = np.random.default_rng(7).integers(0, 6, len(y)).astype(str)
    estimate, theta, used, pooled, left_out = stratified(y, pre, treated, strata)
    dummies = pl.Series(strata).to_dummies().to_numpy()[:, 1:].astype(float)
    centred = dummies - dummies.mean(axis=0)
    # y ~ arm + strata + arm x (strata - their shares) + x (Lin 2013): the arm's coefficient is
    # the stratum-size-weighted mean of the strata's adjusted differences.
    fit = _ols(y, treated.astype(float), dummies, treated[:, None] * centred, pre)
    assert estimate.estimate == pytest.approx(fit.params[1], abs=1e-6)
    assert theta[0] == pytest.approx(fit.params[-1], abs=1e-6)
    # The strata's variance ignores theta's own uncertainty: within a few percent of HC2.
    assert estimate.std_error == pytest.approx(fit.bse[1], rel=0.05)
    assert (used, pooled, left_out) == (6, 0, 0)
    # The adjusted estimate of `adjust` is the CUPED one; the stratified one sits beside it.
    both = adjust("aum", y, pre, treated, covariate="pre-period", strata=strata)
    assert both.adjusted == cuped(y, pre, treated).adjusted and both.stratified is not None
    assert both.stratified.estimate == pytest.approx(estimate.estimate, abs=1e-6)


def test_small_strata_are_pooled_within_their_stage_and_counted():
    y, pre, treated = _balances(8, n=600)
    stage = np.where(np.arange(600) < 300, "pilot", "ab")
    strata = np.array([f"{stage[i]}|s{i % 4}" for i in range(600)])
    strata[:3] = "pilot|tiny"  # three customers: an arm short of STRATUM_MIN
    estimate, _, used, pooled, left_out = stratified(y, pre, treated, strata, coarse=stage)
    assert (used, pooled, left_out) == (8, 1, 3)  # the pool of three alone is short: left out
    assert np.isfinite(estimate.std_error)


def test_a_weak_covariate_buys_little_and_says_so():
    rng = np.random.default_rng(9)
    n = 20_000
    p = rng.uniform(0.01, 0.06, n)  # a rare conversion and a calibrated but flat score
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < p + 0.01 * treated).astype(float)
    result = adjust("converted", y, p, treated, covariate="acquisition score")
    assert result.kind == "rate"
    assert result.variance_reduction < 0.1 and result.buys_little
    assert "buys little" in result.verdict()
    assert abs(result.correlation) < 0.3
    assert result.to_dict()["buys_little"] is True


def test_adjust_frame_fills_a_missing_covariate_and_stratifies_by_stage():
    y, pre, treated = _balances(10, n=1_000)
    frame = pl.DataFrame(
        {
            "arm": np.where(treated, "treatment", "control"),
            "stage": np.where(np.arange(1_000) % 2 == 0, "pilot", "ab"),
            "stratum": [f"B00{i % 3}|d{i % 5}" for i in range(1_000)],
            "value": y,
            "pre_value": np.where(np.arange(1_000) % 10 == 0, np.nan, pre),
            "nobody": [None] * 1_000,
        },
        schema_overrides={"nobody": pl.Float64},
    )
    x = covariate_matrix(frame, ["pre_value", "nobody"])
    assert x is not None and x.shape == (1_000, 1) and np.isfinite(x).all()
    assert covariate_matrix(frame, ["nobody"]) is None
    result = adjust_frame(frame, "value", ["pre_value"], metric="aum", covariate="pre-period")
    # 2 stages x 15 strata of ~33 customers, ~10 of them control: some pooled within the stage.
    assert result.stratified is not None and 1 <= result.strata <= 30 and result.left_out == 0
    assert result.variance_reduction > 0.5
    assert result.control_saved == round(result.n_control * result.variance_reduction)


def test_adjusted_readouts_skip_a_metric_with_an_arm_under_k():
    y, pre, treated = _balances(11, n=400)
    customers = pl.DataFrame(
        {
            "customer_id": np.arange(400),
            "arm": np.where(treated, "treatment", "control"),
            "stage": "ab",
            "stratum": "B001|d1",
            "converted": y > np.median(y),
            "score": None,
        },
        schema_overrides={"score": pl.Float64},
    )
    metrics = pl.DataFrame(
        {"customer_id": np.arange(400), "metric": "aum", "value": y, "pre_value": pre}
    )
    few = metrics.filter(pl.col("customer_id") < 12)
    both = pl.concat([metrics, few.with_columns(metric=pl.lit("tiny"))])
    found = adjusted_readouts(
        customers, both, success="converted", covariate="score", covariate_name="score", k=10
    )
    assert [a.metric for a in found] == ["aum"]  # no score at all: success is not adjusted


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="one value per customer"):
        cuped([1.0, 2.0, 3.0], None, [True, False])
    with pytest.raises(ConfigError, match="finite"):
        cuped([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [True, False, True, False])
    with pytest.raises(ConfigError, match="at least two"):
        cuped([1.0, 2.0, 3.0], None, [True, False, False])
    with pytest.raises(ConfigError, match="alpha"):
        cuped([1.0, 2.0, 3.0, 4.0], None, [True, False, True, False], alpha=1.5)
