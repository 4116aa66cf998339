"""The vendor file: no bank column, and app and tag lists drawn from the taxonomy."""

from __future__ import annotations

import polars as pl

from contracts.taxonomy import load_taxonomy

VENDOR_COLUMNS = [
    "phone", "app_ids", "app_days", "app_sessions", "tag_ids", "tag_weights", "id_number",
    "device_id",
]  # fmt: skip


def test_vendor_file_holds_no_bank_column(vendor: pl.DataFrame, customers: pl.DataFrame):
    assert vendor.columns == VENDOR_COLUMNS
    assert vendor.schema == pl.Schema(
        {
            "phone": pl.String,
            "app_ids": pl.List(pl.Int32),
            "app_days": pl.List(pl.Int16),
            "app_sessions": pl.List(pl.Int32),
            "tag_ids": pl.List(pl.Int32),
            "tag_weights": pl.List(pl.Float32),
            "id_number": pl.String,
            "device_id": pl.String,
        }
    )
    # Identifiers both sides hold by nature; nothing else of the bank's.
    assert not set(vendor.columns) & (set(customers.columns) - {"phone", "id_number", "device_id"})


def test_vendor_lists_use_the_taxonomy(vendor: pl.DataFrame):
    taxonomy = load_taxonomy()
    apps = vendor["app_ids"].explode()
    tags = vendor["tag_ids"].explode()
    assert apps.is_in(taxonomy.apps["app_id"].implode()).all()
    assert tags.is_in(taxonomy.tags["tag_id"].implode()).all()
    used = taxonomy.apps.filter(pl.col("app_id").is_in(apps.unique().implode()))
    assert used["category_id"].n_unique() == 26
    facts = vendor.select(
        aligned=(pl.col("app_ids").list.len() == pl.col("app_days").list.len())
        & (pl.col("app_ids").list.len() == pl.col("app_sessions").list.len())
        & (pl.col("tag_ids").list.len() == pl.col("tag_weights").list.len()),
        distinct=(pl.col("tag_ids").list.n_unique() == pl.col("tag_ids").list.len())
        & (pl.col("app_ids").list.n_unique() == pl.col("app_ids").list.len()),
        days=(pl.col("app_days").list.min() >= 1) & (pl.col("app_days").list.max() <= 30),
        weights=(pl.col("tag_weights").list.min() > 0) & (pl.col("tag_weights").list.max() <= 1),
    )
    assert facts.select(pl.all().all()).row(0) == (True, True, True, True)
    assert 40 <= vendor["tag_ids"].list.len().mean() <= 55  # type: ignore[operator]
    # Zipf inside a category: the most popular app is used far more than the 10th.
    top = taxonomy.apps.filter(pl.col("category_id") == 5).sort("popularity_rank")["app_id"]
    counts = apps.value_counts().filter(pl.col("app_ids").is_in(top.implode()))
    by_app = dict(counts.iter_rows())
    assert by_app[top[0]] > 5 * by_app.get(top[9], 1)
