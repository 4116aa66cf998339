"""Key handouts: a snapshot key sealed to an analyst's X25519 key, signed by the bank."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.errors import ConfigError, KeyringError
from matcher.key_handout import (
    bank_handout_public,
    derive_snapshot_key,
    open_handout,
    read_public_key,
    seal_handout,
    write_analyst_keys,
    write_snapshot_key,
)

NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)
STORE_KEY = base64.b64encode(bytes(range(32))).decode()
SNAPSHOT_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def analyst(tmp_path: Path) -> tuple[Path, bytes]:
    private, public = write_analyst_keys(tmp_path / "alice")
    return private, read_public_key(public)


def _handout(recipient: bytes, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "key": SNAPSHOT_KEY, "snapshot": "B001", "label": "alice", "key_version": 2,
        "recipient": recipient, "store_key": STORE_KEY, "issued_at": NOW,
    }  # fmt: skip
    fields.update(changes)
    return seal_handout(**fields)  # type: ignore[arg-type]


def test_a_handout_opens_with_the_analysts_key_and_the_banks(analyst: tuple[Path, bytes]):
    private, public = analyst
    assert private.stat().st_mode & 0o777 == 0o600
    handout = _handout(public)
    assert SNAPSHOT_KEY.encode() not in handout
    opened = open_handout(
        handout, private_key=private, bank_public=bank_handout_public(STORE_KEY),
        snapshot="B001", label="alice",
    )  # fmt: skip
    assert (opened.snapshot, opened.label, opened.key_version) == ("B001", "alice", 2)
    assert opened.key == SNAPSHOT_KEY and SNAPSHOT_KEY not in repr(opened)
    assert opened.issued_at == NOW
    written = write_snapshot_key(private.parent / "b001.key", opened)
    assert written.read_text().strip() == SNAPSHOT_KEY and written.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="never overwritten"):
        write_snapshot_key(written, opened)


def _edited(handout: bytes, field: str, value: object) -> bytes:
    document = json.loads(handout)
    document[field] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [("snapshot", "B002"), ("label", "mallory"), ("key_version", 3), ("issued_at", "2027-01-01"),
     ("sealed", base64.b64encode(b"x" * 80).decode()), ("signature", "")],
)  # fmt: skip
def test_an_edited_handout_is_refused_with_one_message(
    analyst: tuple[Path, bytes], field: str, value: object
):
    private, public = analyst
    edited = _edited(_handout(public), field, value)
    with pytest.raises(KeyringError, match="did not open") as refused:
        open_handout(edited, private_key=private, bank_public=bank_handout_public(STORE_KEY))
    assert refused.value.__cause__ is None and refused.value.__context__ is None


def test_a_handout_for_another_branch_analyst_or_bank_is_refused(
    analyst: tuple[Path, bytes], tmp_path: Path
):
    private, public = analyst
    handout, bank = _handout(public), bank_handout_public(STORE_KEY)
    other_private, _ = write_analyst_keys(tmp_path / "bob")
    other_bank = bank_handout_public(base64.b64encode(b"\x01" * 32).decode())
    for kwargs in (
        {"private_key": private, "bank_public": bank, "snapshot": "B002"},
        {"private_key": private, "bank_public": bank, "label": "bob"},
        {"private_key": other_private, "bank_public": bank},
        {"private_key": private, "bank_public": other_bank},
    ):
        with pytest.raises(KeyringError, match="did not open"):
            open_handout(handout, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(KeyringError, match="did not open"):
        open_handout(b"not json", private_key=private, bank_public=bank)


def test_a_loose_private_key_and_a_second_keygen_are_refused(analyst: tuple[Path, bytes]):
    private, public = analyst
    with pytest.raises(ConfigError, match="already holds"):
        write_analyst_keys(private.parent)
    private.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        open_handout(_handout(public), private_key=private, bank_public=b"\x00" * 32)


def test_snapshot_key_versions_are_distinct_and_start_at_two():
    keys = {
        derive_snapshot_key(STORE_KEY, name, version)
        for name in ("head_office", "B001", "B002")
        for version in (2, 3)
    }
    assert len(keys) == 6
    assert derive_snapshot_key(STORE_KEY, "B001", 2) == derive_snapshot_key(STORE_KEY, "B001", 2)
    assert all(len(base64.b64decode(k)) == 32 for k in keys)
    with pytest.raises(ConfigError, match="version 1"):
        derive_snapshot_key(STORE_KEY, "B001", 1)
    with pytest.raises(ConfigError, match="store_key"):
        derive_snapshot_key("short", "B001", 2)


def test_a_public_key_file_must_be_64_hex_characters(tmp_path: Path):
    (tmp_path / "bad.pub").write_text("zz\n")
    with pytest.raises(ConfigError, match="64 hex"):
        read_public_key(tmp_path / "bad.pub")
    with pytest.raises(ConfigError, match="no public key file"):
        read_public_key(tmp_path / "missing.pub")
