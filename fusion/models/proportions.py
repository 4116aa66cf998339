"""A/B test statistics: Wilson intervals of proportions and the difference of two of them.

A campaign's treated and control groups, a rescued list and its random control: each is a count
of responders out of a count of customers. `wilson_interval` gives each proportion its interval,
`two_proportion_diff` their difference (Newcombe's hybrid score interval by default) and ratio
(Katz's log interval), with the pooled z-test's p-value. Vectorised numpy where it takes arrays.

Bad input raises `contracts.errors.ConfigError` naming the argument and what to pass instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from contracts.errors import ConfigError

__all__ = ["DiffResult", "two_proportion_diff", "wilson_interval"]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DiffResult:
    """Difference of two proportions, a - b, with its CI; their ratio with its Katz CI."""

    diff: float
    ci_low: float
    ci_high: float
    ratio: float
    p_value: float
    ratio_ci_low: float = math.nan
    ratio_ci_high: float = math.nan
    method: str = "newcombe"  # how ci_low and ci_high were computed


def wilson_interval(
    successes: ArrayLike, n: ArrayLike, *, alpha: float = 0.05
) -> tuple[FloatArray, FloatArray]:
    """Return the (1 - alpha) Wilson score interval (low, high) of each proportion successes / n.

    Vectorised over arrays of counts. Unlike the Wald interval it stays inside [0, 1] and keeps
    its coverage for small counts and rates near 0, as campaign response rates are.

    References:
        Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
        inference. JASA 22(158), 209-212.
    """
    yes = np.asarray(successes, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    if np.any(total < 1) or np.any(yes < 0) or np.any(yes > total):
        raise ConfigError(
            "wilson_interval needs 0 <= successes <= n and n >= 1 in every group; "
            "pass counts, not rates",
            setting="n",
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 gives 95%", setting="alpha")
    z = float(stats.norm.ppf(1 - alpha / 2))
    z2 = z * z
    p = yes / total
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * np.sqrt(p * (1 - p) / total + z2 / (4 * total**2))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def two_proportion_diff(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    *,
    alpha: float = 0.05,
    method: Literal["newcombe", "wald"] = "newcombe",
) -> DiffResult:
    """Return p_a - p_b with a (1 - alpha) CI, p_a / p_b, and the two-sided z-test p-value.

    Args:
        successes_a: responders in group a (e.g. the rescued list).
        n_a: customers in group a.
        successes_b: responders in group b (e.g. the random control).
        n_b: customers in group b.
        alpha: 1 - confidence level; 0.05 gives a 95% interval.
        method: "newcombe" (default), Newcombe's hybrid score interval built from the two Wilson
            intervals: it keeps its coverage with the few responders of a control group.
            "wald": p_a - p_b +/- z * sqrt(p_a q_a / n_a + p_b q_b / n_b), the textbook
            interval, too narrow when either group has few successes.

    Returns:
        `DiffResult`. The p-value uses the pooled proportion under H0: p_a = p_b (1.0 when both
        groups are all 0 or all 1). `ratio` is inf when p_b = 0 < p_a and nan when both are 0.
        Its CI is Katz's log interval, exp(log(ratio) +/- z * sqrt(1/s_a - 1/n_a + 1/s_b -
        1/n_b)), nan when either group has no success.

    References:
        Newcombe, R. G. (1998). Interval estimation for the difference between independent
        proportions: comparison of eleven methods. Statistics in Medicine 17, 873-890 (method 10).
        Agresti, A. (2013). Categorical Data Analysis, 3rd ed., sec. 3.1.2-3.1.3. Wiley.
        Katz, D. et al. (1978). Obtaining confidence intervals for the risk ratio in cohort
        studies. Biometrics 34(3), 469-474.
    """
    for s_name, s, n_name, n in (
        ("successes_a", successes_a, "n_a", n_a),
        ("successes_b", successes_b, "n_b", n_b),
    ):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ConfigError(f"{n_name} must be a positive int, got {n!r}", setting=n_name)
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or not 0 <= s <= n:
            raise ConfigError(
                f"{s_name} must be an int in [0, {n_name}={n}], got {s!r}", setting=s_name
            )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 gives 95%", setting="alpha")
    if method not in ("newcombe", "wald"):
        raise ConfigError(f"method must be 'newcombe' or 'wald', got {method!r}", setting="method")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    diff = p_a - p_b
    z = float(stats.norm.ppf(1 - alpha / 2))
    if method == "wald":
        half = z * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
        ci_low, ci_high = diff - half, diff + half
    else:
        (l_a, l_b), (u_a, u_b) = wilson_interval(
            np.array([successes_a, successes_b]), np.array([n_a, n_b]), alpha=alpha
        )
        ci_low = diff - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
        ci_high = diff + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p_value = float(2 * stats.norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    ratio = p_a / p_b if p_b > 0 else (math.inf if p_a > 0 else math.nan)
    ratio_low = ratio_high = math.nan
    if successes_a > 0 and successes_b > 0:
        spread = z * math.sqrt(1 / successes_a - 1 / n_a + 1 / successes_b - 1 / n_b)
        ratio_low, ratio_high = ratio * math.exp(-spread), ratio * math.exp(spread)
    return DiffResult(
        diff, float(ci_low), float(ci_high), ratio, p_value, ratio_low, ratio_high, method
    )
