"""Readouts adjusted by what the bank knew before assignment: CUPED, CUPAC, post-stratification.

Every customer held out as control is a customer not offered the product, so the narrower the
interval a given control buys, the smaller the control a campaign needs. A covariate fixed
before assignment (the outcome's own pre-period: CUPED, Deng et al. 2013; or a model's
prediction of the outcome from pre-assignment data: CUPAC, the platform's propensity score)
explains part of the outcome's variance without touching the arms' comparison, since random
assignment makes it independent of the arm.

    cuped        y, x, treated -> the unadjusted difference of means and the CUPED-adjusted
                 one, with theta, the correlation and the variance reduction
    stratified   the same within strata (stage x branch x decile), combined with stratum-size
                 weights
    adjust       both, for one metric, as the readout shows them: an `Adjusted`
    adjust_frame `adjust` over a frame of customers (arm, stage, stratum, outcome, covariates)
    adjusted_readouts  a readout's success (CUPAC) and amount metrics (CUPED) from frames

The estimators (all pure functions over numpy arrays, so any experiment reuses them):

- theta = the covariates' slope pooled over arms: the within-arm covariance of y and x over the
  within-arm variance of x (the way a pooled variance pools arms). It is the coefficient of x in
  the OLS fit y ~ 1 + arm + x, and it differs from the marginal cov(y, x) / var(x) of Deng et al.
  only by O(1/n) terms; with it, the difference of the adjusted means
  y_adj = y - theta (x - mean x) is *exactly* the OLS coefficient of the arm (Frisch-Waugh).
- Standard errors are HC2 (MacKinnon & White 1985) of that OLS fit: without a covariate HC2 is
  Welch's unequal-variance standard error of a difference of means, and with one it stays valid
  when the arms' variances or the effect differ (Lin 2013). Intervals: estimate +- z se. The
  classical (homoscedastic) OLS error is kept too (`Cuped.null_std_error`): under no effect both
  arms share one variance, and it stays positive while an arm has no success yet, which the
  sequential test needs.
- Variance reduction = 1 - var(adjusted) / var(unadjusted), measured on the two estimates of the
  same difference; it is about rho^2, rho the within-arm correlation of y and the covariate. So
  a 20% narrower interval needs |rho| >= 0.6: balances against their own pre-period reach it; a
  rare conversion against a propensity score seldom does, and the readout says so
  (`Adjusted.verdict`).
- Control saved: an estimate with variance reduction r is as precise as the unadjusted one on
  (1 - r) of the customers, so r x the control could have been offered the product instead.
- Stratified: theta pooled within stratum x arm cells (the common slope of the OLS fit with a
  mean per cell), then per stratum the difference of adjusted means with variance
  s_t^2 / n_t + s_c^2 / n_c, combined with weights n_s / n (post-stratification, Miratrix,
  Sekhon & Yu 2013). The point estimate is the arm's coefficient of the OLS fit
  y ~ arm + strata + arm x (strata - their shares) + x (Lin 2013). It weights every stratum by
  its size, so stages of different control shares count as the customers they hold (the pooled
  difference counts each arm's customers as they come). A stratum with fewer than
  `STRATUM_MIN` customers in an arm (whose variance would be guesswork) is pooled into its
  coarse group (the stage), which keeps its control share; a coarse group still short of two
  per arm is left out and counted.

References:
    Deng, A., Xu, Y., Kohavi, R. & Walker, T. (2013). Improving the sensitivity of online
    controlled experiments by utilizing pre-experiment data. WSDM '13, 123-132.
    Tang, Y., Huang, C., Kastelman, D. & Bauman, J. (2020). Control using predictions as
    covariates in switchback experiments (CUPAC). DoorDash engineering.
    Lin, W. (2013). Agnostic notes on regression adjustments to experimental data. Ann. Appl.
    Stat. 7(1), 295-318.
    MacKinnon, J. G. & White, H. (1985). Some heteroskedasticity-consistent covariance matrix
    estimators with improved finite sample properties. J. Econometrics 29(3), 305-325.
    Miratrix, L. W., Sekhon, J. S. & Yu, B. (2013). Adjusting treatment effect estimates by
    post-stratification in randomized experiments. JRSS B 75(2), 369-396.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import stats

from contracts.errors import CampaignError, ConfigError
from fusion.campaigns.statistics import json_ready

__all__ = [
    "LITTLE",
    "STRATUM_MIN",
    "Adjusted",
    "Cuped",
    "Estimate",
    "adjust",
    "adjust_frame",
    "adjusted_readouts",
    "covariate_matrix",
    "cuped",
    "stratified",
    "with_covariate",
]

LITTLE = 0.1
"""A covariate whose variance reduction is under this buys little: the readout says so."""
STRATUM_MIN = 10
"""A stratum needs this many customers in each arm to stand alone; smaller ones are pooled."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """A difference of means with its standard error and (1 - alpha) normal interval."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float

    @classmethod
    def normal(cls, estimate: float, std_error: float, alpha: float) -> Estimate:
        """Return the estimate with the interval estimate +- z(1 - alpha / 2) x std_error."""
        z = float(stats.norm.ppf(1 - alpha / 2))
        return cls(estimate, std_error, estimate - z * std_error, estimate + z * std_error)

    @property
    def p_value(self) -> float:
        """Return the two-sided normal p-value of estimate = 0."""
        if not self.std_error > 0:
            return math.nan
        return float(2 * stats.norm.sf(abs(self.estimate) / self.std_error))


