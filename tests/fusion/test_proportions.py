"""A/B test proportions against published tables (Newcombe 1998) and the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.errors import ConfigError
from fusion.models.proportions import DiffResult, two_proportion_diff, wilson_interval


@pytest.mark.parametrize(
    ("counts", "low", "high"),
    [  # Newcombe (1998), Table II, method 10 (hybrid score), to the table's 4 decimals
        ((56, 70, 48, 80), 0.0524, 0.3339),
        ((9, 10, 3, 10), 0.1705, 0.8090),
        ((6, 7, 2, 7), 0.0582, 0.8062),
        ((5, 56, 0, 29), -0.0381, 0.1926),
        ((0, 10, 0, 20), -0.1611, 0.2775),
        ((0, 10, 0, 10), -0.2775, 0.2775),
        ((10, 10, 0, 20), 0.6791, 1.0),
        ((10, 10, 0, 10), 0.6075, 1.0),
    ],
)
def test_newcombe_interval_matches_the_published_table(
    counts: tuple[int, int, int, int], low: float, high: float
):
    result = two_proportion_diff(*counts)
    assert result.method == "newcombe"
    assert result.ci_low == pytest.approx(low, abs=5e-5)
    assert result.ci_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_is_vectorised_and_matches_the_published_table():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I
    low, high = wilson_interval(np.array([81, 15, 0, 1]), np.array([263, 148, 20, 29]))
    assert low == pytest.approx([0.2553, 0.0624, 0.0, 0.0061], abs=5e-5)
    assert high == pytest.approx([0.3662, 0.1605, 0.1611, 0.1718], abs=5e-5)
    with pytest.raises(ConfigError, match="pass counts, not rates"):
        wilson_interval([3], [0])
    with pytest.raises(ConfigError, match="pass counts, not rates"):
        wilson_interval([11], [10])


def test_two_proportion_diff_textbook():
    result = two_proportion_diff(33, 1000, 6, 1000, method="wald")
    assert isinstance(result, DiffResult) and result.method == "wald"
    z = 1.959963984540054
    se = math.sqrt(0.033 * 0.967 / 1000 + 0.006 * 0.994 / 1000)  # 0.0061543...
    assert result.diff == pytest.approx(0.027, abs=1e-12)
    assert result.ratio == pytest.approx(5.5)
    assert result.ci_low == pytest.approx(0.027 - z * se, abs=1e-9)  # 0.014938
    assert result.ci_high == pytest.approx(0.027 + z * se, abs=1e-9)  # 0.039062
    pooled = 39 / 2000
    z_stat = 0.027 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)  # 4.366
    assert result.p_value == pytest.approx(math.erfc(z_stat / math.sqrt(2)), rel=1e-9)
    assert two_proportion_diff(0, 10, 0, 10).p_value == 1.0
    # Katz: log(5.5) +/- z sqrt(1/33 - 1/1000 + 1/6 - 1/1000) -> 2.3148 .. 13.068
    spread = z * math.sqrt(1 / 33 - 1 / 1000 + 1 / 6 - 1 / 1000)
    assert result.ratio_ci_low == pytest.approx(5.5 * math.exp(-spread), rel=1e-12)
    assert result.ratio_ci_high == pytest.approx(5.5 * math.exp(spread), rel=1e-12)
    assert result.ratio_ci_low == pytest.approx(2.3148, abs=1e-4)
    assert math.isnan(two_proportion_diff(3, 10, 0, 10).ratio_ci_low)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: two_proportion_diff(5, 0, 1, 10), "n_a must be a positive int"),
        (lambda: two_proportion_diff(11, 10, 1, 10), r"successes_a must be an int in \[0"),
        (lambda: two_proportion_diff(1, 10, 1, 10, alpha=1.0), "alpha must be in"),
    ],
)
def test_bad_input_raises_config_error(call, message: str):
    with pytest.raises(ConfigError, match=message):
        call()
