"""A campaign's statistics: the A/B test's size and power, its comparison, the sample-ratio check.

Testing discipline: fixed horizon by default. The A/B stage is sized once, before it starts, by
`sample_size` (two-sided, normal approximation on Cohen's h) and judged once, when both arms have
reached that planned size. A readout taken before then is labelled interim and carries no
decision (`fusion.campaigns.readout.Readout.decision` is None, `status` "interim"): a p-value
looked at repeatedly while the test runs and acted on at the first small one would reject a true
null far more often than alpha says. A campaign declared `analysis = "sequential"` is judged at
weekly looks by the always-valid mSPRT instead (`fusion.campaigns.sequential`).

    sample_size      customers per arm to detect the declared minimum effect at alpha and power;
                     with a covariate of correlation rho fixed before assignment (CUPED / CUPAC,
                     `fusion.campaigns.adjustment`), (1 - rho^2) of that
    achieved_power   the power the arms reached hold against that same effect
    compare          treatment vs control: rates, difference with Newcombe's interval, ratio with
                     Katz's log interval, the pooled two-sided z-test's p-value
    sample_ratio     the chi-square goodness-of-fit check of the arms' sizes against the shares
                     the assignment meant them to have (a mismatch means the split is broken and
                     no comparison of the arms can be trusted); `stage_sample_ratio` over a
                     campaign's customers, stage by stage

The comparison's arithmetic is `fusion.models.proportions.two_proportion_diff`; the power
calculations are statsmodels'. Bad input raises `contracts.errors.ConfigError` naming the
argument and what to pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize, stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from contracts.errors import ConfigError
from fusion.campaigns.declaration import Campaign
from fusion.models.proportions import two_proportion_diff

__all__ = [
    "SRM_ALPHA",
    "Comparison",
    "SampleRatio",
    "SampleSize",
    "achieved_power",
    "compare",
    "json_ready",
    "planned_size",
    "sample_ratio",
    "sample_size",
    "stage_sample_ratio",
]

SRM_ALPHA = 0.001
"""A sample-ratio mismatch is declared below this p-value: the check runs on every readout, so
it is strict to keep false alarms rare, and a real broken split gives a far smaller p-value."""


@dataclass(frozen=True)
class SampleSize:
    """The customers an A/B test needs per arm, their total, and Cohen's h of the effect."""

    treatment: int
    control: int
    total: int
    effect_size: float


@dataclass(frozen=True)
class Comparison:
    """Treatment vs control: rates, their difference and ratio with CIs, the z-test p-value.

    `diff` is rate_t - rate_c with Newcombe's hybrid score interval; `ratio` is rate_t / rate_c
    with Katz's log interval (nan when either arm has no success; inf when only the control has
    none); `p_value` is the pooled two-sided z-test's.
    """

    successes_t: int
    n_t: int
    successes_c: int
    n_c: int
    alpha: float
    rate_t: float
    rate_c: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    p_value: float

    def significant(self) -> bool:
        """Return whether the two-sided test rejects equal rates at `alpha`."""
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict: a nan or infinite number becomes None."""
        return {name: json_ready(value) for name, value in asdict(self).items()}


@dataclass(frozen=True)
class SampleRatio:
    """The chi-square goodness-of-fit check of the arm sizes against the expected shares."""

    n_treatment: int
    n_control: int
    expected_control_share: float
    statistic: float
    p_value: float
    alpha: float

    @property
    def mismatch(self) -> bool:
        """Return whether the split differs from the expected shares at `alpha`."""
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and the verdict as a JSON-ready dict."""
        fields = {name: json_ready(value) for name, value in asdict(self).items()}
        return fields | {"mismatch": self.mismatch}


