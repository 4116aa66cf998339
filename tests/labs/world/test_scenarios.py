"""The world's scenario labels: known where a bank would know them, driven by personas too."""

from __future__ import annotations

import polars as pl

from labs.world import WorldFiles, WorldSummary
from labs.world.generate import _STREAMS
from labs.world.scenarios import OUTCOME_COLUMNS


def test_scenario_labels_follow_their_populations_and_the_personas(
    world: tuple[WorldFiles, WorldSummary], customers: pl.DataFrame
):
    files, summary = world
    outcomes = pl.read_parquet(files.outcomes)
    truth = pl.read_parquet(files.scenarios)
    personas = pl.read_parquet(files.personas).filter(pl.col("customer_id").is_not_null())
    assert outcomes.columns == ["customer_id", *OUTCOME_COLUMNS]
    assert outcomes["customer_id"].equals(customers["customer_id"])
    joined = customers.select("customer_id", "mb_registered", "credit_card").join(
        outcomes, on="customer_id"
    )
    # Known only where a bank would know it: activation among the registered, take-up among
    # customers without a credit card.
    assert (
        joined.filter(~pl.col("mb_registered"))["activated_mb"].null_count()
        == joined.filter(~pl.col("mb_registered")).height
    )
    assert joined.filter(pl.col("credit_card") == 1)["took_credit_card"].null_count() == (
        joined.filter(pl.col("credit_card") == 1).height
    )
    assert outcomes["aum_grew"].null_count() == 0
    rates = outcomes.select(pl.col(c).mean() for c in OUTCOME_COLUMNS).row(0)
    assert 0.2 < rates[0] < 0.3 and 0.04 < rates[1] < 0.09 and 0.12 < rates[2] < 0.19
    # Vendor-side personas drive them: shoppers take cards, investors grow their assets.
    by = truth.join(personas.select("customer_id", "persona"), on="customer_id")
    mean = by.group_by("persona").agg(pl.col("p_took_credit_card", "p_aum_grew").mean())
    row = {r["persona"]: r for r in mean.iter_rows(named=True)}
    assert row["shopper"]["p_took_credit_card"] > 2 * row["senior"]["p_took_credit_card"]
    assert row["investor"]["p_aum_grew"] > 1.5 * row["student"]["p_aum_grew"]
    assert set(summary.digests) >= {files.OUTCOMES, files.SCENARIOS}
    # Its own stream, drawn last: every earlier stream (and file) is what it was without it.
    assert _STREAMS[-1] == "scenarios"