@dataclass(frozen=True)
class Cuped:
    """The unadjusted and the CUPED-adjusted differences of means of one outcome."""

    unadjusted: Estimate
    adjusted: Estimate
    null_std_error: float  # the adjusted estimate's classical (homoscedastic) OLS error
    theta: tuple[float, ...]  # the covariates' pooled within-arm slopes
    correlation: float  # rho: within-arm (multiple) correlation of y with the covariates
    mean_treatment: float
    mean_control: float
    n_treatment: int
    n_control: int

    @property
    def variance_reduction(self) -> float:
        """Return 1 - var(adjusted) / var(unadjusted)."""
        return _reduction(self.adjusted, self.unadjusted)


@dataclass(frozen=True)
class Adjusted:
    """One metric read out three ways: unadjusted, CUPED-adjusted, and post-stratified CUPED.

    `covariate` says what x was (e.g. "pre-period aum", "acquisition score").
    `variance_reduction` and `interval_narrowing` compare the adjusted estimate with the
    unadjusted one (the same difference); `control_saved` is the control customers the same
    precision would not have needed. `stratified` weights stage x branch x decile strata by
    their size (None when no stratum has two customers per arm).
    """

    metric: str
    kind: str  # "rate" (a 0/1 outcome) or "amount"
    covariate: str
    alpha: float
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    unadjusted: Estimate
    adjusted: Estimate
    stratified: Estimate | None
    theta: tuple[float, ...]
    correlation: float
    variance_reduction: float
    interval_narrowing: float
    control_saved: int
    strata: int
    strata_pooled: int
    left_out: int

    @property
    def buys_little(self) -> bool:
        """Return whether the covariate reduced the variance by less than `LITTLE`."""
        return not self.variance_reduction >= LITTLE

    def verdict(self) -> str:
        """Return, in words, what the covariate bought."""
        rho = f"rho = {self.correlation:.2f}"
        if self.buys_little:
            return (
                f"the covariate buys little ({rho}; variance reduction "
                f"{self.variance_reduction:.0%}): read the unadjusted figure, the adjusted one "
                "is no sharper"
            )
        return (
            f"variance reduction {self.variance_reduction:.0%} ({rho}): the interval is "
            f"{self.interval_narrowing:.0%} narrower: the same precision needed "
            f"{self.control_saved:,} fewer control customers"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready data (nan -> None), with the verdict."""
        data = asdict(self)
        data["theta"] = list(self.theta)
        data |= {"buys_little": self.buys_little, "verdict": self.verdict()}
        return json_ready(data)


def cuped(
    y: npt.ArrayLike, x: npt.ArrayLike | None, treated: npt.ArrayLike, *, alpha: float = 0.05
) -> Cuped:
    """Return the unadjusted and CUPED-adjusted treatment - control difference of mean y.

    Args:
        y: the outcome per customer (0/1 for a rate, an amount otherwise).
        x: the covariates fixed before assignment, one column per covariate (1-d: one); None
            or no column: no adjustment (adjusted = unadjusted).
        treated: True for the treatment arm, False for control.
        alpha: the intervals' two-sided level.

    The adjusted estimate and its HC2 standard error are the arm's coefficient of the OLS fit
    y ~ 1 + arm + x (see the module docstring). Raises ConfigError for mismatched lengths, a
    non-finite value, or an arm with fewer than two customers.
    """
    _check_level(alpha)
    outcome, arm, covariates = _inputs(y, x, treated)
    mean_t, mean_c = float(outcome[arm].mean()), float(outcome[~arm].mean())
    ones = np.ones_like(outcome)
    unadjusted, plain_null = _ols_arm(outcome, np.column_stack([ones, arm]), alpha)
    sizes = (mean_t, mean_c, int(arm.sum()), int((~arm).sum()))
    if covariates.shape[1] == 0:
        return Cuped(unadjusted, unadjusted, plain_null, (), 0.0, *sizes)
    theta = _pooled_slope(outcome, covariates, arm.astype(np.int64))
    centred = covariates - covariates.mean(axis=0)
    adjusted, null = _ols_arm(outcome, np.column_stack([ones, arm, centred]), alpha)
    rho = _within_correlation(outcome, covariates @ theta, arm.astype(np.int64), theta)
    return Cuped(unadjusted, adjusted, null, tuple(float(t) for t in theta), rho, *sizes)


def stratified(
    y: npt.ArrayLike,
    x: npt.ArrayLike | None,
    treated: npt.ArrayLike,
    strata: npt.ArrayLike,
    *,
    coarse: npt.ArrayLike | None = None,
    alpha: float = 0.05,
) -> tuple[Estimate, tuple[float, ...], int, int, int]:
    """Return the post-stratified CUPED estimate, theta, strata used, strata pooled, left out.

    `strata` labels each customer's stratum (e.g. "ab|B001|d3"); `coarse` the group a stratum
    short of two customers per arm is pooled into (e.g. the stage; None: one group). Weights
    are stratum sizes; see the module docstring for theta and the variance.
    """
    _check_level(alpha)
    outcome, arm, covariates = _inputs(y, x, treated)
    labels = pl.Series(np.asarray(strata)).cast(pl.String)
    groups = (
        pl.Series(np.asarray(coarse)).cast(pl.String)
        if coarse is not None
        else pl.repeat("all", len(outcome), eager=True)
    )
    if len(labels) != len(outcome) or len(groups) != len(outcome):
        raise ConfigError(
            f"strata and coarse need one label per customer ({len(outcome)}), got "
            f"{len(labels)} and {len(groups)}",
            setting="strata",
        )
    cells = pl.DataFrame({"s": labels, "g": groups, "t": arm})
    sizes = cells.group_by("s").agg(n_t=pl.col("t").sum(), n_c=(~pl.col("t")).sum())
    small = sizes.filter((pl.col("n_t") < STRATUM_MIN) | (pl.col("n_c") < STRATUM_MIN))["s"]
    merged = cells.with_columns(
        pl.when(pl.col("s").is_in(small.implode()))
        .then(pl.concat_str(pl.lit("pooled|"), pl.col("g")))
        .otherwise(pl.col("s"))
        .alias("s")
    )
    keep_frame = merged.with_columns(
        ok=(pl.col("t").sum().over("s") >= 2) & ((~pl.col("t")).sum().over("s") >= 2)
    )
    keep = keep_frame["ok"].to_numpy()
    stratum = keep_frame["s"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    outcome, arm, covariates, stratum = outcome[keep], arm[keep], covariates[keep], stratum[keep]
    if not keep.any():
        raise ConfigError(
            "no stratum has two customers in each arm; read the unstratified estimate",
            setting="strata",
        )
    cell = stratum * 2 + arm
    theta = _pooled_slope(outcome, covariates, cell) if covariates.shape[1] else np.zeros(0)
    adjusted = outcome - covariates @ theta
    frame = pl.DataFrame({"s": stratum, "t": arm, "y": adjusted})
    per = (
        frame.group_by("s", "t")
        .agg(n=pl.len(), mean=pl.col("y").mean(), var=pl.col("y").var(ddof=1))
        .pivot(on="t", index="s", values=["n", "mean", "var"])
    )
    n_t, n_c = per["n_true"].to_numpy(), per["n_false"].to_numpy()
    weight = (n_t + n_c) / len(outcome)
    effect = per["mean_true"].to_numpy() - per["mean_false"].to_numpy()
    variance = per["var_true"].to_numpy() / n_t + per["var_false"].to_numpy() / n_c
    estimate = Estimate.normal(
        float(weight @ effect), float(math.sqrt(weight**2 @ variance)), alpha
    )
    pooled = len(small)
    return estimate, tuple(float(t) for t in theta), per.height, pooled, int((~keep).sum())


def adjust(
    metric: str,
    y: npt.ArrayLike,
    x: npt.ArrayLike | None,
    treated: npt.ArrayLike,
    *,
    covariate: str,
    strata: npt.ArrayLike | None = None,
    coarse: npt.ArrayLike | None = None,
    alpha: float = 0.05,
) -> Adjusted:
    """Return one metric read out unadjusted, CUPED-adjusted and stratified (see `Adjusted`).

    Without strata (or when no stratum has two customers per arm) `stratified` is None.
    """
    result = cuped(y, x, treated, alpha=alpha)
    outcome = np.asarray(y, dtype=np.float64)
    kind = "rate" if np.isin(outcome, (0.0, 1.0)).all() else "amount"
    by_strata, used, pooled, left_out = None, 0, 0, 0
    if strata is not None:
        try:
            by_strata, _, used, pooled, left_out = stratified(
                y, x, treated, strata, coarse=coarse, alpha=alpha
            )
        except ConfigError:  # no stratum with two customers per arm: nothing to combine
            left_out = len(outcome)
    reduction = result.variance_reduction
    narrowing = (
        1 - result.adjusted.std_error / result.unadjusted.std_error
        if result.unadjusted.std_error > 0
        else math.nan
    )
    saved = round(result.n_control * reduction) if reduction > 0 else 0
    return Adjusted(
        metric=metric, kind=kind, covariate=covariate, alpha=alpha,
        n_treatment=result.n_treatment, n_control=result.n_control,
        mean_treatment=result.mean_treatment, mean_control=result.mean_control,
        unadjusted=result.unadjusted, adjusted=result.adjusted, stratified=by_strata,
        theta=result.theta,
        correlation=result.correlation, variance_reduction=reduction,
        interval_narrowing=narrowing, control_saved=saved, strata=used, strata_pooled=pooled,
        left_out=left_out,
    )  # fmt: skip


def adjust_frame(
    frame: pl.DataFrame,
    outcome: str,
    covariates: Sequence[str],
    *,
    metric: str,
    covariate: str,
    alpha: float = 0.05,
) -> Adjusted:
    """Return `adjust` over a frame of customers, stratified by stage x stratum.

    `frame` holds one row per customer: `arm` ("treatment" | "control"), `stage`, `stratum`
    (e.g. "B001|d3"), the `outcome` column (bool or number) and the `covariates` columns. A
    customer without a covariate value gets the column's mean (a covariate fixed before
    assignment may be filled so without biasing the comparison); a covariate nobody has is
    left out. Strata short of two customers per arm are pooled within their stage.
    """
    x = covariate_matrix(frame, covariates)
    labels = frame.select(pl.concat_str("stage", pl.lit("|"), "stratum", ignore_nulls=True))
    return adjust(
        metric,
        frame[outcome].cast(pl.Float64).to_numpy(),
        x,
        (frame["arm"] == "treatment").to_numpy(),
        covariate=covariate,
        strata=labels.to_series().fill_null("na").to_numpy(),
        coarse=frame["stage"].fill_null("na").to_numpy(),
        alpha=alpha,
    )


def adjusted_readouts(
    customers: pl.DataFrame,
    metrics: pl.DataFrame | None,
    *,
    success: str,
    covariate: str,
    covariate_name: str,
    alpha: float = 0.05,
    k: int = 1,
) -> tuple[Adjusted, ...]:
    """Return the adjusted readouts of an experiment's customers.

    `customers` (one row per customer: customer_id, arm, stage, stratum, the `success` flag,
    the `covariate` column) gives success adjusted by the covariate (CUPAC: a propensity
    score), unless nobody has one; `metrics` (customer_id, metric, value, pre_value) gives
    each amount metric over the customers it measured, adjusted by its own pre-period (CUPED),
    unless an arm of them has fewer than k customers.
    """
    found: list[Adjusted] = []
    if customers[covariate].null_count() < customers.height:
        found.append(adjust_frame(customers, success, [covariate], metric=success,
                                  covariate=covariate_name, alpha=alpha))  # fmt: skip
    if metrics is None or metrics.is_empty():
        return tuple(found)
    values = metrics.select(
        pl.col("customer_id").cast(pl.Int64),
        pl.col("metric").cast(pl.String),
        pl.col("value", "pre_value").cast(pl.Float64),
    )
    for name in sorted(values["metric"].unique().to_list()):
        frame = customers.join(
            values.filter(pl.col("metric") == name).drop("metric"), on="customer_id"
        )
        n_t = int((frame["arm"] == "treatment").sum())
        if min(n_t, frame.height - n_t) < max(k, 2):
            continue
        found.append(adjust_frame(frame, "value", ["pre_value"], metric=str(name),
                                  covariate=f"pre-period {name}", alpha=alpha))  # fmt: skip
    return tuple(found)


def with_covariate(
    customers: pl.DataFrame, covariates: pl.DataFrame | None, column: str
) -> tuple[pl.DataFrame, str]:
    """Return the customers (with customer_id) joined to the covariates frame's one score as
    `column` (null where none is known), and the score's name in words ("": no frame)."""
    if covariates is None:
        return customers.with_columns(pl.lit(None, pl.Float64).alias(column)), ""
    names = [c for c in covariates.columns if c != "customer_id"]
    if "customer_id" not in covariates.columns or len(names) != 1:
        raise CampaignError(
            f"the covariates frame has the columns {', '.join(covariates.columns)}; give "
            "customer_id and one score column named for what it is"
        )
    known = covariates.select(
        pl.col("customer_id").cast(pl.Int64), pl.col(names[0]).cast(pl.Float64).alias(column)
    ).unique("customer_id", keep="first")
    return customers.join(known, on="customer_id", how="left"), names[0].replace("_", " ")


