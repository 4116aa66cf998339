"""Phone rules: the bank's phones are dirty, the vendor's clean and unique."""

from __future__ import annotations

import numpy as np
import polars as pl

from labs.world import WorldFiles, WorldSummary
from labs.world.phones import (
    INVALID,
    INVALID_PHONE_SHARE,
    SHARED_PHONE_PAIRS,
    bank_phones,
    dirty_phones,
    distinct_mobiles,
    vendor_phones,
)
from matcher.identity import normalize_phones


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


def test_a_dirty_valid_phone_normalises_to_the_number_given():
    rng = np.random.default_rng(1)
    owned = distinct_mobiles(4_000, rng)
    assert len(np.unique(owned)) == 4_000
    phones = bank_phones(owned, rng)
    assert int((phones.kind >= INVALID).sum()) == round(4_000 * INVALID_PHONE_SHARE)
    assert int(phones.shared.sum()) == 2 * round(4_000 * SHARED_PHONE_PAIRS)
    assert int(phones.copy.sum()) == round(4_000 * SHARED_PHONE_PAIRS)
    normalised = normalize_phones(dirty_phones(phones, rng))
    given = pl.Series(phones.given).cast(pl.String)
    assert normalised.values.filter(phones.valid).equals(given.filter(phones.valid))
    assert normalised.values.filter(~phones.valid).null_count() == int((~phones.valid).sum())


def test_the_vendor_writes_clean_numbers_some_with_the_country_code():
    written = vendor_phones(np.array([13_800_000_000, 19_912_345_678]), np.array([True, False]))
    assert written.to_list() == ["+8613800000000", "19912345678"]