def sample_size(
    *,
    baseline_rate: float,
    minimum_detectable_effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    control_share: float = 0.5,
    covariate_correlation: float = 0.0,
) -> SampleSize:
    """Return the customers per arm a two-sided test needs to detect the effect, rounded up.

    Normal approximation on Cohen's h = 2 asin(sqrt(p_t)) - 2 asin(sqrt(p_c)) with p_c the
    baseline and p_t = baseline + effect (statsmodels' `proportion_effectsize` and
    `NormalIndPower().solve_power` with ratio = control / treatment).

    Args:
        baseline_rate: the control's expected success rate, in (0, 1).
        minimum_detectable_effect: the smallest absolute gain worth detecting, > 0, with
            baseline + effect < 1.
        alpha: the two-sided level, in (0, 1).
        power: the wanted probability of detecting the effect when it is there, in (alpha, 1).
        control_share: the control's share of the test, in (0, 1).
        covariate_correlation: rho, the correlation with the outcome of the covariate the
            readout adjusts by, in [0, 1); 0 (the default) plans an unadjusted test. An
            adjusted difference has (1 - rho^2) of the variance (Deng et al. 2013), so the test
            needs (1 - rho^2) of the customers: solved as the effect h / sqrt(1 - rho^2).

    References:
        Cohen, J. (1988). Statistical Power Analysis for the Behavioral Sciences, 2nd ed.,
        ch. 6. Lawrence Erlbaum.
        Deng, A., Xu, Y., Kohavi, R. & Walker, T. (2013). Improving the sensitivity of online
        controlled experiments by utilizing pre-experiment data. WSDM '13, 123-132.
    """
    _check_rates(baseline_rate, minimum_detectable_effect)
    _check_level(alpha)
    if not alpha < power < 1:
        raise ConfigError(
            f"power must be in (alpha={alpha}, 1), got {power}; 0.8 is usual", setting="power"
        )
    if not 0 < control_share < 1:
        raise ConfigError(
            f"control_share must be in (0, 1), got {control_share}; 0.5 splits evenly",
            setting="control_share",
        )
    if not 0 <= covariate_correlation < 1:
        raise ConfigError(
            f"covariate_correlation must be in [0, 1), got {covariate_correlation}; 0 plans "
            "without adjustment, an earlier readout's rho gives the adjusted size",
            setting="covariate_correlation",
        )
    cohen_h = _effect(baseline_rate, minimum_detectable_effect)
    effect = cohen_h / math.sqrt(1 - covariate_correlation**2)
    ratio = control_share / (1 - control_share)
    # statsmodels' own power function, solved by bisection between 0 (power alpha) and the
    # one-tail closed form (where the near tail alone reaches the power): its generic solver
    # gives up on tiny effects and then returns a number that is not the answer.
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    closed = (z / effect) ** 2 * (1 + 1 / ratio)
    analysis = NormalIndPower()

    def gap(n: float) -> float:
        reached = analysis.power(effect, n, alpha, ratio=ratio, alternative="two-sided")
        return float(reached) - power

    with np.errstate(all="ignore"):
        nobs = float(optimize.brentq(gap, closed * 1e-9, closed, xtol=1e-9, rtol=1e-12))
    # Rounded to 1e-6 first so that a solver landing a hair above a whole number does not add
    # a customer.
    treatment = math.ceil(round(nobs, 6))
    control = math.ceil(round(nobs * ratio, 6))
    return SampleSize(treatment, control, treatment + control, cohen_h)


def planned_size(campaign: Campaign, *, covariate_correlation: float | None = None) -> SampleSize:
    """Return the A/B test's planned size: the declaration's power calculation.

    `covariate_correlation` (rho) defaults to the declared `stages.ab.covariate_correlation`
    (0 unless declared: the unadjusted size); the size shrinks by (1 - rho^2).
    """
    ab = campaign.stages.ab
    rho = ab.covariate_correlation if covariate_correlation is None else covariate_correlation
    return sample_size(
        baseline_rate=ab.baseline_rate,
        minimum_detectable_effect=ab.minimum_detectable_effect,
        alpha=ab.alpha,
        power=ab.power,
        control_share=campaign.control_share,
        covariate_correlation=rho,
    )