def covariate_matrix(frame: pl.DataFrame, columns: Sequence[str]) -> FloatArray | None:
    """Return the columns as an (n, k) float matrix, nulls filled with the column's mean; a
    column nobody has is left out; None when no column is left."""
    present = [c for c in columns if frame[c].null_count() < frame.height]
    if not present:
        return None
    filled = frame.select(
        pl.col(c).cast(pl.Float64).fill_nan(None).fill_null(strategy="mean") for c in present
    )
    return np.asarray(filled.to_numpy(), dtype=np.float64)


# -- arithmetic -------------------------------------------------------------------------------


def _inputs(
    y: npt.ArrayLike, x: npt.ArrayLike | None, treated: npt.ArrayLike
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray]:
    """Return y, the arm mask and x as an (n, k) matrix; refuse bad shapes, values, arms."""
    outcome = np.asarray(y, dtype=np.float64).ravel()
    arm = np.asarray(treated, dtype=bool).ravel()
    n = len(outcome)
    covariates = (
        np.zeros((n, 0))
        if x is None
        else np.asarray(x, dtype=np.float64).reshape(n, -1)
        if np.size(x)
        else np.zeros((n, 0))
    )
    if len(arm) != n:
        raise ConfigError(
            f"y and treated need one value per customer, got {n} and {len(arm)}", setting="y"
        )
    if not (np.isfinite(outcome).all() and np.isfinite(covariates).all()):
        raise ConfigError(
            "y and x must be finite numbers; fill a missing covariate (e.g. with its mean) "
            "before adjusting",
            setting="x",
        )
    if min(int(arm.sum()), int((~arm).sum())) < 2:
        raise ConfigError(
            "each arm needs at least two customers to estimate a variance; read out a larger "
            "sample",
            setting="treated",
        )
    return outcome, arm, covariates


