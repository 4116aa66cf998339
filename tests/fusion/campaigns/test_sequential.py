"""The mSPRT's always-valid p-value against its formula, and in an A/A simulation: with weekly
looks it keeps the false-positive rate within alpha, where a t-test repeated at the same looks
and acted on at the first small p-value does not (the reason the method exists)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from contracts.errors import ConfigError
from fusion.campaigns.sequential import boundary_z, msprt, sequential_test, weekly_looks

ALPHA = 0.05
RUNS, LOOKS, WEEKLY = 200, 8, 250  # 200 A/A tests, 8 weekly looks, 250 new customers/arm/week


def test_a_a_false_positives_stay_within_alpha_and_a_repeated_test_exceeds_it():
    rng = np.random.default_rng(2024)
    rate, tau = 0.05, 0.02
    # Both arms convert at 5%: successes per arm per week, summed into the looks' cumulative data.
    weekly = rng.binomial(WEEKLY, rate, size=(2, RUNS, LOOKS))
    successes = weekly.cumsum(axis=2)
    n = WEEKLY * np.arange(1, LOOKS + 1)
    p_t, p_c = successes[0] / n, successes[1] / n
    diff = p_t - p_c
    variance = p_t * (1 - p_t) / (n - 1) + p_c * (1 - p_c) / (n - 1)  # Welch = HC2
    _, always_valid, _ = msprt(diff, variance, tau=tau, alpha=ALPHA)
    sequential = int((always_valid[:, -1] <= ALPHA).sum())
    naive_p = 2 * stats.norm.sf(np.abs(diff) / np.sqrt(variance))
    naive = int((np.nanmin(naive_p, axis=1) < ALPHA).sum())
    print(f"\nA/A, {RUNS} runs x {LOOKS} weekly looks: mSPRT {sequential / RUNS:.1%}, "
          f"repeated z-test {naive / RUNS:.1%} (alpha {ALPHA:.0%})")  # fmt: skip
    # Within alpha's binomial interval: not more false positives than alpha explains...
    assert stats.binomtest(sequential, RUNS, ALPHA, alternative="greater").pvalue > 0.05
    assert sequential <= stats.binom.ppf(0.975, RUNS, ALPHA)
    # ... while peeking at a fixed-horizon test with the same looks rejects far too often.
    assert stats.binomtest(naive, RUNS, ALPHA, alternative="greater").pvalue < 0.001
    assert naive > stats.binom.ppf(0.975, RUNS, ALPHA)


def test_the_boundary_is_where_the_likelihood_ratio_reaches_one_over_alpha():
    variance = np.array([1e-3, 1e-4, 1e-5])
    tau = 0.02
    z = boundary_z(variance, tau=tau, alpha=ALPHA)
    log_lr, p, bound = msprt(z * np.sqrt(variance), variance, tau=tau, alpha=ALPHA)
    assert log_lr == pytest.approx(np.full(3, math.log(1 / ALPHA)), abs=1e-9)
    assert p == pytest.approx(np.full(3, ALPHA), abs=1e-12)
    assert bound == pytest.approx(z)
    # Looking earlier costs a wider boundary than the fixed-horizon 1.96, and it widens slowly.
    assert (z > stats.norm.ppf(1 - ALPHA / 2)).all() and z[2] > z[1]
    # The p-value never rises again once it fell.
    _, p, _ = msprt([0.05, 0.0, 0.001], [1e-4, 1e-4, 1e-4], tau=tau, alpha=ALPHA)
    assert p[1] == p[0] == p[2] < ALPHA


def test_weekly_looks_on_a_campaign_stop_at_the_first_crossing():
    rng = np.random.default_rng(5)
    n = 8_000
    start = datetime(2026, 10, 1)
    assigned = np.array([start + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 28, n)],
                        dtype="datetime64[us]")  # fmt: skip
    treated = rng.random(n) < 0.5
    converts = rng.random(n) < np.where(treated, 0.10, 0.04)
    delay = rng.integers(1, 20, n).astype("timedelta64[D]")
    success = np.where(converts, assigned + delay, np.datetime64("NaT"))
    test = sequential_test("ab", assigned, success, treated, None, tau=0.02, alpha=ALPHA, k=10)
    assert test.looks and test.crossed_at is not None
    first = test.crossed_at
    assert all(not look.crossed for look in test.looks[: first.number - 1])
    assert first.p_value <= ALPHA and abs(first.z) >= first.boundary_z
    assert [look.at for look in test.looks[:2]] == [
        start + timedelta(days=7),
        start + timedelta(days=14),
    ]
    data = test.to_dict()
    assert data["look_days"] == 7 and data["crossed_at"] == first.number
    assert "significant" in test.summary()
    # No effect: nothing crosses.
    null = sequential_test("ab", assigned, np.where(rng.random(n) < 0.05, assigned + delay,
                           np.datetime64("NaT")), treated, None, tau=0.02, alpha=ALPHA)  # fmt: skip
    assert null.crossed_at is None and "no boundary crossed" in null.summary()


def test_weekly_looks_schedule():
    start = datetime(2026, 10, 1)
    assert weekly_looks(start, start + timedelta(days=15)) == [
        start + timedelta(days=7),
        start + timedelta(days=14),
        start + timedelta(days=15),
    ]


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="tau"):
        msprt([0.1], [0.01], tau=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        boundary_z([0.01], tau=0.1, alpha=1.0)
