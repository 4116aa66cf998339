"""The bank extract: the data mart's columns, and ID numbers that agree with age and gender."""

from __future__ import annotations

import datetime
from pathlib import Path

import polars as pl

from contracts.schemas import BANK_EXTRACT
from labs.world import FEATURE_COLUMNS, WorldConfig, WorldFiles, WorldSummary, generate_world
from matcher.identity import normalize_id_numbers


def test_bank_extract_has_the_data_mart_columns(customers: pl.DataFrame):
    BANK_EXTRACT.check(customers)
    assert len(FEATURE_COLUMNS) >= 60
    assert customers.columns[:4] == ["customer_id", "branch_id", "phone", "id_number"]
    assert customers.columns[-2:] == ["mb_registered", "opened_mb"]
    assert set(FEATURE_COLUMNS) <= set(customers.columns)
    assert customers["customer_id"].is_unique().all()
    assert 30 <= customers["branch_id"].n_unique() <= 40
    # The label exists only for customers not yet on mobile banking.
    registered = customers["mb_registered"]
    assert customers["opened_mb"].filter(registered).null_count() == registered.sum()
    assert customers["opened_mb"].filter(~registered).null_count() == 0
    # Amounts are non-negative, assets have many zeros and a long right tail.
    money = [c for c in FEATURE_COLUMNS if c.endswith(("amount_3m", "_balance", "deposit"))]
    assert customers.select(pl.min_horizontal(money).min()).item() >= 0
    aum = customers["aum_month_avg"]
    assert aum.mean() > 2 * aum.median()  # type: ignore[operator]
    assert (customers["wealth_mgmt"] == 0).mean() > 0.5


def test_id_numbers_check_and_agree_with_age_and_gender(
    customers: pl.DataFrame, world: tuple[WorldFiles, WorldSummary]
):
    ids = normalize_id_numbers(customers["id_number"])
    assert ids.reason_counts() == {"bad_checksum": world[1].bad_id_checksums}
    assert customers["id_number"].str.ends_with("x").any()  # lowercase x, still valid
    snapshot = WorldConfig().snapshot_date
    checked = customers.select("age", "gender", id=ids.values).drop_nulls("id")
    birth = pl.col("id").str.slice(6, 8).str.to_date("%Y%m%d")
    had_birthday = (birth.dt.month() < snapshot.month) | (
        (birth.dt.month() == snapshot.month) & (birth.dt.day() <= snapshot.day)
    )
    age = snapshot.year - birth.dt.year() - (~had_birthday).cast(pl.Int32)
    male = pl.col("id").str.slice(16, 1).cast(pl.Int32) % 2 == 1
    facts = checked.select((age == pl.col("age")).all(), (male == (pl.col("gender") == "M")).all())
    assert facts.row(0) == (True, True)


def test_snapshot_on_a_leap_day_still_gives_exact_ages(tmp_path: Path):
    config = WorldConfig(customers=300, snapshot_date=datetime.date(2028, 2, 29))
    generate_world(config, tmp_path)
    frame = pl.read_parquet(tmp_path / WorldFiles.CUSTOMERS)
    births = normalize_id_numbers(frame["id_number"]).values.drop_nulls().str.slice(6, 8)
    assert births.str.to_date("%Y%m%d").max() <= datetime.date(2028 - 18, 2, 28)  # type: ignore[operator]
