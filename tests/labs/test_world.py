"""The synthetic world: deterministic bytes, the promised shape, and a ground truth that holds."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import labs.world
from contracts.errors import WorldError
from contracts.schemas import BANK_EXTRACT
from contracts.taxonomy import load_taxonomy
from labs.world import (
    FEATURE_COLUMNS,
    PERSONAS,
    WorldConfig,
    WorldFiles,
    WorldSummary,
    generate_world,
    load_world,
)
from matcher.identity import normalize_id_numbers, normalize_phones

CUSTOMERS = 20_000
VENDOR_COLUMNS = ["phone", "app_ids", "app_days", "app_sessions", "tag_ids", "tag_weights"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldFiles, WorldSummary]:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(WorldConfig(customers=CUSTOMERS, seed=5), out)
    return load_world(out), summary


@pytest.fixture(scope="module")
def customers(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].customers)


@pytest.fixture(scope="module")
def vendor(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].vendor_users)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_public_surface():
    assert labs.world.__all__ == [
        "FEATURE_COLUMNS",
        "PERSONAS",
        "WorldConfig",
        "WorldFiles",
        "WorldSummary",
        "generate_world",
        "load_world",
    ]


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path):
    config = WorldConfig(customers=2_000, seed=3)
    first = generate_world(config, tmp_path / "a")
    second = generate_world(config, tmp_path / "b")
    other = generate_world(replace(config, seed=4), tmp_path / "c")
    assert set(first.digests) == set(WorldFiles.PARQUET)
    for name in WorldFiles.PARQUET:
        assert (
            _sha256(tmp_path / "a" / name) == _sha256(tmp_path / "b" / name) == first.digests[name]
        )
        assert first.digests[name] == second.digests[name]
        assert other.digests[name] != first.digests[name], name
    manifest = json.loads((tmp_path / "a" / "world.json").read_text())
    assert manifest["config"]["seed"] == 3 and manifest["config"]["snapshot_date"] == "2026-09-30"
    assert manifest["summary"]["digests"] == first.digests


def test_summary_has_the_promised_shape(world: tuple[WorldFiles, WorldSummary]):
    files, summary = world
    assert summary.bank_customers == CUSTOMERS
    assert summary.vendor_users == 3 * CUSTOMERS
    assert abs(summary.true_coverage - 0.65) <= 0.03
    assert 0.05 <= summary.label_rate <= 0.10
    assert 0.35 <= summary.registered_rate <= 0.45
    assert 0.005 * CUSTOMERS <= summary.invalid_phones <= 0.02 * CUSTOMERS
    assert 0.003 * CUSTOMERS <= summary.duplicated_phones <= 0.01 * CUSTOMERS
    assert 0.002 * CUSTOMERS <= summary.bad_id_checksums <= 0.01 * CUSTOMERS
    assert abs(summary.campaign_treated_share - 0.5) <= 0.05
    assert 0.02 <= summary.campaign_response_control <= 0.06
    assert summary.campaign_response_treatment > summary.campaign_response_control
    assert set(summary.persona_mix) == set(PERSONAS)
    assert sum(summary.persona_mix.values()) == pytest.approx(1.0)
    assert files.summary() == json.loads(json.dumps(summary.to_dict()))


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
        }
    )
    assert not set(vendor.columns) & (set(customers.columns) - {"phone"})


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


def test_phones_are_dirty_but_the_vendor_numbers_are_clean_and_unique(
    customers: pl.DataFrame, vendor: pl.DataFrame, world: tuple[WorldFiles, WorldSummary]
):
    bank = normalize_phones(customers["phone"])
    assert bank.n_rejected == world[1].invalid_phones
    assert set(bank.reason_counts()) == {"missing", "bad_chars", "bad_length", "bad_prefix"}
    raw = customers["phone"].drop_nulls()
    assert raw.str.starts_with("+86 ").any() and raw.str.starts_with("0086-").any()
    assert raw.str.starts_with("(86)").any() and raw.str.contains("１").any()
    valid = bank.values.drop_nulls()
    assert valid.is_duplicated().sum() == world[1].duplicated_phones
    phones = normalize_phones(vendor["phone"])
    assert phones.n_rejected == 0 and phones.values.is_unique().all()
    assert vendor["phone"].str.starts_with("+86").any()
    assert vendor["phone"].str.len_chars().is_in([11, 14]).all()


def test_intersection_is_the_normalised_join(
    customers: pl.DataFrame, vendor: pl.DataFrame, world: tuple[WorldFiles, WorldSummary]
):
    bank = customers.select("customer_id", phone=normalize_phones(customers["phone"]).values)
    bank = bank.filter(pl.col("phone").is_not_null() & ~pl.col("phone").is_duplicated())
    users = pl.DataFrame({"phone": normalize_phones(vendor["phone"]).values}).with_row_index(
        "vendor_row"
    )
    joined = bank.join(users, on="phone").select("customer_id", pl.col("vendor_row").cast(pl.Int64))
    truth = pl.read_parquet(world[0].intersection)
    assert truth.equals(joined.sort("customer_id"))
    assert truth.height / CUSTOMERS == pytest.approx(world[1].true_coverage)


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


def test_progress_reports_every_stage_to_completion(tmp_path: Path):
    seen: dict[str, list[float]] = {}
    generate_world(
        WorldConfig(customers=500), tmp_path, progress=lambda s, f: seen.setdefault(s, []).append(f)
    )
    assert list(seen) == ["bank customers", "vendor users", "files"]
    for fractions in seen.values():
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert fractions == sorted(fractions)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"customers": 10}, "customers"),
        ({"coverage": 1.5}, "coverage"),
        ({"vendor_ratio": 0.5}, "vendor_ratio"),
        ({"seed": -1}, "seed"),
        ({"snapshot_date": "2026-09-30"}, "snapshot_date"),
        ({"taxonomy_version": "1999.1"}, "1999.1"),
    ],
)
def test_bad_parameters_raise_world_error(tmp_path: Path, change: dict, named: str):
    with pytest.raises(WorldError, match=named):
        generate_world(replace(WorldConfig(), **change), tmp_path)
    assert not (tmp_path / "bank").exists()


def test_load_world_names_missing_files(tmp_path: Path):
    with pytest.raises(WorldError, match="fusion world --out"):
        load_world(tmp_path)


def test_snapshot_on_a_leap_day_still_gives_exact_ages(tmp_path: Path):
    config = WorldConfig(customers=300, snapshot_date=datetime.date(2028, 2, 29))
    generate_world(config, tmp_path)
    frame = pl.read_parquet(tmp_path / WorldFiles.CUSTOMERS)
    births = normalize_id_numbers(frame["id_number"]).values.drop_nulls().str.slice(6, 8)
    assert births.str.to_date("%Y%m%d").max() <= datetime.date(2028 - 18, 2, 28)  # type: ignore[operator]
