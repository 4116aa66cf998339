"""API tokens: shown once, stored as hashes, verified in constant time, revocable."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from fusion.store import Store
from fusion.tokens import TokenBook, create_token, revoke_token

NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "s.duckdb", key=secrets.token_hex(32)) as opened:
        yield opened


def test_a_token_is_stored_only_as_its_hash(store: Store, tmp_path: Path):
    issued = create_token(store, role="analyst", branches=["B002", "B001"], now=NOW, label="ana")
    assert issued.secret.startswith(f"bf_{issued.principal.token_id}_")
    assert len(issued.secret) == 3 + 16 + 1 + 43  # 32 random bytes, base64url
    assert issued.secret not in repr(issued)
    row = store.execute("SELECT * FROM api_tokens").fetchall()
    assert len(row) == 1 and issued.secret.encode() not in repr(row).encode()
    store.checkpoint()
    assert issued.secret.encode() not in (tmp_path / "s.duckdb").read_bytes()
    book = TokenBook.load(store)
    principal = book.verify(issued.secret)
    assert principal == issued.principal
    assert principal is not None and principal.branches == frozenset({"B001", "B002"})


def test_misses_and_revocation(store: Store):
    vendor = create_token(store, role="vendor", vendor_id="vendor-a", now=NOW)
    admin = create_token(store, role="admin", now=NOW)
    book = TokenBook.load(store)
    assert len(book) == 2
    other_secret = admin.secret[:-1] + ("A" if admin.secret[-1] != "A" else "B")
    for bad in (None, "", "Bearer x", "bf_0000000000000000_" + "A" * 43, other_secret, "x" * 5000):
        assert book.verify(bad) is None
    assert book.verify(vendor.secret).vendor_id == "vendor-a"  # type: ignore[union-attr]
    assert revoke_token(store, vendor.principal.token_id, now=NOW)
    assert not revoke_token(store, vendor.principal.token_id, now=NOW)
    assert TokenBook.load(store).verify(vendor.secret) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "root"}, "role must be one of"),
        ({"role": "admin", "branches": ["B001"]}, "only analyst tokens have branches"),
        ({"role": "analyst", "branches": []}, "one or more branch ids"),
        ({"role": "analyst", "branches": ["../x"]}, "one or more branch ids"),
        ({"role": "vendor"}, "needs --vendor"),
        ({"role": "admin", "vendor_id": "v"}, "needs --vendor"),
    ],
)
def test_bad_grants_are_refused(store: Store, kwargs: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        create_token(store, now=NOW, **kwargs)


def test_head_office_snapshot_leaves_token_hashes_behind(store: Store, tmp_path: Path):
    create_token(store, role="admin", now=NOW)
    head = secrets.token_hex(32)
    written = store.publish(tmp_path / "snap", head_office_key=head, branch_keys={})
    with Store.open(written["head_office"], key=head, read_only=True) as snapshot:
        assert snapshot.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