def achieved_power(
    *,
    baseline_rate: float,
    minimum_detectable_effect: float,
    n_treatment: int,
    n_control: int,
    alpha: float = 0.05,
) -> float:
    """Return the power of the two-sided test with these arm sizes against the declared effect.

    The same normal approximation on Cohen's h as `sample_size` (statsmodels' NormalIndPower).
    """
    _check_rates(baseline_rate, minimum_detectable_effect)
    _check_level(alpha)
    for name, n in (("n_treatment", n_treatment), ("n_control", n_control)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{name} must be a positive int, got {n!r}", setting=name)
    return float(
        NormalIndPower().power(
            effect_size=_effect(baseline_rate, minimum_detectable_effect),
            nobs1=n_treatment,
            alpha=alpha,
            ratio=n_control / n_treatment,
            alternative="two-sided",
        )
    )


def compare(
    successes_t: int, n_t: int, successes_c: int, n_c: int, *, alpha: float = 0.05
) -> Comparison:
    """Return treatment vs control: rates, Newcombe difference CI, Katz ratio CI, z p-value.

    The arithmetic is `fusion.models.proportions.two_proportion_diff` (method "newcombe"), which
    raises ConfigError unless 0 <= successes <= n and n >= 1 in both arms.
    """
    result = two_proportion_diff(successes_t, n_t, successes_c, n_c, alpha=alpha)
    return Comparison(
        successes_t=int(successes_t),
        n_t=int(n_t),
        successes_c=int(successes_c),
        n_c=int(n_c),
        alpha=alpha,
        rate_t=successes_t / n_t,
        rate_c=successes_c / n_c,
        diff=result.diff,
        diff_ci_low=result.ci_low,
        diff_ci_high=result.ci_high,
        ratio=result.ratio,
        ratio_ci_low=result.ratio_ci_low,
        ratio_ci_high=result.ratio_ci_high,
        p_value=result.p_value,
    )


def sample_ratio(
    n_treatment: int, n_control: int, *, expected_control_share: float, alpha: float = SRM_ALPHA
) -> SampleRatio:
    """Return the chi-square goodness-of-fit check of the arm sizes (scipy.stats.chisquare).

    Args:
        n_treatment: customers assigned to the treatment arm.
        n_control: customers assigned to the control arm.
        expected_control_share: the control's share the assignment meant, in (0, 1) (for arms
            pooled over stages of different shares: the stage shares weighted by stage size).
        alpha: a mismatch is declared below this p-value (default `SRM_ALPHA`).
    """
    for name, n in (("n_treatment", n_treatment), ("n_control", n_control)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {n!r}", setting=name)
    total = n_treatment + n_control
    if total < 1:
        raise ConfigError(
            "sample_ratio needs at least one assigned customer; read out a campaign that has "
            "assigned some",
            setting="n_treatment",
        )
    if not 0 < expected_control_share < 1:
        raise ConfigError(
            f"expected_control_share must be in (0, 1), got {expected_control_share}",
            setting="expected_control_share",
        )
    _check_level(alpha)
    expected = [total * (1 - expected_control_share), total * expected_control_share]
    statistic, p_value = stats.chisquare([n_treatment, n_control], f_exp=expected)
    return SampleRatio(
        n_treatment, n_control, expected_control_share, float(statistic), float(p_value), alpha
    )


def stage_sample_ratio(
    campaign: Campaign, customers: pl.DataFrame, expected_control_share: float | None = None
) -> SampleRatio | None:
    """Return the sample-ratio check of a campaign's customers (one row each: stage, stratum,
    arm) against the split the assignment rule gives, or None when an arm is empty.

    The rule controls c x n customers of each stage's n (to within one), c the stage's declared
    control share; `expected_control_share`, when given, replaces that expectation.
    """
    shares = {stage: campaign.stage_control_share(stage) for stage in ("pilot", "ab", "full")}
    strata = customers.group_by("stage", "stratum").agg(
        n=pl.len(), treated=(pl.col("arm") == "treatment").sum()
    )
    treated_share = 1.0 - pl.col("stage").replace_strict(shares, return_dtype=pl.Float64)
    expected_treated = strata.select((treated_share * pl.col("n")).sum()).item()
    total = int(strata["n"].sum())
    n_t = int(strata["treated"].sum())
    share = (
        expected_control_share
        if expected_control_share is not None
        else (total - expected_treated) / total
    )
    if n_t in (0, total) or not 0 < share < 1:
        return None
    return sample_ratio(n_t, total - n_t, expected_control_share=share)


def _effect(baseline_rate: float, minimum_detectable_effect: float) -> float:
    """Return Cohen's h of baseline + effect against the baseline (positive)."""
    return float(proportion_effectsize(baseline_rate + minimum_detectable_effect, baseline_rate))


def _check_rates(baseline_rate: float, minimum_detectable_effect: float) -> None:
    if not 0 < baseline_rate < 1:
        raise ConfigError(
            f"baseline_rate must be in (0, 1), got {baseline_rate}; give the control's "
            "expected success rate, e.g. 0.02",
            setting="baseline_rate",
        )
    if not 0 < minimum_detectable_effect < 1 - baseline_rate:
        raise ConfigError(
            f"minimum_detectable_effect must be in (0, 1 - baseline_rate), got "
            f"{minimum_detectable_effect}; give an absolute gain in rate, e.g. 0.01",
            setting="minimum_detectable_effect",
        )


def _check_level(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 is usual", setting="alpha")


def json_ready(value: Any) -> Any:
    """Return `value` with every nan or infinite float replaced by None, recursively (JSON has
    neither); mappings get string keys, tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value
