"""The world's second identifiers: ID numbers and device ids on both sides, realistic overlap."""

from __future__ import annotations

import polars as pl
import pytest

from labs.world import WorldFiles, WorldSummary
from labs.world.identifiers import (
    BANK_DEVICE_SHARE,
    VENDOR_DEVICE_SHARE,
    VENDOR_ID_SHARE,
    identifier_streams,
)
from matcher.identity import normalize_device_ids, normalize_id_numbers


def test_the_vendor_holds_valid_id_numbers_and_device_ids_for_a_share_of_its_users(
    vendor: pl.DataFrame,
):
    ids = normalize_id_numbers(vendor["id_number"])
    # Written in normal form; a stranger's number that is a customer's is left out.
    assert ids.values.drop_nulls().equals(vendor["id_number"].drop_nulls())
    assert 1 - vendor["id_number"].null_count() / vendor.height == pytest.approx(
        VENDOR_ID_SHARE, abs=0.02
    )
    devices = normalize_device_ids(vendor["device_id"])
    assert 1 - vendor["device_id"].null_count() / vendor.height == pytest.approx(
        VENDOR_DEVICE_SHARE, abs=0.01
    )
    assert set(devices.reason_counts()) <= {"missing", "zeroed"}


def test_the_bank_knows_the_devices_of_most_customers_on_mobile_banking(customers: pl.DataFrame):
    registered = customers.filter(pl.col("mb_registered"))
    assert 1 - registered["device_id"].null_count() / registered.height == pytest.approx(
        BANK_DEVICE_SHARE, abs=0.02
    )
    assert customers.filter(~pl.col("mb_registered"))["device_id"].null_count() == (
        customers.height - registered.height
    )
    # Upper-case UUID text, as the bank's app reports it; it normalises to 32 hex digits.
    written = registered["device_id"].drop_nulls()
    assert written.str.contains(r"^[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}$").all()
    assert normalize_device_ids(written).values.drop_nulls().str.len_chars().eq(32).all()


def test_second_identifiers_link_customers_the_phone_loses(
    customers: pl.DataFrame, vendor: pl.DataFrame, world: tuple[WorldFiles, WorldSummary]
):
    truth = pl.read_parquet(world[0].intersection)
    by_id = truth.filter(pl.col("id_type") != "mobile")
    assert by_id.height > 0.005 * customers.height and by_id["same_person"].all()


def test_identifier_streams_are_their_own():
    bank, vendor = identifier_streams(7)
    again, _ = identifier_streams(7)
    assert bank.integers(0, 2**62) == again.integers(0, 2**62)
    assert identifier_streams(8)[0].integers(0, 2**62) != identifier_streams(7)[0].integers(
        0, 2**62
    )
    assert vendor.integers(0, 2**62) != identifier_streams(7)[0].integers(0, 2**62)
