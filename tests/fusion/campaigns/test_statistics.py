"""Campaign statistics against statsmodels and scipy, to 1e-6, and against the textbook."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)
from statsmodels.stats.proportion import test_proportions_2indep as score_test

from contracts.errors import ConfigError
from fusion.campaigns.declaration import load_declaration
from fusion.campaigns.planning import stage_quota
from fusion.campaigns.statistics import (
    SRM_ALPHA,
    SampleSize,
    achieved_power,
    compare,
    planned_size,
    sample_ratio,
    sample_size,
)
from fusion.models.proportions import two_proportion_diff

TOL = 1e-6

# Small counts (0, 1, all successes, a handful of customers) next to campaign-sized ones.
COUNTS = [(0, 10), (1, 10), (3, 12), (10, 10), (5, 20), (1, 30), (12, 900), (30, 1000)]
GRID = [(s_t, n_t, s_c, n_c) for (s_t, n_t), (s_c, n_c) in itertools.product(COUNTS, COUNTS)]


def _reference(s_t: int, n_t: int, s_c: int, n_c: int, alpha: float) -> dict[str, float]:
    """Return statsmodels' diff CI, ratio CI and pooled z-test p-value of one table."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # statsmodels divides by zero on the way (odds ratios of all-or-nothing groups).
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = confint_proportions_2indep(
            s_t, n_t, s_c, n_c, compare="diff", method="newcomb", alpha=alpha
        )
        # Katz's interval needs a success in each arm (statsmodels divides by zero otherwise).
        ratio = (
            confint_proportions_2indep(
                s_t, n_t, s_c, n_c, compare="ratio", method="log", alpha=alpha
            )
            if s_t and s_c
            else (math.nan, math.nan)
        )
        _, p_z = proportions_ztest([s_t, s_c], [n_t, n_c])
        score = score_test(s_t, n_t, s_c, n_c, method="score", correction=False)
    return {
        "diff_low": float(diff[0]),
        "diff_high": float(diff[1]),
        "ratio_low": float(ratio[0]),
        "ratio_high": float(ratio[1]),
        "p_z": float(p_z),
        "p_score": float(score.pvalue),
    }


@pytest.mark.parametrize(("s_t", "n_t", "s_c", "n_c"), GRID)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_compare_agrees_with_statsmodels(s_t: int, n_t: int, s_c: int, n_c: int, alpha: float):
    result = compare(s_t, n_t, s_c, n_c, alpha=alpha)
    ref = _reference(s_t, n_t, s_c, n_c, alpha)
    assert result.rate_t == pytest.approx(s_t / n_t, abs=1e-15)
    assert result.rate_c == pytest.approx(s_c / n_c, abs=1e-15)
    assert result.diff == pytest.approx(s_t / n_t - s_c / n_c, abs=1e-15)
    assert result.diff_ci_low == pytest.approx(ref["diff_low"], abs=TOL)
    assert result.diff_ci_high == pytest.approx(ref["diff_high"], abs=TOL)
    if s_t > 0 and s_c > 0:
        assert result.ratio == pytest.approx((s_t / n_t) / (s_c / n_c), rel=1e-12)
        assert result.ratio_ci_low == pytest.approx(ref["ratio_low"], rel=TOL)
        assert result.ratio_ci_high == pytest.approx(ref["ratio_high"], rel=TOL)
    else:  # Katz's interval needs a success in each arm
        assert math.isnan(result.ratio_ci_low) and math.isnan(result.ratio_ci_high)
    pooled = (s_t + s_c) / (n_t + n_c)
    if 0 < pooled < 1:
        assert result.p_value == pytest.approx(ref["p_z"], abs=TOL)
        assert result.p_value == pytest.approx(ref["p_score"], abs=TOL)
    else:  # no variance under H0: statsmodels gives nan, the test cannot reject
        assert result.p_value == 1.0


def test_compare_is_the_shared_two_proportion_code():
    result = compare(30, 1000, 12, 900)
    shared = two_proportion_diff(30, 1000, 12, 900)
    assert (result.diff, result.diff_ci_low, result.diff_ci_high, result.p_value) == (
        shared.diff,
        shared.ci_low,
        shared.ci_high,
        shared.p_value,
    )
    assert (result.ratio, result.ratio_ci_low, result.ratio_ci_high) == (
        shared.ratio,
        shared.ratio_ci_low,
        shared.ratio_ci_high,
    )
    assert result.significant() == (shared.p_value < 0.05)


def test_comparison_to_dict_has_no_nan():
    data = compare(0, 10, 0, 12).to_dict()
    assert data["ratio"] is None and data["ratio_ci_low"] is None
    assert compare(3, 10, 0, 12).to_dict()["ratio"] is None  # inf


