"""Amount metrics of a campaign: a per-customer amount after it, and the same amount before.

A campaign's funnel events say who converted; a bank also measures what its customers hold
afterwards. A metric row gives, for one assigned customer,

    campaign_id str, customer_id i64, metric str (e.g. "aum"), value f64 (after the campaign),
    pre_value f64 (the same amount before assignment, e.g. the AUM month average of the
    feature snapshot the campaign was planned on; null when unknown), measured_at datetime

and the readout compares the arms' mean value, adjusted by pre_value (CUPED:
`fusion.campaigns.adjustment`). A pre_value must be measured before the customer's assignment,
or the adjustment can absorb the campaign's own effect. Recording is all or nothing: every row
is checked (a known metric name, finite numbers, a customer assigned to the campaign) and the
first problem refuses the call; the newest measurement of a (campaign, metric, customer)
replaces an older one.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from contracts.errors import CampaignError
from fusion.store import Store

__all__ = ["METRIC_SCHEMA", "read_metrics", "record_metrics"]

METRIC_SCHEMA = pl.Schema(
    [
        ("campaign_id", pl.String()),
        ("customer_id", pl.Int64()),
        ("metric", pl.String()),
        ("value", pl.Float64()),
        ("pre_value", pl.Float64()),
        ("measured_at", pl.Datetime("us")),
    ]
)
_NAME = r"^[a-z][a-z0-9_]{0,62}$"


def record_metrics(store: Store, frame: pl.DataFrame, *, now: datetime) -> int:
    """Record the metric rows (`METRIC_SCHEMA`) in one transaction; return the rows written.

    Raises CampaignError naming the first problem: a missing column, a metric name that is not
    lower-case letters, digits and _, a value or pre_value that is not a finite number, or a
    customer not assigned to the row's campaign.
    """
    missing = [c for c in METRIC_SCHEMA if c not in frame.columns]
    if missing:
        raise CampaignError(
            f"metric rows lack {', '.join(missing)}; give the columns {', '.join(METRIC_SCHEMA)}"
        )
    rows = frame.select(METRIC_SCHEMA.names()).cast(METRIC_SCHEMA)
    bad_name = rows.filter(~pl.col("metric").fill_null("").str.contains(_NAME)).height
    bad_value = rows.filter(
        ~pl.col("value").is_finite().fill_null(False)
        | ~pl.col("pre_value").is_finite().fill_null(True)
        | pl.col("customer_id").is_null()
        | pl.col("measured_at").is_null()
    ).height
    if bad_name or bad_value:
        raise CampaignError(
            f"{bad_name} metric rows have a name other than lower-case letters, digits and _, "
            f"{bad_value} lack a customer, a time or a finite value; fix the rows and resend"
        )
    assigned = store.execute(
        "SELECT campaign_id, customer_id FROM assignments WHERE list_contains(?, campaign_id)",
        [rows["campaign_id"].unique().to_list()],
    ).pl()
    stray = rows.join(assigned, on=["campaign_id", "customer_id"], how="anti").height
    if stray:
        raise CampaignError(
            f"{stray} metric rows are for customers not assigned to their campaign; send "
            "metrics of assigned customers only"
        )
    newest = rows.sort("measured_at").unique(
        ["campaign_id", "metric", "customer_id"], keep="last", maintain_order=True
    )
    stamped = newest.with_columns(pl.lit(now.replace(tzinfo=None)).alias("recorded_at"))
    with store.transaction():
        for (campaign, metric), part in stamped.partition_by(
            "campaign_id", "metric", as_dict=True
        ).items():
            store.execute(
                "DELETE FROM campaign_metrics WHERE campaign_id = ? AND metric = ? "
                "AND list_contains(?, customer_id)",
                [campaign, metric, part["customer_id"].to_list()],
            )
        store.insert_frame("campaign_metrics", stamped)
    return stamped.height


def read_metrics(store: Store, campaign_id: str) -> pl.DataFrame:
    """Return the campaign's metric rows (`METRIC_SCHEMA` columns)."""
    return (
        store.execute(
            "SELECT campaign_id, customer_id, metric, value, pre_value, measured_at "
            "FROM campaign_metrics WHERE campaign_id = ?",
            [campaign_id],
        )
        .pl()
        .cast(METRIC_SCHEMA)
    )
