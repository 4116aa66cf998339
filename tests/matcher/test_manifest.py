"""Batch manifests: canonical JSON both ways, and a precise message for each bad field."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from contracts.errors import EnvelopeError
from matcher.manifest import Manifest
from tests.support.sealing import CHUNK, Parties


def test_the_manifest_is_canonical_json(parties: Parties):
    manifest = replace(
        parties.manifest(
            created_at=datetime(2026, 11, 3, 17, 30, tzinfo=timezone(timedelta(hours=8)))
        ),
        payload_bytes=5,
        payload_sha256="0" * 64,
        chunk_size=CHUNK,
    )
    data = manifest.to_bytes()
    fields = json.loads(data)
    assert data == json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert fields["created_at"] == "2026-11-03T09:30:00Z"  # UTC
    assert fields["mode"] == "salted" and fields["format_version"] == 3
    assert fields["suite"] == "X25519" and "oprf_public_key" not in fields
    assert Manifest.from_bytes(data) == manifest
    assert "counts" not in json.loads(replace(manifest, counts=None).to_bytes())
    with pytest.raises(EnvelopeError, match="canonical"):
        Manifest.from_bytes(json.dumps(fields, sort_keys=True).encode())
    with pytest.raises(EnvelopeError, match="unknown \\['extra'\\]"):
        Manifest.from_bytes(json.dumps(fields | {"extra": 1}, sort_keys=True).encode())
    with pytest.raises(EnvelopeError, match="never sealed"):
        Manifest.from_bytes(parties.manifest().to_bytes())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_id", "not-a-uuid", "batch_id must be a UUID"),
        ("batch_id", "5C0FFEE0-1234-4ABC-8DEF-0123456789AB", "canonical lowercase"),
        ("created_at", datetime(2026, 11, 3, 9, 30), "timezone-aware"),
        ("vendor_id", None, "vendor_id is missing"),
        ("rows", -1, "non-negative integer"),
        ("rows", True, "non-negative integer"),
        ("mode", "plain", "mode must be one of salted, oprf"),
        ("contract", 'vendor"batch', "without quotes or backslashes"),
        ("taxonomy_version", "", "1-128 printable ASCII"),
        ("counts", {"apps": 1.5}, "non-negative integer"),
    ],
)
def test_manifest_new_explains_bad_fields(parties: Parties, field: str, value, message: str):
    with pytest.raises(EnvelopeError, match=message):
        parties.manifest(**{field: value})


def test_version_3_fields(parties: Parties):
    """`suite` exists from version 3 on (X25519 is implied before); an OPRF public key only in
    an OPRF batch."""
    sealed = replace(parties.manifest(), payload_sha256="0" * 64, chunk_size=CHUNK)
    assert Manifest.from_bytes(sealed.to_bytes()).suite == "X25519"
    v2 = replace(sealed, format_version=2, suite=None)
    assert "suite" not in json.loads(v2.to_bytes())
    with pytest.raises(EnvelopeError, match="exist from format version 3"):
        replace(v2, suite="X25519")
    with pytest.raises(EnvelopeError, match="suite must be one of X25519, MLKEM768-X25519"):
        replace(sealed, suite=None)
    with pytest.raises(EnvelopeError, match="OPRF-mode batch only"):
        replace(sealed, oprf_public_key="ab" * 32)
    oprf = parties.manifest(mode="oprf", oprf_public_key=bytes(range(32)))
    assert oprf.oprf_public_key == bytes(range(32)).hex()
    with pytest.raises(EnvelopeError, match="64 lowercase hex"):
        replace(oprf, oprf_public_key="AB" * 32)


def test_the_identifiers_of_a_batch_keyed_by_several(parties: Parties):
    """Declared in the composite key's order, the mobile number first; from version 3 on."""
    several = parties.manifest(identifiers=("device_id", "mobile"))
    assert several.identifiers == "mobile,device_id"
    assert several.identifier_types == ("mobile", "device_id")
    assert parties.manifest().identifier_types == ("mobile",)
    assert "identifiers" not in json.loads(parties.manifest().to_bytes())
    sealed = replace(several, payload_sha256="0" * 64, chunk_size=CHUNK)
    assert Manifest.from_bytes(sealed.to_bytes()).identifiers == "mobile,device_id"
    for bad in ("id_number", "device_id,mobile", "mobile,email", "mobile,mobile"):
        with pytest.raises(EnvelopeError, match="identifiers must be 'mobile'"):
            replace(several, identifiers=bad)
    with pytest.raises(EnvelopeError, match="exist from format version 3"):
        replace(sealed, format_version=2, suite=None)