@pytest.mark.parametrize(
    ("baseline", "effect", "alpha", "power", "control_share"),
    [
        (0.10, 0.02, 0.05, 0.8, 0.5),
        (0.01, 0.01, 0.05, 0.8, 0.5),
        (0.02, 0.005, 0.05, 0.9, 0.5),
        (0.30, 0.05, 0.01, 0.8, 0.2),
        (0.05, 0.03, 0.10, 0.85, 0.7),
        (0.001, 0.002, 0.05, 0.8, 0.05),
    ],
)
def test_sample_size_agrees_with_statsmodels(
    baseline: float, effect: float, alpha: float, power: float, control_share: float
):
    size = sample_size(
        baseline_rate=baseline,
        minimum_detectable_effect=effect,
        alpha=alpha,
        power=power,
        control_share=control_share,
    )
    h = proportion_effectsize(baseline + effect, baseline)
    ratio = control_share / (1 - control_share)
    nobs1 = NormalIndPower().solve_power(
        effect_size=h, alpha=alpha, power=power, ratio=ratio, alternative="two-sided"
    )
    assert size.effect_size == pytest.approx(h, abs=1e-12)
    assert size.treatment == math.ceil(nobs1)
    assert size.control == math.ceil(nobs1 * ratio)
    assert size.total == size.treatment + size.control
    # Rounding up reaches the power asked for, one customer fewer in each arm does not.
    reached = achieved_power(
        baseline_rate=baseline,
        minimum_detectable_effect=effect,
        n_treatment=size.treatment,
        n_control=size.control,
        alpha=alpha,
    )
    assert reached >= power
    short = achieved_power(
        baseline_rate=baseline,
        minimum_detectable_effect=effect,
        n_treatment=size.treatment - 1,
        n_control=size.control - 1,
        alpha=alpha,
    )
    assert short < power


def test_sample_size_textbook_value():
    """10% vs 12%, two-sided alpha 0.05, power 0.8: 3,835 per arm on Cohen's h.

    By hand: h = 2 asin(sqrt(0.12)) - 2 asin(sqrt(0.10)) = 0.063982, n = 2 (z_0.975 + z_0.8)^2
    / h^2 = 3,834.6. The pooled-variance formula without continuity correction (Fleiss, 3rd ed.,
    eq. 4.14) gives 3,841: within 0.2%.
    """
    size = sample_size(baseline_rate=0.10, minimum_detectable_effect=0.02)
    assert size == SampleSize(3835, 3835, 7670, pytest.approx(0.0639821, abs=1e-7))
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert math.ceil(2 * z**2 / h**2) == 3835
    fleiss = (
        stats.norm.ppf(0.975) * math.sqrt(2 * 0.11 * 0.89)
        + stats.norm.ppf(0.8) * math.sqrt(0.10 * 0.90 + 0.12 * 0.88)
    ) ** 2 / 0.02**2
    assert math.ceil(fleiss) == 3841
    assert abs(size.treatment - 3841) / 3841 < 0.002


@pytest.mark.parametrize(
    ("n_t", "n_c", "alpha"), [(100, 100, 0.05), (3835, 3835, 0.05), (950, 50, 0.01), (7, 3, 0.1)]
)
def test_achieved_power_agrees_with_statsmodels(n_t: int, n_c: int, alpha: float):
    power = achieved_power(
        baseline_rate=0.10,
        minimum_detectable_effect=0.02,
        n_treatment=n_t,
        n_control=n_c,
        alpha=alpha,
    )
    reference = NormalIndPower().power(
        effect_size=proportion_effectsize(0.12, 0.10),
        nobs1=n_t,
        alpha=alpha,
        ratio=n_c / n_t,
        alternative="two-sided",
    )
    assert power == pytest.approx(float(reference), abs=TOL)


def test_achieved_power_at_the_textbook_size_is_the_power_asked_for():
    power = achieved_power(
        baseline_rate=0.10, minimum_detectable_effect=0.02, n_treatment=3835, n_control=3835
    )
    assert 0.8 <= power < 0.8001


@pytest.mark.parametrize(
    ("n_t", "n_c", "share"), [(500, 500, 0.5), (530, 470, 0.5), (950, 72, 0.05)]
)
def test_sample_ratio_is_scipys_chisquare(n_t: int, n_c: int, share: float):
    check = sample_ratio(n_t, n_c, expected_control_share=share)
    total = n_t + n_c
    expected = [total * (1 - share), total * share]
    reference = stats.chisquare([n_t, n_c], f_exp=expected)
    assert check.statistic == pytest.approx(float(reference.statistic), abs=TOL)
    assert check.p_value == pytest.approx(float(reference.pvalue), abs=TOL)
    by_hand = sum((o - e) ** 2 / e for o, e in zip((n_t, n_c), expected, strict=True))
    assert check.statistic == pytest.approx(by_hand, rel=1e-12)
    assert check.mismatch == (check.p_value < SRM_ALPHA)
    assert check.to_dict()["mismatch"] == check.mismatch


