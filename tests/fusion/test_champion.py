"""The champion/challenger statistics: the Qini bootstrap and the gate's rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from contracts.errors import ConfigError
from fusion.models import metrics
from fusion.models.champion import GateRule, judge_scores, judge_uplift, qini_difference


def _trial(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (y, treatment, true uplift) of a trial whose uplift follows the true one."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(-0.02, 0.2, n)
    t = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.05 + t * true).astype(int)
    return y, t, true


def test_the_bootstrap_agrees_with_the_point_qini_and_scipys_bootstrap():
    y, t, true = _trial(4_000, 1)
    noisy = true + np.random.default_rng(2).normal(0, 0.1, len(true))
    found = qini_difference(y, t, true, noisy, draws=400, seed=3)
    assert found.qini_a == metrics.qini_auc_score(y, true, t)
    assert found.diff == pytest.approx(found.qini_a - found.qini_b)
    assert found.ci_low < found.diff < found.ci_high

    def paired(index: np.ndarray) -> float:
        i = index.astype(int)
        return metrics.qini_auc_score(y[i], true[i], t[i]) - metrics.qini_auc_score(
            y[i], noisy[i], t[i]
        )

    reference = stats.bootstrap(
        (np.arange(len(y)),), paired, n_resamples=200, method="percentile",
        vectorized=False, random_state=4,
    )  # fmt: skip
    low, high = reference.confidence_interval
    # Two Monte Carlo intervals of the same sampling distribution: close, not equal.
    assert found.ci_low == pytest.approx(low, abs=0.04)
    assert found.ci_high == pytest.approx(high, abs=0.04)


def test_the_gate_passes_a_better_uplift_model_and_refuses_a_worse_one():
    y, t, true = _trial(6_000, 5)
    worse = np.random.default_rng(6).normal(size=len(true))
    rule = GateRule(draws=200)
    assert judge_uplift(y, t, true, worse, rule).passed
    refused = judge_uplift(y, t, worse, true, rule)
    assert not refused.passed and refused.diff < 0 and "does not beat" in refused.verdict()


def test_the_gate_judges_auc_by_delong_and_refuses_a_tie():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 3_000)
    good = y + rng.normal(0, 1.0, len(y))
    bad = y + rng.normal(0, 3.0, len(y))
    rule = GateRule()
    better = judge_scores(y, good, bad, rule)
    reference = metrics.auc_difference(y, good, bad)
    assert better.passed and better.ci_low == reference.ci_low and better.method == "DeLong"
    assert not judge_scores(y, bad, good, rule).passed
    assert not judge_scores(y, good, good, rule).passed  # a tie keeps the champion
    assert better.to_dict()["metric"] == "auc"
    with pytest.raises(ConfigError, match="margins"):
        GateRule(auc_margin=-1)
    with pytest.raises(ConfigError, match="50 draws"):
        GateRule(draws=10)
