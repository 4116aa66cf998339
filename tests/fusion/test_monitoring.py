"""fusion.monitoring: the stability index, its bins, the settings; checked against numpy/scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from contracts.errors import ConfigError, ModelError
from fusion.monitoring import (
    MISSING,
    OTHER,
    Bins,
    ModelProfile,
    MonitorSettings,
    Status,
    column_bins,
    model_stability,
    population_stability,
    worst,
)

EPS = 1e-4


def direct_psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """The index written out: shares floored at eps, sum (a - e) ln(a / e)."""
    e = np.maximum(expected / expected.sum(), eps)
    a = np.maximum(actual / actual.sum(), eps)
    return float(((a - e) * np.log(a / e)).sum())


def direct_numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin k holds edges[k-1] <= x < edges[k]; NaN last: counted one bin at a time."""
    present = values[~np.isnan(values)]
    bounds = np.r_[-np.inf, edges, np.inf]
    inside = [((present >= lo) & (present < hi)).sum() for lo, hi in itertools.pairwise(bounds)]
    return np.array([*inside, np.isnan(values).sum()], dtype=np.int64)


def skewed(rng: np.random.Generator, n: int, shift: float, missing: float) -> np.ndarray:
    x = rng.lognormal(shift, 1.0, n)
    x[rng.random(n) < missing] = np.nan
    return x


def test_numeric_psi_agrees_with_numpy_and_with_scipys_jeffreys_divergence():
    rng = np.random.default_rng(3)
    training = skewed(rng, 20_000, 0.0, 0.05)
    now = skewed(rng, 15_000, 0.3, 0.12)
    bins = column_bins(pl.Series(training))
    edges = np.quantile(training[~np.isnan(training)], np.linspace(0.1, 0.9, 9))
    assert np.allclose(bins.edges, edges, rtol=0, atol=0)
    assert bins.counts == tuple(direct_numeric_counts(training, edges))
    actual = bins.count(pl.Series(now))
    assert np.array_equal(actual, direct_numeric_counts(now, edges))
    psi = population_stability(bins.counts, actual, epsilon=EPS)
    assert abs(psi - direct_psi(np.array(bins.counts), actual)) < 1e-9
    # With no empty bin the index is the symmetric KL divergence of the two share vectors.
    e, a = np.array(bins.counts) / sum(bins.counts), actual / actual.sum()
    assert abs(psi - (stats.entropy(a, e) + stats.entropy(e, a))) < 1e-9


def test_categorical_bins_compare_text_through_each_snapshots_codes():
    training_codes = ("a", "b", "c")
    now_codes = ("b", "c", "d", "a")  # a later snapshot numbers the categories afresh
    training = pl.Series([0, 0, 1, 2, 2, 2, None, 1], dtype=pl.Int16)
    now = pl.Series([3, 0, 0, 2, None, None, 1, 3], dtype=pl.Int16)  # a, b, b, d, -, -, c, a
    bins = column_bins(training, codes=training_codes)
    assert bins.kind == "categorical" and bins.labels == ["a", "b", "c", OTHER, MISSING]
    assert bins.counts == (2, 2, 3, 0, 1)
    actual = bins.count(now, now_codes)
    assert actual.tolist() == [2, 2, 1, 1, 2]
    psi = population_stability(bins.counts, actual)
    assert abs(psi - direct_psi(np.array(bins.counts, float), actual.astype(float))) < 1e-9


def test_text_columns_are_categorical_and_ties_merge_deciles():
    assert column_bins(pl.Series(["x", None, "y", "x"])).categories == ("x", "y")
    values = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    binary = column_bins(pl.Series(values))
    edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    assert binary.edges == tuple(edges) and len(edges) < 9  # repeated deciles merged
    assert binary.counts == tuple(direct_numeric_counts(values, edges))
    assert column_bins(pl.Series([None, None], dtype=pl.Float64)).labels == ["all", MISSING]


def test_identical_distributions_are_stable_and_a_shift_alerts():
    rng = np.random.default_rng(5)
    base = pl.Series(rng.normal(size=50_000))
    bins = column_bins(base)
    assert population_stability(bins.counts, bins.count(base)) == 0.0
    settings = MonitorSettings()
    shifted = population_stability(bins.counts, bins.count(pl.Series(rng.normal(1.0, 1, 9_000))))
    assert settings.judge(shifted, settings.psi_warn, settings.psi_alert) is Status.ALERT
    assert worst([Status.OK, Status.ALERT, Status.WARN]) is Status.ALERT and worst([]) is Status.OK


def test_model_stability_judges_the_score_and_every_profiled_column():
    rng = np.random.default_rng(7)
    train = pl.DataFrame({"age": rng.normal(40, 10, 5_000), "tier": rng.integers(0, 3, 5_000)})
    score = pl.Series(rng.beta(2, 5, 5_000))
    profile = ModelProfile(
        model="acquisition",
        version="v1",
        snapshot_date="2026-09-30",
        rows=5_000,
        score=column_bins(score),
        features={
            "age": column_bins(train["age"]),
            "tier": column_bins(train["tier"], codes=("t1", "t2", "t3")),
        },
    )
    assert ModelProfile.from_dict(profile.to_dict()) == profile
    now = pl.DataFrame({"age": rng.normal(30, 10, 3_000), "tier": rng.integers(0, 3, 3_000)})
    found = model_stability(
        profile,
        pl.Series(rng.beta(2, 5, 3_000)),
        now,
        codes={"tier": ("t1", "t2", "t3")},
    )
    verdicts = {s.name: s.status for s in found}
    assert verdicts == {"score": Status.OK, "age": Status.ALERT, "tier": Status.OK}
    with pytest.raises(ConfigError, match="lacks 1 column"):
        model_stability(profile, score, now.drop("age"))


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"psi_warn": 0.3, "psi_alert": 0.2}, "psi_warn"),
        ({"psi_warn": math.nan}, "psi_warn"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"bins": 1}, "bins"),
        ({"significance": 1.5}, "min_penetration"),
    ],
)
def test_settings_refuse_thresholds_that_cannot_work(changes, setting):
    with pytest.raises(ConfigError) as refused:
        MonitorSettings(**changes)
    assert refused.value.setting == setting


def test_the_index_refuses_bins_that_do_not_line_up():
    with pytest.raises(ConfigError, match="same bins"):
        population_stability([1, 2], [1, 2, 3])
    with pytest.raises(ConfigError, match="at least one row"):
        population_stability([1, 2], [0, 0])
    with pytest.raises(ModelError, match="format"):
        ModelProfile.from_dict({"format": "other", "model": "x"})
    assert Bins.from_dict(column_bins(pl.Series([1.0, 2.0])).to_dict()).kind == "numeric"
