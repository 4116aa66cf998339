"""Budgeted targeting and the correlation with true uplift, worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.errors import ConfigError
from fusion.models.proportions import two_proportion_diff
from fusion.models.targeting import Budget, budgeted_targeting, uplift_correlation

# --- budgeted targeting -------------------------------------------------------------------------

TRUE_UPLIFT = [0.5, 0.0, 0.3, 0.1, 0.0, 0.2, 0.0, 0.4, 0.0, 0.1]
UPLIFT_SCORE = [0.45, 0.05, 0.25, 0.1, 0.0, 0.15, 0.02, 0.35, 0.01, 0.12]
RESPONSE_SCORE = [0.1, 0.9, 0.2, 0.3, 0.8, 0.7, 0.4, 0.1, 0.6, 0.5]


def test_budgeted_targeting_by_hand_from_the_truth():
    results = budgeted_targeting(
        {"uplift": UPLIFT_SCORE, "response": RESPONSE_SCORE},
        budget=Budget(contacts=3, cost_per_contact=2.0, value_per_conversion=10.0),
        true_uplift=TRUE_UPLIFT,
        baseline="response",
    )
    assert list(results) == ["uplift", "response"]
    up, resp = results["uplift"], results["response"]
    np.testing.assert_array_equal(up.chosen, [0, 2, 7])  # true uplift 0.5 + 0.3 + 0.4
    np.testing.assert_array_equal(resp.chosen, [1, 4, 5])  # 0.0 + 0.0 + 0.2
    assert up.incremental_conversions == pytest.approx(1.2)
    assert resp.incremental_conversions == pytest.approx(0.2)
    assert (up.cost, resp.cost) == (6.0, 6.0)
    assert up.value == pytest.approx(12.0) and resp.value == pytest.approx(2.0)
    assert up.net_value == pytest.approx(6.0) and resp.net_value == pytest.approx(-4.0)
    assert up.roi == pytest.approx(1.0) and resp.roi == pytest.approx(-4.0 / 6.0)
    assert up.ratio == pytest.approx(6.0) and resp.ratio == 1.0
    assert up.true_incremental == up.incremental_conversions
    assert up.estimated_incremental is None and up.estimated_ci is None


def test_budgeted_targeting_by_hand_from_an_ab_test():
    score = [8, 7, 6, 5, 4, 3, 2, 1]
    treatment = [1, 0, 1, 0, 1, 0, 1, 0]
    y = [1, 0, 1, 1, 0, 0, 0, 1]
    (result,) = budgeted_targeting(
        {"model": score},
        budget=Budget(contacts=4, cost_per_contact=0.0, value_per_conversion=5.0),
        y=y,
        treatment=treatment,
    ).values()
    # top 4 = rows 0-3: treated 2/2 responded, control 1/2, so 0.5 x 4 = 2 extra conversions
    diff = two_proportion_diff(2, 2, 1, 2)
    assert result.estimated_incremental == pytest.approx(2.0)
    assert result.incremental_conversions == pytest.approx(2.0)
    assert result.estimated_ci == pytest.approx((4 * diff.ci_low, 4 * diff.ci_high))
    assert result.true_incremental is None and result.ratio is None
    assert result.value == pytest.approx(10.0) and result.cost == 0.0
    assert math.isnan(result.roi)  # free contacts have no return on cost


@pytest.mark.parametrize("seed", range(20))
def test_budgeted_targeting_breaks_ties_as_uplift_at_k(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    score = rng.integers(0, 4, n).astype(float)  # few values, many ties
    k = int(rng.integers(1, n + 1))
    (result,) = budgeted_targeting(
        {"s": score},
        budget=Budget(contacts=k, cost_per_contact=1.0, value_per_conversion=1.0),
        true_uplift=score,
    ).values()
    expected = np.sort(np.argsort(score, kind="stable")[::-1][:k])
    np.testing.assert_array_equal(result.chosen, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"contacts": 11}, "contacts must be an int between 1 and the 10 customers"),
        ({"contacts": 0}, "contacts must be an int between 1"),
        ({"contacts": 0.3}, "contacts must be an int between 1"),
        ({"baseline": "random"}, "baseline 'random' is not a strategy"),
        ({"cost_per_contact": -1.0}, "cost_per_contact must be finite and >= 0"),
        ({"true_uplift": None}, "pass true_uplift .* or y and treatment"),
        ({"y": [0, 1] * 5}, "pass y and treatment together"),
        ({"true_uplift": TRUE_UPLIFT[:9]}, "true_uplift has 9 values but the scores has 10"),
        ({"scores": {"a": UPLIFT_SCORE, "b": [1.0, 2.0]}}, r"scores\['b'\] has 2 values"),
        ({"scores": {"a": [math.nan] * 10}}, "NaN or infinite"),
        ({"scores": {}}, "scores is empty"),
        (
            {"y": [1, 0] * 5, "treatment": [1] * 9 + [0]},
            "chose 3 treated and 0 control customers",
        ),
    ],
)
def test_budgeted_targeting_refuses_bad_arguments(kwargs, message):
    arguments = {
        "scores": {"uplift": UPLIFT_SCORE},
        "contacts": 3,
        "cost_per_contact": 1.0,
        "value_per_conversion": 10.0,
        "true_uplift": TRUE_UPLIFT,
    } | kwargs
    scores = arguments.pop("scores")
    money = {k: arguments.pop(k) for k in ("contacts", "cost_per_contact", "value_per_conversion")}
    with pytest.raises(ConfigError, match=message):
        budgeted_targeting(scores, budget=Budget(**money), **arguments)


# --- correlation --------------------------------------------------------------------------------


def test_uplift_correlation_pearson_and_spearman():
    truth = np.linspace(-0.2, 0.5, 50)
    assert uplift_correlation(2 * truth + 1, truth) == pytest.approx(1.0)
    assert uplift_correlation(-truth, truth) == pytest.approx(-1.0)
    cubed = truth**3
    assert uplift_correlation(cubed, truth) < 1.0 - 1e-3
    assert uplift_correlation(cubed, truth, method="spearman") == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("predicted", "true", "message"),
    [
        ([0.1, 0.1, 0.1], [0.1, 0.2, 0.3], "predicted is constant"),
        ([0.1, 0.2], [0.1, 0.2, 0.3], "true has 3 values but predicted has 2"),
        ([0.1, math.inf], [0.1, 0.2], "predicted has NaN or infinite"),
    ],
)
def test_uplift_correlation_refuses_what_it_cannot_measure(predicted, true, message):
    with pytest.raises(ConfigError, match=message):
        uplift_correlation(predicted, true)
