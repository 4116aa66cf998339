"""Learning from the platform's own campaigns: a closed campaign's arms and outcomes as an A/B.

A closed campaign holds everything an uplift model needs: each assigned customer's arm (from
the keyed assignment, so treatment and control are known, never guessed from who was reached),
the stage they entered at, and the funnel events reported back. `campaign_training_frame`
turns them into the frame `fusion.models.campaign.train_uplift` reads (customer_id, treatment,
responded), with each row's propensity: the treated share its stage was declared with
(1 - the stage's control share). The whitelist is left out (no control there).

Stages are assigned with different shares (an A/B test at one half, a full launch at 95%), so
pooled, treatment is no longer independent of the stage. Two ways restore a trial:

- `inverse_propensity` (the default of `learn_from_campaign`) keeps every row and weighs it by
  the inverse of the probability of the arm it got: 1/p_s treated, 1/(1 - p_s) control, each
  arm's weights scaled to average 1. In each arm every stage then counts as much as it holds
  customers, as though all had been assigned alike (Horvitz & Thompson 1952; the learners take
  them as xgboost sample weights).
- `constant_propensity` thins the treated rows of each stage at random (Bernoulli, kept with
  odds ratio p*/(1-p*) : p_s/(1-p_s), p* the smallest share) until every stage has the same
  treated share p*: the rows left are a randomised trial with one propensity, at the price of
  most of a full launch's treated rows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.book import get_campaign
from fusion.features import FeatureSet
from fusion.models.campaign import UpliftConfig, UpliftResult, train_uplift
from fusion.store import Store

__all__ = [
    "campaign_training_frame",
    "constant_propensity",
    "inverse_propensity",
    "learn_from_campaign",
]

_ROWS = """
SELECT a.customer_id, a.stage, a.arm = 'treatment' AS treatment,
       bool_or(e.customer_id IS NOT NULL) AS responded
FROM assignments a
LEFT JOIN outcome_events e
  ON e.campaign_id = a.campaign_id AND e.customer_id = a.customer_id AND e.event = ?
WHERE a.campaign_id = ? AND a.stage <> 'whitelist'
GROUP BY ALL
ORDER BY a.customer_id
"""


def campaign_training_frame(store: Store, campaign_id: str, *, event: str) -> pl.DataFrame:
    """Return a closed campaign's assigned customers as uplift training rows.

    Columns: campaign_id, customer_id, stage, treatment, responded (an `event` reported for the
    customer), propensity (the stage's declared treated share). Refused (ConfigError) while
    the campaign is not closed: its outcomes are still arriving.
    """
    record = get_campaign(store, campaign_id)
    if record.stage != "closed":
        raise ConfigError(
            f"campaign {campaign_id} is at stage {record.stage}; only a closed campaign's "
            "outcomes are complete enough to learn from. Close it first (`fusion campaign "
            "close`)",
            setting="campaign",
        )
    rows = pl.DataFrame(store.execute(_ROWS, [event, campaign_id]).fetch_arrow_table())
    stages = rows["stage"].unique().to_list()
    shares = {s: 1.0 - record.campaign.stage_control_share(s) for s in stages}
    return rows.with_columns(
        pl.lit(campaign_id).alias("campaign_id"),
        pl.col("customer_id").cast(pl.Int64),
        pl.col("stage").replace_strict(shares, return_dtype=pl.Float64).alias("propensity"),
    ).select("campaign_id", "customer_id", "stage", "treatment", "responded", "propensity")


def _propensities(frame: pl.DataFrame) -> np.ndarray:
    """Return the frame's propensities, refusing an empty frame or a stage without a control."""
    if frame.is_empty():
        raise ConfigError("the campaign has no assigned customers to learn from", setting="frame")
    p = frame["propensity"].to_numpy()
    if not ((p > 0) & (p < 1)).all():
        raise ConfigError(
            "every stage needs a treated share strictly between 0 and 1 to learn uplift; "
            "leave out stages without a control group",
            setting="propensity",
        )
    return p


def inverse_propensity(frame: pl.DataFrame) -> pl.DataFrame:
    """Return `frame` with a `weight` column: 1/propensity treated, 1/(1 - propensity) control,
    each arm's weights scaled to average 1 (so a booster's `min_child_weight` keeps its scale)."""
    _propensities(frame)
    raw = (
        pl.when(pl.col("treatment"))
        .then(1.0 / pl.col("propensity"))
        .otherwise(1.0 / (1.0 - pl.col("propensity")))
    )
    return frame.with_columns(raw.alias("weight")).with_columns(
        (pl.col("weight") / pl.col("weight").mean().over("treatment")).alias("weight")
    )


def constant_propensity(frame: pl.DataFrame, *, seed: int = 7) -> pl.DataFrame:
    """Return `frame` with treated rows thinned so every stage has the smallest treated share.

    Control rows are all kept. The thinning is a Bernoulli draw per treated row from `seed`,
    so the result is a randomised trial again, with propensity p* = min(propensity).
    """
    p = _propensities(frame)
    target = float(p.min())
    keep_odds = (target / (1 - target)) / (p / (1 - p))
    draw = np.random.default_rng(seed).random(frame.height)
    keep = ~frame["treatment"].to_numpy() | (draw < keep_odds)
    return frame.filter(pl.Series(keep)).with_columns(pl.lit(target).alias("propensity"))


def learn_from_campaign(
    store: Store,
    features: FeatureSet,
    campaign_id: str,
    *,
    event: str = "responded",
    config: UpliftConfig | None = None,
    seed: int = 7,
    true_uplift: np.ndarray | None = None,
    method: Literal["weighted", "thinned"] = "weighted",
) -> UpliftResult:
    """Return uplift learners trained on a closed campaign's arms and `event` outcomes.

    The rows are `campaign_training_frame`, every one weighed by its inverse propensity
    (`inverse_propensity`, method "weighted") or thinned to one propensity
    (`constant_propensity`, "thinned", with `seed`); `train_uplift` splits, fits, chooses and
    judges them as it does the past A/B file.
    """
    frame = campaign_training_frame(store, campaign_id, event=event)
    if method == "weighted":
        frame = inverse_propensity(frame)
    elif method == "thinned":
        frame = constant_propensity(frame, seed=seed).with_columns(pl.lit(1.0).alias("weight"))
    else:
        raise ConfigError(
            f"method must be 'weighted' or 'thinned', got {method!r}", setting="method"
        )
    result = train_uplift(
        features,
        frame.select("campaign_id", "customer_id", "treatment", "responded", "weight"),
        config=config,
        true_uplift=true_uplift,
    )
    result.metadata["learnt_from"] = {"campaign": campaign_id, "event": event, "method": method}
    return result
