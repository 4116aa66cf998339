"""Campaign outcomes as training rows: stages thinned to one propensity stay a randomised trial."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.models.campaign_outcomes import constant_propensity


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
