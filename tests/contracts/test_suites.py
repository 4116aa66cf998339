"""Data contracts: each rule of the vendor-batch suite is broken once and named in the report."""

from __future__ import annotations

import json

import polars as pl
import pytest

from contracts.errors import ContractError
from contracts.suites import validate_bank_extract, validate_vendor_batch
from contracts.taxonomy import load_taxonomy
from tests.support.breakages import BREAKAGES, ROW
from tests.support.factories import vendor_batch

TAXONOMY = load_taxonomy()


def test_a_valid_batch_passes_every_rule():
    report = validate_vendor_batch(vendor_batch(), taxonomy=TAXONOMY, expected_rows=200)
    assert report.passed, report.summary()
    assert len(report.rules) == 14 and report.engine == "great_expectations"


@pytest.mark.parametrize("rule", sorted(BREAKAGES))
def test_each_broken_rule_is_named_with_its_rows(rule: str):
    batch = BREAKAGES[rule](vendor_batch())
    report = validate_vendor_batch(batch, taxonomy=TAXONOMY, expected_rows=200, batch_id="b-1")
    assert rule in report.failed, report.summary()
    result = next(r for r in report.rules if r.rule == rule)
    assert result.failed_rows >= 1 and ROW in result.example_rows
    with pytest.raises(ContractError) as info:
        report.raise_if_failed()
    assert rule in info.value.rules and info.value.batch_id == "b-1"


def test_row_count_must_equal_the_manifest():
    report = validate_vendor_batch(vendor_batch(), taxonomy=TAXONOMY, expected_rows=201)
    assert report.failed == ("row_count",)


def test_wrong_schema_is_one_schema_rule_naming_the_columns():
    batch = (
        vendor_batch()
        .drop("app_days")
        .with_columns(pl.col("tag_weights").cast(pl.List(pl.Float64)))
    )
    report = validate_vendor_batch(batch, taxonomy=TAXONOMY, expected_rows=200)
    assert report.failed == ("schema",)
    assert (
        "app_days" in report.rules[0].description and "tag_weights" in report.rules[0].description
    )


def test_report_holds_no_key_material():
    batch = BREAKAGES["key_unique"](vendor_batch())
    report = validate_vendor_batch(batch, taxonomy=TAXONOMY, expected_rows=200)
    text = json.dumps(report.to_dict()) + report.summary()
    for key in batch["key"].drop_nulls().to_list()[:50]:
        assert key.hex() not in text


def _extract(n: int = 100) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": pl.Series(range(n), dtype=pl.Int64),
            "branch_id": ["B001"] * n,
            "phone": ["13800000000"] * n,
            "id_number": ["11010519491231002X"] * n,
            "age": pl.Series([30] * n, dtype=pl.Int16),
            "mb_registered": [False] * n,
            "aum_month_avg": [1000.0] * n,
        }
    )


def test_bank_extract_rules():
    reasons = pl.Series("r", [None] * 100, dtype=pl.String)
    assert validate_bank_extract(_extract(), phone_reasons=reasons).passed
    broken = _extract().with_columns(
        pl.when(pl.col("customer_id") == 3)
        .then(-5.0)
        .otherwise(pl.col("aum_month_avg"))
        .alias("aum_month_avg"),
        pl.when(pl.col("customer_id") == 4)
        .then(pl.lit(5, pl.Int16))
        .otherwise(pl.col("age"))
        .alias("age"),
    )
    many_bad = pl.Series("r", ["bad_length"] * 10 + [None] * 90)
    report = validate_bank_extract(broken, phone_reasons=many_bad)
    assert set(report.failed) == {"amounts_non_negative", "age_in_range", "phones_usable"}