def _pooled_slope(y: FloatArray, x: FloatArray, cell: npt.NDArray[np.int64]) -> FloatArray:
    """Return the slopes of y on x pooled within cells (the OLS slopes with a mean per cell)."""
    y_w = y - _cell_means(y, cell)
    x_w = x - np.column_stack([_cell_means(x[:, j], cell) for j in range(x.shape[1])])
    theta, *_ = np.linalg.lstsq(x_w, y_w, rcond=None)
    return np.asarray(theta, dtype=np.float64)


def _cell_means(values: FloatArray, cell: npt.NDArray[np.int64]) -> FloatArray:
    """Return each row's cell mean of `values`."""
    sums = np.bincount(cell, weights=values)
    counts = np.bincount(cell)
    return np.asarray((sums / np.maximum(counts, 1))[cell], dtype=np.float64)


def _within_correlation(
    y: FloatArray, fitted: FloatArray, arm: npt.NDArray[np.int64], theta: FloatArray
) -> float:
    """Return rho: the within-arm correlation of y with x theta, signed by theta (one x)."""
    y_w = y - _cell_means(y, arm)
    f_w = fitted - _cell_means(fitted, arm)
    denominator = math.sqrt(float(y_w @ y_w) * float(f_w @ f_w))
    if denominator == 0:
        return 0.0
    rho = float(y_w @ f_w) / denominator
    return rho if len(theta) == 1 and theta[0] < 0 else abs(rho)


def _ols_arm(y: FloatArray, design: FloatArray, alpha: float) -> tuple[Estimate, float]:
    """Return the OLS coefficient of design column 1 (the arm) with its HC2 standard error, and
    its classical standard error (residual variance pooled over every customer)."""
    bread = np.linalg.inv(design.T @ design)
    beta = bread @ (design.T @ y)
    residual = y - design @ beta
    leverage = np.einsum("ij,jk,ik->i", design, bread, design)
    scaled = design * (residual / np.sqrt(np.maximum(1.0 - leverage, 1e-12)))[:, None]
    covariance = bread @ (scaled.T @ scaled) @ bread
    pooled = float(residual @ residual) / max(len(y) - design.shape[1], 1)
    estimate = Estimate.normal(float(beta[1]), math.sqrt(max(covariance[1, 1], 0.0)), alpha)
    return estimate, math.sqrt(max(pooled * bread[1, 1], 0.0))


def _reduction(adjusted: Estimate, unadjusted: Estimate) -> float:
    if not unadjusted.std_error > 0:
        return math.nan
    return 1.0 - (adjusted.std_error / unadjusted.std_error) ** 2


def _check_level(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 is usual", setting="alpha")
