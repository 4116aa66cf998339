"""A declaration's audience resolved to candidate customers, with their stratum decile and the
gain a contact is expected to bring.

Sources (fusion.campaigns.declaration):

    model         the scores `fusion score` keeps beside its lists: acquisition deciles
                  (scores/acquisition.parquet), the rescue pool's top share (rescue.parquet,
                  ranked by the rescue model), the uplift ranking's top share (uplift.parquet)
    value_demand  cells of the value x demand matrix: AUM tier (quintiles of aum_month_avg,
                  1 = top 20%) x demand group (acquisition deciles 1-2 = group 1, ...)
    usage         matched customers whose newest vendor rows list one of the apps, app
                  categories or interest tags
    query         the customer_id column of one SELECT over the analyst views, run by the caller
                  under the /v1/query sandbox rules (`AudienceInputs.query`)

Every candidate is a customer of the feature snapshot. Its decile (the stratum of assignment) is
the decile of the model that chose it, else its acquisition decile (null when it has none, e.g.
already on mobile banking). Its expected uplift is the prediction of the declared uplift model,
else the declared constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import CampaignError
from fusion.campaigns.declaration import (
    Campaign,
    ModelAudience,
    QueryAudience,
    UsageAudience,
    ValueDemandAudience,
)
from fusion.store import Store

__all__ = ["CANDIDATE_SCHEMA", "AudienceInputs", "resolve_audience", "value_tiers"]

CANDIDATE_SCHEMA = pl.Schema(
    {
        "campaign_id": pl.String,
        "customer_id": pl.Int64,
        "branch_id": pl.String,
        "decile": pl.Int8,
        "expected_uplift": pl.Float64,
    }
)
_SCORE_FILES = {"acquisition": "acquisition.parquet", "rescue": "rescue.parquet",
                "uplift": "uplift.parquet"}  # fmt: skip
_TIER_SHARES = (0.8, 0.6, 0.4, 0.2)  # AUM quantiles cutting the five value tiers


@dataclass(frozen=True)
class AudienceInputs:
    """Where audiences are read from: the snapshot's customers, scores, store and sandbox."""

    customers: pl.DataFrame  # customer_id, branch_id, aum_month_avg (the feature snapshot)
    scores_dir: Path
    store: Store
    snapshot_date: date
    query: Callable[[str], pl.DataFrame] | None = None  # runs analyst SQL in the sandbox

    def scores(self, model: str) -> pl.DataFrame:
        """Return the stored scores of `model` (customer_id, decile, score or predicted_uplift)."""
        path = self.scores_dir / _SCORE_FILES[model]
        if not path.is_file():
            raise CampaignError(
                f"there are no {model} scores at {path}; score the base first (`fusion score`)"
            )
        return pl.read_parquet(path)


def resolve_audience(campaign: Campaign, inputs: AudienceInputs) -> pl.DataFrame:
    """Return the campaign's candidates (CANDIDATE_SCHEMA), one row per customer, by customer id."""
    audience = campaign.audience
    if isinstance(audience, ModelAudience):
        chosen = _from_model(audience, inputs)
    elif isinstance(audience, ValueDemandAudience):
        chosen = _from_cells(audience, inputs)
    elif isinstance(audience, UsageAudience):
        chosen = _from_usage(audience, inputs)
    else:
        chosen = _from_query(audience, inputs, campaign.name)
    base = inputs.customers.select("customer_id", "branch_id")
    frame = base.join(chosen.unique("customer_id"), on="customer_id", how="inner")
    if "decile" not in frame.columns:
        frame = frame.join(_acquisition_deciles(inputs), on="customer_id", how="left")
    return (
        frame.join(_expected_uplift(campaign, inputs), on="customer_id", how="left")
        .with_columns(
            pl.lit(campaign.name).alias("campaign_id"),
            pl.col("decile").cast(pl.Int8),
            pl.col("expected_uplift").fill_null(campaign.objective.expected_uplift),
        )
        .select(CANDIDATE_SCHEMA.names())
        .sort("customer_id")
    )


