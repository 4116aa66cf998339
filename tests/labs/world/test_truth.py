"""The ground truth: the true intersection is exactly the join a matcher would make."""

from __future__ import annotations

import polars as pl
import pytest

from labs.world import WorldConfig, WorldFiles, WorldSummary
from matcher.identity import normalize_phones


def test_intersection_is_the_normalised_join(
    customers: pl.DataFrame,
    vendor: pl.DataFrame,
    world: tuple[WorldFiles, WorldSummary],
    world_config: WorldConfig,
):
    bank = customers.select("customer_id", phone=normalize_phones(customers["phone"]).values)
    bank = bank.filter(pl.col("phone").is_not_null() & ~pl.col("phone").is_duplicated())
    users = pl.DataFrame({"phone": normalize_phones(vendor["phone"]).values}).with_row_index(
        "vendor_row"
    )
    joined = bank.join(users, on="phone").select("customer_id", pl.col("vendor_row").cast(pl.Int64))
    truth = pl.read_parquet(world[0].intersection)
    assert truth.equals(joined.sort("customer_id"))
    assert truth.height / world_config.customers == pytest.approx(world[1].true_coverage)
