"""The ground truth: the true best-identifier intersection is the join a matcher would make."""

from __future__ import annotations

import polars as pl
import pytest

from contracts.schemas import IDENTIFIER_COLUMNS, IDENTIFIER_TYPES
from labs.world import WorldConfig, WorldFiles, WorldSummary
from labs.world.truth import best_identifier_links
from matcher.identity import normalize, normalize_phones


def test_phone_links_are_the_normalised_join(
    customers: pl.DataFrame, vendor: pl.DataFrame, world: tuple[WorldFiles, WorldSummary]
):
    bank = customers.select("customer_id", phone=normalize_phones(customers["phone"]).values)
    bank = bank.filter(pl.col("phone").is_not_null() & ~pl.col("phone").is_duplicated())
    users = pl.DataFrame({"phone": normalize_phones(vendor["phone"]).values}).with_row_index(
        "vendor_row"
    )
    joined = bank.join(users, on="phone").select("customer_id", pl.col("vendor_row").cast(pl.Int64))
    truth = pl.read_parquet(world[0].intersection)
    # The mobile number comes first: every phone link is a true match.
    assert (
        truth.filter(pl.col("id_type") == "mobile")
        .drop("id_type", "same_person")
        .equals(joined.sort("customer_id"))
    )


def test_truth_is_the_priority_rule_over_the_files_normalised_identifiers(
    customers: pl.DataFrame,
    vendor: pl.DataFrame,
    world: tuple[WorldFiles, WorldSummary],
    world_config: WorldConfig,
):
    # From what the files say (through the product's normalisers), not from the world's draws.
    def values(frame: pl.DataFrame) -> dict[str, pl.Series]:
        return {t: normalize(t, frame[IDENTIFIER_COLUMNS[t]]).values for t in IDENTIFIER_TYPES}

    links = best_identifier_links(values(customers), values(vendor))
    expected = links.select(
        customer_id=customers["customer_id"].gather(links["row"]), vendor_row="vendor_row",
        id_type="id_type",
    )  # fmt: skip
    truth = pl.read_parquet(world[0].intersection)
    assert truth.drop("same_person").equals(expected)
    summary = world[1]
    assert truth.height / world_config.customers == pytest.approx(summary.true_coverage)
    assert summary.matched_by == dict(truth["id_type"].value_counts().iter_rows())
    # Each identifier adds customers; one customer, one vendor row.
    assert set(summary.matched_by) == set(IDENTIFIER_TYPES)
    assert truth["vendor_row"].is_unique().all() and truth["customer_id"].is_unique().all()


def test_old_numbers_lose_customers_to_the_phone_and_recycled_ones_link_someone_else(
    world: tuple[WorldFiles, WorldSummary], world_config: WorldConfig
):
    truth = pl.read_parquet(world[0].intersection)
    summary = world[1]
    assert summary.changed_numbers == pytest.approx(0.04 * world_config.customers, rel=0.15)
    wrong = truth.filter(~pl.col("same_person"))
    # A recycled old number links its customer to the vendor user who holds it now.
    assert wrong.height > 0 and set(wrong["id_type"].to_list()) == {"mobile"}
    assert wrong.height < 0.01 * world_config.customers


def test_best_identifier_links_resolve_conflicts_by_priority():
    bank = {
        "mobile": pl.Series(["p1", "p2", None, "p4"]),
        "id_number": pl.Series(["i1", "i2", "i3", "i3"]),  # i3 shared: links nobody
    }
    vendor = {
        "mobile": pl.Series(["p1", "p4", "p9"]),
        "id_number": pl.Series(["i2", "i1", "i3"]),
    }
    links = best_identifier_links(bank, vendor, ("mobile", "id_number"))
    assert links.rows() == [(0, 0, "mobile"), (3, 1, "mobile")]  # 1 -> 0 by ID: row 0 taken
    flipped = best_identifier_links(bank, vendor, ("id_number", "mobile"))
    assert flipped.rows() == [(0, 1, "id_number"), (1, 0, "id_number")]
