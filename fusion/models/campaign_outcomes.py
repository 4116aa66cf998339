"""Learning from the platform's own campaigns: a closed campaign's arms and outcomes as an A/B.

A closed campaign holds everything an uplift model needs: each assigned customer's arm (from
the keyed assignment, so treatment and control are known, never guessed from who was reached),
the stage they entered at, and the funnel events reported back. `campaign_training_frame`
turns them into the frame `fusion.models.campaign.train_uplift` reads (customer_id, treatment,
responded), with each row's propensity: the treated share its stage was declared with
(1 - the stage's control share). The whitelist is left out (no control there).

Stages are assigned with different shares (an A/B test at one half, a full launch at 95%), so
pooled, treatment is no longer independent of the stage. `constant_propensity` thins the treated
rows of each stage at random (Bernoulli, kept with odds ratio p*/(1-p*) : p_s/(1-p_s), p* the
smallest share) until every stage has the same treated share p*: the rows left are again a
randomised trial with one propensity, which the learners assume.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.book import get_campaign
from fusion.features import FeatureSet
from fusion.models.campaign import UpliftConfig, UpliftResult, train_uplift
from fusion.store import Store

__all__ = ["campaign_training_frame", "constant_propensity", "learn_from_campaign"]

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


def constant_propensity(frame: pl.DataFrame, *, seed: int = 7) -> pl.DataFrame:
    """Return `frame` with treated rows thinned so every stage has the smallest treated share.

    Control rows are all kept. The thinning is a Bernoulli draw per treated row from `seed`,
    so the result is a randomised trial again, with propensity p* = min(propensity).
    """
    if frame.is_empty():
        raise ConfigError("the campaign has no assigned customers to learn from", setting="frame")
    p = frame["propensity"].to_numpy()
    if not ((p > 0) & (p < 1)).all():
        raise ConfigError(
            "every stage needs a treated share strictly between 0 and 1 to learn uplift; "
            "leave out stages without a control group",
            setting="propensity",
        )
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
) -> UpliftResult:
    """Return uplift learners trained on a closed campaign's arms and `event` outcomes.

    The rows are `campaign_training_frame`, thinned to one propensity (`constant_propensity`);
    `train_uplift` splits, fits, chooses and judges them as it does the past A/B file.
    """
    frame = constant_propensity(campaign_training_frame(store, campaign_id, event=event), seed=seed)
    return train_uplift(
        features,
        frame.select("campaign_id", "customer_id", "treatment", "responded"),
        config=config,
        true_uplift=true_uplift,
    )
