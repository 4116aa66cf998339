"""Campaign outcomes as training rows: stages weighed by their inverse propensity, or thinned to
one propensity, are a randomised trial again."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.models.booster import UPLIFT_BOOSTER
from fusion.models.campaign_outcomes import constant_propensity, inverse_propensity
from fusion.models.uplift import TLearner


def _stages(n_ab: int, n_full: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    stage = np.r_[np.full(n_ab, "ab"), np.full(n_full, "full")]
    share = np.r_[np.full(n_ab, 0.5), np.full(n_full, 0.95)]
    return pl.DataFrame(
        {
            "campaign_id": "c",
            "customer_id": np.arange(len(stage), dtype=np.int64),
            "stage": stage,
            "treatment": rng.random(len(stage)) < share,
            "responded": rng.random(len(stage)) < 0.05,
            "propensity": share,
        }
    )


def test_thinning_gives_every_stage_the_smallest_treated_share():
    frame = _stages(20_000, 40_000, 1)
    thinned = constant_propensity(frame, seed=2)
    shares = thinned.group_by("stage").agg(pl.col("treatment").mean()).sort("stage")
    assert shares["treatment"].to_list() == pytest.approx([0.5, 0.5], abs=0.02)
    assert (thinned["propensity"] == 0.5).all()
    # Control rows are all kept; only treated rows of the 95% stage are thinned.
    assert thinned.filter(~pl.col("treatment")).height == frame.filter(~pl.col("treatment")).height
    assert thinned.equals(constant_propensity(frame, seed=2))  # reproducible from the seed
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        constant_propensity(frame.with_columns(pl.lit(1.0).alias("propensity")))
    with pytest.raises(ConfigError, match="no assigned customers"):
        constant_propensity(frame.head(0))


def test_inverse_propensity_weights_each_arm_to_average_one():
    frame = _stages(2_000, 4_000, 3)
    weighted = inverse_propensity(frame)
    means = weighted.group_by("treatment").agg(pl.col("weight").mean())
    assert means["weight"].to_list() == pytest.approx([1.0, 1.0])
    # Proportional to 1/p (treated) and 1/(1-p) (control): one ratio per arm.
    ratio = weighted.select(
        "treatment",
        pl.col("weight")
        / pl.when(pl.col("treatment"))
        .then(1 / pl.col("propensity"))
        .otherwise(1 / (1 - pl.col("propensity"))),
    )
    spread = ratio.group_by("treatment").agg(pl.col("weight").max() - pl.col("weight").min())
    assert spread["weight"].max() < 1e-12
    with pytest.raises(ConfigError, match="no assigned customers"):
        inverse_propensity(frame.head(0))


def test_weighted_learner_undoes_a_stage_confounded_pooling():
    """Two stages: an A/B at 50% among customers converting at 2%, a launch at 95% among
    customers converting at 10%; the offer adds 1 point everywhere. Pooled, treated rows come
    mostly from the launch, so the plain arm difference is about +5 points; weighed by inverse
    propensity (the Hajek estimator) it is the true +1 point, and so is the T-learner's mean."""
    rng = np.random.default_rng(9)
    n = 20_000
    launch = np.arange(n) >= n // 2
    p = np.where(launch, 0.95, 0.5)
    t = rng.random(n) < p
    y = rng.random(n) < np.where(launch, 0.10, 0.02) + 0.01 * t
    frame = pl.DataFrame({"treatment": t, "propensity": p})
    w = inverse_propensity(frame)["weight"].to_numpy()
    x = rng.normal(size=(n, 2))  # the stage is not a feature: only the weights can correct it
    hajek = np.average(y[t], weights=w[t]) - np.average(y[~t], weights=w[~t])
    assert abs(hajek - 0.01) < 0.01 < 0.04 < y[t].mean() - y[~t].mean()
    params = replace(UPLIFT_BOOSTER, n_estimators=20, max_depth=2, early_stopping_rounds=None)
    plain = TLearner(params=params).fit(x, y, t).predict(x).mean()
    weighted = TLearner(params=params).fit(x, y, t, sample_weight=w).predict(x).mean()
    assert plain > 0.04 and weighted == pytest.approx(hajek, abs=0.005)
