"""Early looks that keep their error rate: the mixture sequential probability ratio test.

A p-value watched while a test runs and acted on at the first small one rejects a true null far
more often than alpha says (with eight weekly looks at alpha = 0.05, about one A/A test in six;
`tests/fusion/campaigns/test_sequential.py` measures it). The mSPRT of Johari et al. gives an
always-valid p-value instead: at every look n,

    Lambda_n = sqrt(V_n / (V_n + tau^2)) exp(tau^2 d_n^2 / (2 V_n (V_n + tau^2)))
    p_n      = min(1, p_{n-1}, 1 / Lambda_n)

with d_n the estimated difference (treatment - control; unadjusted or CUPED-adjusted) and V_n
its variance under no effect (the classical OLS variance, pooled over arms: an arm's own
variance is 0 while it has no success yet), and tau^2 the variance of the normal mixture over
effects (here tau = the declared minimum detectable effect: the effects the test is meant to
find). Rejecting the first time p_n <= alpha keeps the type-I error at or below alpha however
often and whenever one looks (Ville's inequality applied to the likelihood-ratio martingale).
In z = d_n / sqrt(V_n) terms the boundary of look n is

    |z_n| >= sqrt(((V_n + tau^2) / tau^2) (2 ln(1 / alpha) + ln((V_n + tau^2) / V_n)))

which starts wide and widens slowly as V_n shrinks: the price of looking early.

    msprt            vectorised: log Lambda, always-valid p and the boundary of each look
    boundary_z       the |z| a look has to reach
    weekly_looks     the look schedule of an experiment's arrival times, one look every
                     `LOOK_DAYS` days from its first assignment
    sequential_test  an experiment's looks from per-customer arrays: `SequentialTest`
    stage_tests      a campaign's A/B test (pilot + ab) and full launch from a customer frame

References:
    Johari, R., Koomen, P., Pekelis, L. & Walsh, D. (2017). Peeking at A/B tests: why it
    matters, and what to do about it. KDD '17, 1517-1525. (Operations Research 70(3), 2022.)
    Robbins, H. (1970). Statistical methods related to the law of the iterated logarithm.
    Ann. Math. Statist. 41(5), 1397-1409.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.adjustment import covariate_matrix, cuped
from fusion.campaigns.statistics import json_ready

__all__ = [
    "LOOK_DAYS",
    "METHOD",
    "Look",
    "SequentialTest",
    "boundary_z",
    "msprt",
    "sequential_test",
    "stage_tests",
    "weekly_looks",
]

LOOK_DAYS = 7
METHOD = "mSPRT (normal mixture, always-valid p-value; Johari et al. 2017)"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Look:
    """One look: the data up to `at`, the estimate, its boundary and the always-valid p."""

    number: int
    at: datetime
    n_treatment: int
    n_control: int
    estimate: float
    std_error: float
    z: float
    boundary_z: float
    boundary: float  # the |estimate| the look had to reach: boundary_z x std_error
    p_value: float  # always-valid: the running minimum of 1 / Lambda
    crossed: bool


@dataclass(frozen=True)
class SequentialTest:
    """An experiment's looks and what they decided: "significant" once a look crossed."""

    scope: str  # "ab" (pilot + ab) or "full"
    tau: float
    alpha: float
    adjusted: bool  # whether the looks read the covariate-adjusted estimate
    looks: tuple[Look, ...]

    @property
    def crossed_at(self) -> Look | None:
        """Return the first look whose always-valid p-value reached alpha, or None."""
        return next((look for look in self.looks if look.crossed), None)

    @property
    def p_value(self) -> float | None:
        """Return the always-valid p-value at the last look (None before any look)."""
        return self.looks[-1].p_value if self.looks else None

    def summary(self) -> str:
        """Return where the test stands, in words."""
        first = self.crossed_at
        if first is not None:
            return (
                f"significant: look {first.number} of {len(self.looks)} "
                f"({first.at.date().isoformat()}) crossed the boundary, always-valid p = "
                f"{first.p_value:.3g} <= {self.alpha:g}"
            )
        if not self.looks:
            return "no look yet: too few customers in an arm"
        return (
            f"no boundary crossed in {len(self.looks)} weekly looks (always-valid p = "
            f"{self.looks[-1].p_value:.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the test as JSON-ready data: method, schedule, boundary per look, decision."""
        first = self.crossed_at
        return json_ready(
            {
                "scope": self.scope,
                "method": METHOD,
                "tau": self.tau,
                "alpha": self.alpha,
                "adjusted": self.adjusted,
                "look_days": LOOK_DAYS,
                "looks": [asdict(look) | {"at": look.at.isoformat()} for look in self.looks],
                "crossed_at": None if first is None else first.number,
                "p_value": self.p_value,
                "summary": self.summary(),
            }
        )


def msprt(
    estimates: npt.ArrayLike, variances: npt.ArrayLike, *, tau: float, alpha: float = 0.05
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return (log Lambda, always-valid p, boundary |z|) of each look, along the last axis.

    Vectorised: a (runs, looks) array of estimates and variances gives (runs, looks) arrays.
    A look with a variance of 0 or nan has Lambda = 1 (it adds no evidence).
    """
    _check(tau, alpha)
    d = np.asarray(estimates, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    tau2 = tau * tau
    good = np.isfinite(d) & np.isfinite(v) & (v > 0)
    v_safe = np.where(good, v, 1.0)
    log_lr = 0.5 * np.log(v_safe / (v_safe + tau2)) + tau2 * np.where(good, d, 0.0) ** 2 / (
        2 * v_safe * (v_safe + tau2)
    )
    log_lr = np.where(good, log_lr, 0.0)
    p = np.minimum(1.0, np.minimum.accumulate(np.exp(-log_lr), axis=-1))
    return log_lr, p, np.where(good, boundary_z(v_safe, tau=tau, alpha=alpha), np.nan)


def boundary_z(variance: npt.ArrayLike, *, tau: float, alpha: float = 0.05) -> FloatArray:
    """Return the |z| at which Lambda reaches 1 / alpha for an estimate of this variance."""
    _check(tau, alpha)
    v = np.asarray(variance, dtype=np.float64)
    tau2 = tau * tau
    return np.sqrt((v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log((v + tau2) / v)))


def weekly_looks(first: datetime, last: datetime) -> list[datetime]:
    """Return the look times: every `LOOK_DAYS` days after `first`, the last one at `last`."""
    looks = []
    at = first + timedelta(days=LOOK_DAYS)
    while at < last:
        looks.append(at)
        at += timedelta(days=LOOK_DAYS)
    looks.append(last)
    return looks


def sequential_test(
    scope: str,
    assigned_at: npt.NDArray[np.datetime64],
    success_at: npt.NDArray[np.datetime64],
    treated: npt.ArrayLike,
    x: npt.ArrayLike | None,
    *,
    tau: float,
    alpha: float = 0.05,
    k: int = 1,
    until: datetime | None = None,
) -> SequentialTest:
    """Return the experiment's weekly looks and the mSPRT over them.

    Args:
        scope: the experiment's name in the readout ("ab" or "full").
        assigned_at: each customer's assignment time (datetime64).
        success_at: the time of each customer's first success after assignment (NaT: none).
        treated: True for the treatment arm.
        x: covariates fixed before assignment (None: the looks read the unadjusted difference).
        tau: the mixture's standard deviation, on the estimate's scale.
        alpha: the test's level.
        k: a look is taken only when each arm has at least k customers and gained none or at
            least k since the last look (no published look isolates fewer than k customers),
            and something changed since the last look.
        until: the last look (default: the last success or assignment).
    """
    _check(tau, alpha)
    arm = np.asarray(treated, dtype=bool)
    assigned = np.asarray(assigned_at, dtype="datetime64[us]")
    success = np.asarray(success_at, dtype="datetime64[us]")
    if len(assigned) == 0:
        return SequentialTest(scope, tau, alpha, x is not None, ())
    observed = success[~np.isnat(success)]
    end = (
        np.datetime64(until, "us")
        if until is not None
        else max(assigned.max(), observed.max() if observed.size else assigned.max())
    )
    times = weekly_looks(_py(assigned.min()), _py(end))
    rows: list[tuple[datetime, int, int, float, float]] = []
    last = (0, 0, -1)
    for at in times:
        cut = np.datetime64(at, "us")
        entered = assigned <= cut
        n_t, n_c = int((entered & arm).sum()), int((entered & ~arm).sum())
        grew = (n_t - last[0], n_c - last[1])
        y = (~np.isnat(success[entered]) & (success[entered] <= cut)).astype(np.float64)
        if (
            min(n_t, n_c) < max(k, 2)
            or any(0 < g < k for g in grew)
            or (n_t, n_c, int(y.sum())) == last  # nothing new since the last look
        ):
            continue
        covariates = None if x is None else np.asarray(x, dtype=np.float64)[entered]
        result = cuped(y, covariates, arm[entered], alpha=alpha)
        # The variance under no effect (pooled over arms): an arm's HC2 variance is 0 while it
        # has no success yet, and a look would then cross on nothing.
        if not result.null_std_error > 0:
            continue
        rows.append((at, n_t, n_c, result.adjusted.estimate, result.null_std_error))
        last = (n_t, n_c, int(y.sum()))
    return _test(scope, rows, tau=tau, alpha=alpha, adjusted=x is not None)


def _test(
    scope: str,
    rows: list[tuple[datetime, int, int, float, float]],
    *,
    tau: float,
    alpha: float,
    adjusted: bool,
) -> SequentialTest:
    """Return the SequentialTest of the looks' (time, n_t, n_c, estimate, std_error) rows."""
    if not rows:
        return SequentialTest(scope, tau, alpha, adjusted, ())
    estimate = np.array([r[3] for r in rows])
    std_error = np.array([r[4] for r in rows])
    _, p, bound = msprt(estimate, std_error**2, tau=tau, alpha=alpha)
    looks = []
    for i, (at, n_t, n_c, d, se) in enumerate(rows):
        crossed = bool(p[i] <= alpha)
        looks.append(Look(i + 1, at, n_t, n_c, float(d), float(se), float(d / se),
                          float(bound[i]), float(bound[i] * se), float(p[i]), crossed))  # fmt: skip
    return SequentialTest(scope, tau, alpha, adjusted, tuple(looks))


def _py(value: np.datetime64) -> datetime:
    """Return a datetime64[us] as a naive datetime."""
    result = value.astype("datetime64[us]").astype(datetime)
    if not isinstance(result, datetime):
        raise ConfigError("look times must be datetimes", setting="assigned_at")
    return result


def _check(tau: float, alpha: float) -> None:
    if not (math.isfinite(tau) and tau > 0):
        raise ConfigError(
            f"tau must be a positive number, got {tau}; take the minimum detectable effect",
            setting="tau",
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 is usual", setting="alpha")


def stage_tests(
    frame: pl.DataFrame,
    covariates: Sequence[str],
    *,
    stages: Sequence[str],
    tau: float,
    alpha: float = 0.05,
    k: int = 1,
) -> dict[str, SequentialTest]:
    """Return the sequential tests of a campaign's A/B test (pilot + ab) and its full launch.

    `frame`: one row per customer with `stage`, `arm`, `assigned_at`, `success_at` (the first
    success at or after assignment; null: none) and the `covariates` columns (mean-filled, see
    `fusion.campaigns.adjustment.covariate_matrix`). A scope is tested when its stages are in
    `stages` ("ab" for the A/B test, "full").
    """
    scopes = {"ab": ("pilot", "ab"), "full": ("full",)}
    tests = {}
    for scope, members in scopes.items():
        if scope not in stages:
            continue
        part = frame.filter(pl.col("stage").is_in(members))
        if part.is_empty():
            continue
        tests[scope] = sequential_test(
            scope,
            part["assigned_at"].cast(pl.Datetime("us")).to_numpy(),
            part["success_at"].cast(pl.Datetime("us")).to_numpy(),
            (part["arm"] == "treatment").to_numpy(),
            covariate_matrix(part, covariates),
            tau=tau,
            alpha=alpha,
            k=k,
        )
    return tests