def _from_model(audience: ModelAudience, inputs: AudienceInputs) -> pl.DataFrame:
    """Return customer_id, decile of the model's chosen deciles or top share."""
    scores = inputs.scores(audience.model)
    rank_by = "score"
    if audience.model == "uplift":
        # The list's own ranking: by the response model where the uplift model's verdict is
        # that the data do not support targeting by uplift (fusion.lists), else by uplift.
        rank_by = "response_score" if "response_score" in scores.columns else "predicted_uplift"
    if audience.deciles is not None:
        return scores.filter(pl.col("decile").is_in(audience.deciles)).select(
            "customer_id", "decile"
        )
    share = audience.top_share or 1.0
    take = max(1, round(share * scores.height))
    ranked = scores.sort([rank_by, "customer_id"], descending=[True, False])
    return ranked.head(take).select(
        "customer_id",
        # Deciles of the chosen share itself, so strata spread over the ranking taken.
        (pl.int_range(pl.len(), dtype=pl.Int64) * 10 // pl.len() + 1).cast(pl.Int8).alias("decile"),
    )


def _acquisition_deciles(inputs: AudienceInputs) -> pl.DataFrame:
    """Return customer_id, decile of the acquisition scores."""
    return inputs.scores("acquisition").select("customer_id", pl.col("decile").cast(pl.Int8))


def value_tiers(customers: pl.DataFrame) -> pl.DataFrame:
    """Return customer_id, value_tier (1 = the top 20% by aum_month_avg ... 5 = the bottom)."""
    aum = customers["aum_month_avg"].cast(pl.Float64).fill_null(0.0)
    edges = [aum.quantile(share, interpolation="linear") or 0.0 for share in _TIER_SHARES]
    tier: Any = pl.when(pl.col("aum") >= edges[0]).then(1)
    for number, edge in enumerate(edges[1:], start=2):
        tier = tier.when(pl.col("aum") >= edge).then(number)
    return customers.select("customer_id", aum.alias("aum")).select(
        "customer_id", tier.otherwise(5).cast(pl.Int8).alias("value_tier")
    )


def _from_cells(audience: ValueDemandAudience, inputs: AudienceInputs) -> pl.DataFrame:
    """Return customer_id of the chosen value tier x demand group cells."""
    deciles = _acquisition_deciles(inputs).with_columns(
        ((pl.col("decile") + 1) // 2).cast(pl.Int8).alias("demand_group")
    )
    return (
        value_tiers(inputs.customers)
        .join(deciles, on="customer_id", how="inner")
        .filter(
            pl.col("value_tier").is_in(audience.value_tiers)
            & pl.col("demand_group").is_in(audience.demand_groups)
        )
        .select("customer_id", "decile")
    )


def _from_usage(audience: UsageAudience, inputs: AudienceInputs) -> pl.DataFrame:
    """Return customer_id of matched customers using the apps, categories or tags (store SQL)."""
    store = inputs.store
    apps = list(audience.apps)
    if audience.categories:
        apps += [
            row[0]
            for row in store.execute(
                "SELECT a.app_id FROM tax_apps a JOIN tax_categories c "
                "ON c.taxonomy_version = a.taxonomy_version AND c.category_id = a.category_id "
                "WHERE list_contains(?, c.code) AND a.taxonomy_version = "
                "(SELECT max(taxonomy_version) FROM tax_categories)",
                [list(audience.categories)],
            ).fetchall()
        ]
    matched = (
        "SELECT DISTINCT m.customer_id FROM matches m JOIN {view} v "
        "ON v.key = m.key AND v.salt_epoch = m.salt_epoch "
        "WHERE m.snapshot_date = $day AND list_has_any(v.{column}, $ids)"
    )
    parts = []
    if apps:
        parts.append(matched.format(view="vendor_apps_latest", column="app_ids"))
    if audience.tags:
        parts.append(
            matched.format(view="vendor_tags_latest", column="tag_ids").replace("$ids", "$tags")
        )
    if not parts:
        return pl.DataFrame(schema={"customer_id": pl.Int64})
    params: dict[str, object] = {"day": inputs.snapshot_date}
    if apps:
        params["ids"] = sorted(set(apps))
    if audience.tags:
        params["tags"] = sorted(set(audience.tags))
    rows = store.execute(" UNION ".join(parts), params).fetchall()
    return pl.DataFrame({"customer_id": [r[0] for r in rows]}, schema={"customer_id": pl.Int64})


def _from_query(audience: QueryAudience, inputs: AudienceInputs, name: str) -> pl.DataFrame:
    """Return the customer_id column of the audience's SELECT, run in the analyst sandbox."""
    if inputs.query is None:
        raise CampaignError(
            f"campaign {name!r} takes its audience from SQL, which runs on the published "
            "head-office snapshot: publish one first (`fusion publish`)",
            campaign=name,
        )
    result = inputs.query(audience.sql)
    if "customer_id" not in result.columns:
        raise CampaignError(
            f"the audience query of campaign {name!r} returns {', '.join(result.columns)}; it "
            "must return a column named customer_id",
            campaign=name,
        )
    try:
        return result.select(pl.col("customer_id").cast(pl.Int64)).drop_nulls()
    except pl.exceptions.InvalidOperationError:
        raise CampaignError(
            f"the audience query of campaign {name!r} returns a customer_id that is not an "
            "integer; select the customer_id column of a view as it is",
            campaign=name,
        ) from None


def _expected_uplift(campaign: Campaign, inputs: AudienceInputs) -> pl.DataFrame:
    """Return customer_id, expected_uplift from the declared uplift model (empty without one)."""
    model = campaign.objective.uplift_model
    empty = pl.DataFrame(schema={"customer_id": pl.Int64, "expected_uplift": pl.Float64})
    if model is None:
        return empty
    scores = inputs.scores("uplift")
    # Whose predicted_uplift it is (`uplift_model`); files from before it name the ranking model.
    column = "uplift_model" if "uplift_model" in scores.columns else "model"
    names = set(scores[column].unique().to_list()) if column in scores.columns else set()
    if model not in names:
        raise CampaignError(
            f"campaign {campaign.name!r} expects uplift from model {model!r}, but the stored "
            f"uplift scores come from {', '.join(sorted(names)) or 'no model'}; name that model "
            "in objective.uplift_model, or remove it to use objective.expected_uplift",
            campaign=campaign.name,
        )
    return scores.select("customer_id", pl.col("predicted_uplift").alias("expected_uplift"))
