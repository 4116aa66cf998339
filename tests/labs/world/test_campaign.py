"""Outcomes: personas drive the label and the uplift; the campaign is a random split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from labs.world import PERSONAS, WorldFiles, WorldSummary


def test_personas_drive_the_label_and_the_uplift(world: tuple[WorldFiles, WorldSummary]):
    files = world[0]
    truth = (
        pl.read_parquet(files.personas)
        .filter(pl.col("customer_id").is_not_null())
        .join(pl.read_parquet(files.propensity), on="customer_id")
        .join(pl.read_parquet(files.customers).select("customer_id", "opened_mb"), on="customer_id")
        .filter(~pl.col("mb_registered"))
    )
    by_persona = truth.group_by("persona").agg(
        rate=pl.col("opened_mb").mean(), uplift=pl.col("uplift").mean()
    )
    rates = dict(by_persona.select("persona", "rate").iter_rows())
    uplift = dict(by_persona.select("persona", "uplift").iter_rows())
    assert set(rates) == set(PERSONAS)
    assert max(rates.values()) >= 2 * min(rates.values())
    assert rates["investor"] > 2 * rates["senior"]
    # The food-delivery coupon works on food-delivery users and shoppers, backfires on seniors.
    assert uplift["food_delivery"] > 0.05 and uplift["shopper"] > 0.03
    assert uplift["senior"] < 0 < uplift["gamer"]
    # True probabilities agree with the drawn label.
    assert truth["p_open"].mean() == pytest.approx(truth["opened_mb"].mean(), abs=0.01)


def test_campaign_is_a_random_half_split_of_unregistered_customers(
    world: tuple[WorldFiles, WorldSummary], customers: pl.DataFrame
):
    campaign = pl.read_parquet(world[0].campaign)
    assert campaign.columns == ["campaign_id", "customer_id", "treatment", "responded"]
    assert campaign["customer_id"].is_unique().all()
    offered = customers.filter(pl.col("customer_id").is_in(campaign["customer_id"].implode()))
    assert not offered["mb_registered"].any()
    unregistered = int((~customers["mb_registered"]).sum())
    assert campaign.height / unregistered == pytest.approx(0.4, abs=0.03)
    # Treatment is independent of the customer: ages of both arms look alike.
    ages = offered.join(campaign, on="customer_id").group_by("treatment").agg(pl.col("age").mean())
    assert np.ptp(ages["age"].to_numpy()) < 1.0
