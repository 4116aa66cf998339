"""Keyed hashing: RFC 4231 vectors through the native HMAC, and the match-key construction."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError, IdentifierError
from matcher.keyed_hash import KEY_BYTES, SaltEpoch, compose_keys, hmac_sha256, keyed_hash

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc4231.json").read_text())["cases"]


def _utf8(key: bytes) -> str | None:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: f"rfc4231-{c['case']}")
def test_rfc4231_vectors(case: dict):
    key, data = bytes.fromhex(case["key"]), bytes.fromhex(case["data"])
    text_key = _utf8(key)
    if text_key is None:
        # The native HMAC takes text keys (platform keys are hex text, so these bytes are never
        # one). The vector is checked on the standard library, which the property test below
        # ties the native path to.
        digest = hmac.new(key, data, "sha256").digest()
        assert digest.hex()[: len(case["hmac_sha256"])] == case["hmac_sha256"]
        return
    digest = hmac_sha256(pl.Series("m", [data], dtype=pl.Binary), text_key)[0]
    assert digest.hex()[: len(case["hmac_sha256"])] == case["hmac_sha256"]


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=80), message=st.binary(max_size=300))
def test_native_hmac_equals_the_standard_library(key: str, message: bytes):
    got = hmac_sha256(pl.Series("m", [message], dtype=pl.Binary), key)[0]
    assert got == hmac.new(key.encode(), message, "sha256").digest()


def _reference(salt: bytes, domain: str, value: str) -> bytes:
    """The match-key formula written out with the standard library (module docstring)."""
    subkey = hmac.new(salt, f"bankfusion/match-key/v1/{domain}".encode(), "sha256").hexdigest()
    return hmac.new(subkey.encode(), value.encode(), "sha256").digest()


def test_match_key_is_hmac_under_the_domain_subkey_of_the_salt():
    epoch = SaltEpoch(epoch_id="e1", salt=bytes(range(32)))
    keys = keyed_hash(
        pl.Series("phone", ["13812345678", None, "13900000000"]), epoch, domain="mobile"
    )
    assert keys.dtype == pl.Binary and keys.name == "phone"
    assert keys.to_list() == [
        _reference(bytes(range(32)), "mobile", "13812345678"),
        None,
        _reference(bytes(range(32)), "mobile", "13900000000"),
    ]


def test_domains_and_epochs_separate_keys():
    value = pl.Series("v", ["110105194912310021"])
    e1, e2 = SaltEpoch.generate("e1"), SaltEpoch.generate("e2")
    assert keyed_hash(value, e1, domain="mobile")[0] != keyed_hash(value, e1, domain="id_number")[0]
    assert keyed_hash(value, e1, domain="mobile")[0] != keyed_hash(value, e2, domain="mobile")[0]


def test_large_columns_hash_in_slices_with_order_kept():
    epoch = SaltEpoch.generate("e1")
    values = pl.Series("phone", [f"139{i:08d}" if i % 7 else None for i in range(600_000)])
    keys = keyed_hash(values, epoch, domain="mobile")
    assert len(keys) == len(values) and keys.null_count() == values.null_count()
    assert keys.drop_nulls().bin.size().unique().to_list() == [KEY_BYTES]
    for i in (1, 224_999, 300_001, 599_999):
        assert keys[i] == _reference(epoch.salt, "mobile", values[i])


def test_salt_never_shows_in_repr():
    epoch = SaltEpoch.generate("e1")
    assert epoch.salt.hex() not in repr(epoch) and "hidden" in repr(epoch)


@pytest.mark.parametrize("salt", [b"", b"x" * 31, b"x" * 33])
def test_salt_must_be_32_bytes(salt: bytes):
    with pytest.raises(ConfigError, match="32 bytes"):
        SaltEpoch(epoch_id="e1", salt=salt)


def test_wrong_inputs_get_precise_errors():
    epoch = SaltEpoch.generate("e1")
    with pytest.raises(ConfigError, match="domain"):
        keyed_hash(pl.Series("v", ["1"]), epoch, domain="email")
    with pytest.raises(IdentifierError, match="normalize"):
        keyed_hash(pl.Series("v", [13812345678]), epoch, domain="mobile")


def test_composite_keys_lay_each_type_in_its_slot_and_fill_gaps():
    epoch = SaltEpoch.generate("e1")
    phones = keyed_hash(pl.Series(["13800000001", None]), epoch, domain="mobile")
    devices = keyed_hash(pl.Series([None, "ab" * 16]), epoch, domain="device_id")
    bank = compose_keys({"mobile": phones, "device_id": devices}, KEY_BYTES)
    assert bank.to_list() == [
        phones[0] + bytes(64),
        bytes(64) + devices[1],
    ]
    vendor = compose_keys({"mobile": phones, "device_id": devices}, KEY_BYTES, random_fill=True)
    assert vendor[0][:32] == phones[0] and vendor[1][64:] == devices[1]
    # The gaps are random, so they never equal a key or each other.
    assert vendor[0][32:64] != bytes(32) and vendor[0][32:] != vendor[1][32:64]
    assert (
        keyed_hash(pl.Series(["x"]), epoch, domain="device_id")[0]
        != keyed_hash(pl.Series(["x"]), epoch, domain="id_number")[0]
    )
