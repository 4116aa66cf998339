"""Normalisation of mobile numbers and resident ID numbers."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import IdentifierError
from matcher.identity import (
    DEVICE_REJECTS,
    ID_REJECTS,
    PHONE_REJECTS,
    id_check_characters,
    normalize,
    normalize_device_ids,
    normalize_id_numbers,
    normalize_phones,
)

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")

mobiles = st.builds(
    lambda second, rest: f"1{second}{rest}",
    st.sampled_from("3456789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
)


def _dress(number: str, style: int) -> str:
    """Write a valid 11-digit number the way a dirty extract does."""
    a, b, c = number[:3], number[3:7], number[7:]
    return [
        number,
        f"+86 {a} {b} {c}",
        f"0086-{number}",
        f"(86){number}",
        f"86{number}",
        f"{a}-{b}-{c}",
        f" {a} {b} {c} ",
        number.translate(FULL_WIDTH),
        f"＋８６ {number.translate(FULL_WIDTH)}",
        f"+86-({a}) {b}.{c}",
    ][style]


@settings(max_examples=300, deadline=None)
@given(number=mobiles, style=st.integers(min_value=0, max_value=9))
def test_every_dirty_form_of_a_valid_mobile_normalises_to_its_digits(number: str, style: int):
    result = normalize_phones(pl.Series("phone", [_dress(number, style)]))
    assert result.values.to_list() == [number]
    assert result.reasons.to_list() == [None]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=20))
def test_any_text_is_either_a_valid_mobile_or_rejected_with_a_known_reason(text: str):
    result = normalize_phones(pl.Series("phone", [text]))
    value, reason = result.values[0], result.reasons[0]
    assert (value is None) != (reason is None)
    if value is not None:
        assert len(value) == 11 and value[0] == "1" and value[1] in "3456789" and value.isascii()
    else:
        assert reason in PHONE_REJECTS


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("  - ", "missing"),
        ("1381234567a", "bad_chars"),
        ("138/1234/5678", "bad_chars"),
        ("1381234567", "bad_length"),
        ("138123456789", "bad_length"),
        ("+86 1381234567", "bad_length"),
        ("12812345678", "bad_prefix"),
        ("02112345678", "bad_prefix"),
        ("8612345678901", "bad_prefix"),
    ],
)
def test_rejects_carry_a_reason_code(raw: str | None, reason: str):
    result = normalize_phones(pl.Series("phone", [raw], dtype=pl.String))
    assert result.values.to_list() == [None]
    assert result.reasons.to_list() == [reason]
    assert result.reason_counts() == {reason: 1}


def test_a_bare_number_starting_with_86_is_not_cut():
    # 11 digits that start with "86" are not a prefixed number (and not a valid mobile either).
    result = normalize_phones(pl.Series("phone", ["86138123456"]))
    assert result.reasons.to_list() == ["bad_prefix"]


def test_non_text_column_is_refused_without_quoting_values():
    with pytest.raises(IdentifierError) as info:
        normalize_phones(pl.Series("phone", [13812345678]))
    assert "13812345678" not in str(info.value)
    assert info.value.column == "phone"


# GB 11643-1999 examples: the first is the standard's own published example.


@pytest.mark.parametrize("first17", ["11010519491231002", "11010119900307447", "32010619800101001"])
def test_check_character_matches_iso_7064_mod_11_2(first17: str):
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    expected = "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11]
    assert id_check_characters(pl.Series("p", [first17])).to_list() == [expected]


def test_published_example_id_is_valid_and_lowercase_x_folds():
    result = normalize_id_numbers(pl.Series("id", ["11010519491231002X", "11010519491231002x"]))
    assert result.values.to_list() == ["11010519491231002X"] * 2


@settings(max_examples=200, deadline=None)
@given(
    region=st.text(alphabet="0123456789", min_size=6, max_size=6),
    birth=st.dates(min_value=__import__("datetime").date(1920, 1, 1)),
    seq=st.text(alphabet="0123456789", min_size=3, max_size=3),
    style=st.integers(0, 3),
)
@pytest.mark.slow  # over a second: out of the inner loop
def test_generated_valid_ids_pass_and_any_other_check_character_fails(region, birth, seq, style):
    first17 = f"{region}{birth:%Y%m%d}{seq}"
    check = id_check_characters(pl.Series("p", [first17]))[0]
    dressed = [
        f"{first17}{check}",
        f"{first17}{check}".lower(),
        f"{first17[:6]} {first17[6:14]} {first17[14:]}{check}",
        f"{first17}{check}".translate(FULL_WIDTH),
    ][style]
    assert normalize_id_numbers(pl.Series("id", [dressed])).values.to_list() == [
        f"{first17}{check}"
    ]
    wrong = next(c for c in "0123456789X" if c != check)
    bad = normalize_id_numbers(pl.Series("id", [f"{first17}{wrong}"]))
    assert bad.reasons.to_list() == ["bad_checksum"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        ("11010519491231002Y", "bad_chars"),
        ("110105194912310", "bad_length"),
        ("1101051949123100X2", "bad_chars"),
        ("110105194902300020", "bad_birth_date"),
        ("110105180001010024", "bad_birth_date"),
        ("110105194912310021", "bad_checksum"),
    ],
)
def test_id_rejects_carry_a_reason_code(raw: str | None, reason: str):
    assert reason in ID_REJECTS
    result = normalize_id_numbers(pl.Series("id", [raw], dtype=pl.String))
    assert result.reasons.to_list() == [reason]
    assert result.values.to_list() == [None]


def test_vectorised_over_a_large_series():
    n = 200_000
    numbers = pl.Series("phone", [f"+86 139{i:08d}" for i in range(n)])
    result = normalize_phones(numbers)
    assert result.n_rejected == 0
    assert result.values[n - 1] == f"139{n - 1:08d}"


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.one_of(
            st.builds(_dress, mobiles, st.integers(min_value=0, max_value=9)),
            st.text(max_size=14),
            st.none(),
        ),
        min_size=1,
        max_size=30,
    )
)
@pytest.mark.slow  # over a second: out of the inner loop
def test_a_mixed_column_equals_normalising_each_value_alone(rows: list[str | None]):
    # Clean and dirty rows take different paths; together they must give what each gives alone.
    together = normalize_phones(pl.Series("phone", rows, dtype=pl.String))
    alone = [normalize_phones(pl.Series("phone", [r], dtype=pl.String)) for r in rows]
    assert together.values.to_list() == [a.values[0] for a in alone]
    assert together.reasons.to_list() == [a.reasons[0] for a in alone]
    assert together.values.name == "phone"


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("3DE9C399-3D2A-675E-28CA-2F3459765E58", "3de9c3993d2a675e28ca2f3459765e58"),
        ("{3de9c399-3d2a-675e-28ca-2f3459765e58}", "3de9c3993d2a675e28ca2f3459765e58"),
        ("3de9c3993d2a675e28ca2f3459765e58", "3de9c3993d2a675e28ca2f3459765e58"),
        (" 3DE9C399 3D2A 675E 28CA 2F3459765E58 ", "3de9c3993d2a675e28ca2f3459765e58"),
    ],
)
def test_device_ids_normalise_to_32_lower_case_hex_digits(written: str, normal: str):
    result = normalize_device_ids(pl.Series("device_id", [written]))
    assert result.values.to_list() == [normal] and result.reasons.to_list() == [None]


def test_device_ids_that_cannot_link_are_rejected_with_a_reason():
    written = ["00000000-0000-0000-0000-000000000000", "xyz", "abc", "", None]
    result = normalize_device_ids(pl.Series("device_id", written, dtype=pl.String))
    assert result.values.to_list() == [None] * 5
    assert result.reasons.to_list() == ["zeroed", "bad_chars", "bad_length", "missing", "missing"]
    assert set(result.reason_counts()) <= set(DEVICE_REJECTS)


def test_normalize_dispatches_by_identifier_type():
    assert normalize("mobile", pl.Series(["+86 138 0000 0001"])).values[0] == "13800000001"
    assert normalize("id_number", pl.Series(["11010519491231002x"])).values[0] == (
        "11010519491231002X"
    )
    with pytest.raises(IdentifierError, match="mobile, id_number, device_id"):
        normalize("email", pl.Series(["a@b"]))