def test_sample_ratio_flags_a_broken_split():
    assert not sample_ratio(5030, 4970, expected_control_share=0.5).mismatch
    assert sample_ratio(5300, 4700, expected_control_share=0.5).mismatch


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"baseline_rate": 0.0, "minimum_detectable_effect": 0.01}, "baseline_rate"),
        ({"baseline_rate": 0.5, "minimum_detectable_effect": 0.5}, "minimum_detectable_effect"),
        ({"baseline_rate": 0.1, "minimum_detectable_effect": -0.01}, "minimum_detectable_effect"),
        ({"baseline_rate": 0.1, "minimum_detectable_effect": 0.01, "alpha": 1.5}, "alpha"),
        ({"baseline_rate": 0.1, "minimum_detectable_effect": 0.01, "power": 1.0}, "power"),
        (
            {"baseline_rate": 0.1, "minimum_detectable_effect": 0.01, "control_share": 1.0},
            "control_share",
        ),
    ],
)
def test_sample_size_refuses_bad_input(kwargs: dict[str, float], setting: str):
    with pytest.raises(ConfigError) as raised:
        sample_size(**kwargs)
    assert raised.value.setting == setting


def test_bad_counts_are_refused():
    with pytest.raises(ConfigError):
        compare(11, 10, 1, 10)
    with pytest.raises(ConfigError):
        achieved_power(
            baseline_rate=0.1, minimum_detectable_effect=0.01, n_treatment=0, n_control=10
        )
    with pytest.raises(ConfigError):
        sample_ratio(0, 0, expected_control_share=0.5)
    with pytest.raises(ConfigError):
        sample_ratio(10, 10, expected_control_share=0.0)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9])
def test_a_covariates_correlation_shrinks_the_planned_size_by_one_minus_rho_squared(rho: float):
    plain = sample_size(baseline_rate=0.05, minimum_detectable_effect=0.02)
    adjusted = sample_size(
        baseline_rate=0.05, minimum_detectable_effect=0.02, covariate_correlation=rho
    )
    # statsmodels at the effect an adjusted difference has: h / sqrt(1 - rho^2).
    h = proportion_effectsize(0.07, 0.05)
    nobs1 = NormalIndPower().solve_power(
        effect_size=h / math.sqrt(1 - rho**2), alpha=0.05, power=0.8, ratio=1.0
    )
    assert adjusted.treatment == math.ceil(nobs1)
    assert adjusted.effect_size == pytest.approx(h)
    assert adjusted.treatment == pytest.approx(plain.treatment * (1 - rho**2), abs=1.0)
    if rho == 0.0:
        assert adjusted == plain  # the default plans as before


def test_planned_size_reads_the_declared_correlation():
    campaign = load_declaration(
        {
            "name": "planned-rho",
            "priority": 1,
            "objective": {"value": 10.0},
            "audience": {"source": "model", "model": "acquisition", "deciles": [1]},
            "channel": {"kind": "sms", "capacity_per_branch_per_day": 10},
            "stages": {
                "whitelist": [1],
                "ab": {"baseline_rate": 0.05, "minimum_detectable_effect": 0.02,
                       "covariate_correlation": 0.6},
            },
        }
    )  # fmt: skip
    declared = planned_size(campaign)
    assert (
        declared.treatment
        == sample_size(
            baseline_rate=0.05, minimum_detectable_effect=0.02, covariate_correlation=0.6
        ).treatment
    )
    assert planned_size(campaign, covariate_correlation=0.0).treatment == 2199
    assert declared.treatment < 0.65 * 2199
    # The A/B stage's quota follows: the plan takes fewer customers into the test.
    plain = campaign.model_copy(
        update={"stages": campaign.stages.model_copy(
            update={"ab": campaign.stages.ab.model_copy(update={"covariate_correlation": 0.0})}
        )}
    )  # fmt: skip
    quota = stage_quota(campaign, "ab", audience=100_000, assigned=0)
    assert quota == math.ceil(declared.total * 1.01) + 100
    assert quota < stage_quota(plain, "ab", audience=100_000, assigned=0)  # type: ignore[operator]
    with pytest.raises(ConfigError, match="covariate_correlation"):
        sample_size(baseline_rate=0.05, minimum_detectable_effect=0.02, covariate_correlation=1.0)
