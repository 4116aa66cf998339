"""Keyring: real keys in tmp_path, file modes, rotation, and no key bytes in any text."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.errors import ConfigError, KeyringError, UnknownEpochError
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import INDEX_NAME, Keyring

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


@pytest.fixture
def bank(tmp_path: Path) -> Keyring:
    return Keyring.init(tmp_path / "bank", role="bank", now=NOW)


@pytest.fixture
def vendor(tmp_path: Path) -> Keyring:
    return Keyring.init(tmp_path / "vendor", role="vendor", vendor_id="vendor-a")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret_files(keyring: Keyring) -> list[Path]:
    return sorted(p for p in keyring.path.iterdir() if p.name != INDEX_NAME)


def _secrets(keyring: Keyring) -> list[bytes]:
    """Every secret the keyring holds, as raw bytes, read straight from its files."""
    return [path.read_bytes() for path in _secret_files(keyring)]


def _forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_bank_keyring_starts_with_hpke_pair_salt_epoch_and_store_key(bank: Keyring):
    assert (bank.role, bank.vendor_id) == ("bank", None)
    kid, private = bank.current_recipient()
    assert kid == "bank-hpke-1"
    assert bank.recipient_public_bytes() == (kid, private.public_key().public_bytes_raw())
    assert bank.salt_epochs() == ("e2026-11-1",)
    assert bank.current_salt().epoch_id == "e2026-11-1"
    assert len(base64.b64decode(bank.store_key(), validate=True)) == 32
    assert bank.store_key() == Keyring.open(bank.path).store_key()
    assert [p.name for p in _secret_files(bank)] == [
        "hpke.bank-hpke-1.key",
        "salt.e2026-11-1.key",
        "store.key",
    ]


def test_the_audit_trail_key_is_derived_stable_and_no_stored_secret(bank: Keyring):
    key = bank.audit_trail_key()
    assert len(key) == 32 and key == Keyring.open(bank.path).audit_trail_key()
    assert not any(form in key for secret in _secrets(bank) for form in _forms(secret))
    other = Keyring.init(bank.path.parent / "other", role="bank", now=NOW)
    assert other.audit_trail_key() != key


def test_vendor_keyring_starts_with_a_signing_key(vendor: Keyring):
    assert (vendor.role, vendor.vendor_id) == ("vendor", "vendor-a")
    kid, signer = vendor.current_signer()
    assert kid == "vendor-a-sign-1"
    assert vendor.signer_public_bytes() == (kid, signer.public_key().public_bytes_raw())
    assert vendor.salt_epochs() == ()
    with pytest.raises(KeyringError, match="no salt epoch yet"):
        vendor.current_salt()
    with pytest.raises(KeyringError, match="no bank HPKE key imported yet"):
        vendor.current_recipient_public()


def _every_key(folder: Path, role: str, *, vendor_id: str) -> Keyring:
    """Return a new keyring of `role` after making one more key of every kind that role keeps."""
    keyring = Keyring.init(
        folder,
        role=role,  # type: ignore[arg-type]
        vendor_id=vendor_id if role == "vendor" else None,
    )
    if role == "bank":
        keyring.branch_store_key("b001")
        keyring.head_office_key()
        keyring.rotate("hpke")
    else:
        keyring.rotate("signing")
    keyring.new_salt_epoch(now=NOW)
    return keyring


@pytest.mark.parametrize("role", ["bank", "vendor"])
def test_folder_is_0700_and_every_file_0600(tmp_path: Path, role: str):
    keyring = _every_key(tmp_path / "keys", role, vendor_id="vendor-a")
    assert _mode(keyring.path) == 0o700
    files = list(keyring.path.iterdir())
    assert len(files) >= 4
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert [p for p in tmp_path.iterdir()] == [keyring.path]  # no staging folder left behind


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("hpke.bank-hpke-1.key", lambda k: k.recipient_private("bank-hpke-1")),
        ("hpke.bank-hpke-1.key", lambda k: k.current_recipient()),
        ("salt.e2026-11-1.key", lambda k: k.current_salt()),
        ("store.key", lambda k: k.store_key()),
    ],
)
def test_a_key_file_open_to_others_is_refused_with_chmod_advice(bank: Keyring, name, read):
    path = bank.path / name
    path.chmod(0o644)
    with pytest.raises(KeyringError) as refused:
        read(Keyring.open(bank.path))
    assert f"chmod 600 {path}" in str(refused.value)
    assert refused.value.path == str(path)
    path.chmod(0o600)
    read(Keyring.open(bank.path))


def test_a_signing_key_open_to_group_is_refused(vendor: Keyring):
    path = vendor.path / "signing.vendor-a-sign-1.key"
    path.chmod(0o640)
    with pytest.raises(KeyringError, match=f"chmod 600 {path}"):
        vendor.current_signer()


def test_a_folder_open_to_others_is_refused(bank: Keyring):
    bank.path.chmod(0o755)
    with pytest.raises(KeyringError, match=f"chmod 700 {bank.path}"):
        Keyring.open(bank.path)


def test_a_damaged_or_missing_key_file_is_named_not_shown(bank: Keyring):
    path = bank.path / "store.key"
    path.write_bytes(path.read_bytes()[:31])
    with pytest.raises(KeyringError, match="holds 31 bytes, expected 32"):
        bank.store_key()
    path.unlink()
    with pytest.raises(KeyringError, match=r"listed in keyring\.json but missing"):
        bank.store_key()


def test_a_symlinked_key_file_is_refused(bank: Keyring, tmp_path: Path):
    path = bank.path / "store.key"
    elsewhere = tmp_path / "elsewhere.key"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(KeyringError, match="never symlinks"):
        bank.store_key()


def test_init_never_overwrites(bank: Keyring, tmp_path: Path):
    with pytest.raises(KeyringError, match="never overwritten"):
        Keyring.init(bank.path, role="bank")
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.init(tmp_path / "file", role="vendor", vendor_id="v")
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert Keyring.init(empty, role="vendor", vendor_id="v").role == "vendor"
    assert _mode(empty) == 0o700


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"role": "auditor"}, "role"),
        ({"role": "vendor"}, "vendor_id"),
        ({"role": "vendor", "vendor_id": "../escape"}, "vendor_id"),
        ({"role": "bank", "vendor_id": "vendor-a"}, "vendor_id"),
    ],
)
def test_init_arguments_are_checked(tmp_path: Path, kwargs, setting):
    with pytest.raises(ConfigError) as error:
        Keyring.init(tmp_path / "k", **kwargs)
    assert error.value.setting == setting
    assert not (tmp_path / "k").exists()


def test_open_needs_an_index(tmp_path: Path):
    with pytest.raises(KeyringError, match="no keyring at"):
        Keyring.open(tmp_path)


def test_rotation_makes_a_new_current_key_and_keeps_old_ones_readable(bank: Keyring):
    old_kid, old = bank.current_recipient()
    assert bank.rotate("hpke") == "bank-hpke-2"
    kid, new = bank.current_recipient()
    assert kid == "bank-hpke-2"
    reopened = Keyring.open(bank.path)
    assert reopened.current_recipient()[0] == "bank-hpke-2"
    assert reopened.recipient_private(old_kid).private_bytes_raw() == old.private_bytes_raw()
    assert reopened.recipient_private(kid).private_bytes_raw() == new.private_bytes_raw()
    assert old.private_bytes_raw() != new.private_bytes_raw()
    assert reopened.recipient_public_bytes("bank-hpke-1")[1] == old.public_key().public_bytes_raw()

    first = bank.current_salt()
    assert bank.rotate("salt", now=NOW) == "e2026-11-2"
    assert bank.current_salt().epoch_id == "e2026-11-2"
    assert bank.salt("e2026-11-1").salt == first.salt != bank.current_salt().salt
    assert bank.new_salt_epoch(now=datetime(2027, 1, 2, tzinfo=UTC)).epoch_id == "e2027-01-1"
    assert bank.new_salt_epoch("q4-special").epoch_id == "q4-special"
    assert bank.salt_epochs() == ("e2026-11-1", "e2026-11-2", "e2027-01-1", "q4-special")


def test_vendor_signing_rotation(vendor: Keyring):
    _, first = vendor.current_signer()
    assert vendor.rotate("signing") == "vendor-a-sign-2"
    kid, second = vendor.current_signer()
    assert kid == "vendor-a-sign-2"
    assert first.private_bytes_raw() != second.private_bytes_raw()
    assert vendor.signer_public_bytes("vendor-a-sign-1")[1] == first.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("role", "what"), [("bank", "signing"), ("vendor", "hpke"), ("bank", "store")]
)
def test_rotate_refuses_what_the_role_does_not_hold(tmp_path: Path, role, what):
    keyring = Keyring.init(tmp_path / "k", role=role, vendor_id="v" if role == "vendor" else None)
    with pytest.raises((KeyringError, ConfigError)):
        keyring.rotate(what)


def test_unknown_salt_epoch(bank: Keyring):
    with pytest.raises(UnknownEpochError) as unknown:
        bank.salt("e1999-01-1")
    assert unknown.value.epoch == "e1999-01-1"
    assert unknown.value.known == ("e2026-11-1",)
    assert "e2026-11-1" in str(unknown.value)


def test_salt_epochs_travel_between_keyrings(bank: Keyring, vendor: Keyring):
    epoch = bank.export_salt(bank.current_salt().epoch_id)
    vendor.import_salt(epoch)
    vendor.import_salt(epoch)  # the same epoch twice changes nothing
    assert vendor.current_salt() == epoch
    other = SaltEpoch.generate(epoch.epoch_id)
    with pytest.raises(KeyringError, match="different salt"):
        vendor.import_salt(other)
    later = SaltEpoch.generate("e2026-12-1")
    vendor.import_salt(later, make_current=False)
    assert vendor.current_salt() == epoch
    assert Keyring.open(vendor.path).salt_epochs() == ("e2026-11-1", "e2026-12-1")


def test_public_keys_travel_between_keyrings(bank: Keyring, vendor: Keyring):
    kid, public = vendor.signer_public_bytes()
    bank.trust_vendor("vendor-a", kid, public)
    bank.trust_vendor("vendor-a", kid, public)  # idempotent
    assert bank.vendor_public("vendor-a", kid).public_bytes_raw() == public
    with pytest.raises(KeyringError, match=r"different key bytes.*pass replace=True"):
        bank.trust_vendor("vendor-a", kid, bytes(32))
    assert bank.vendor_public("vendor-a", kid).public_bytes_raw() == public
    with pytest.raises(KeyringError, match="vendor 'vendor-b' has no trusted signing key"):
        bank.vendor_public("vendor-b", kid)
    with pytest.raises(KeyringError, match="'vendor-a-sign-9' is not in this keyring"):
        bank.vendor_public("vendor-a", "vendor-a-sign-9")
    with pytest.raises(ConfigError, match="32 raw bytes, got 31"):
        bank.trust_vendor("vendor-a", "k2", public[:31])

    vendor.import_recipient(*bank.recipient_public_bytes())
    bank.rotate("hpke")
    vendor.import_recipient(*bank.recipient_public_bytes())
    kid2, newest = Keyring.open(vendor.path).current_recipient_public()
    assert kid2 == "bank-hpke-2"
    assert newest.public_bytes_raw() == bank.current_recipient()[1].public_key().public_bytes_raw()
    assert (
        vendor.recipient_public("bank-hpke-1").public_bytes_raw()
        == (bank.recipient_public_bytes("bank-hpke-1")[1])
    )
    with pytest.raises(KeyringError, match="'bank-hpke-7' is not in this keyring"):
        vendor.recipient_public("bank-hpke-7")


def test_a_kid_changes_keys_only_when_asked(bank: Keyring, vendor: Keyring, tmp_path: Path):
    vendor.import_recipient(*bank.recipient_public_bytes())
    recreated = Keyring.init(tmp_path / "recreated-bank", role="bank")  # also "bank-hpke-1"
    kid, public = recreated.recipient_public_bytes()
    with pytest.raises(KeyringError, match="already held with different key bytes"):
        vendor.import_recipient(kid, public)
    assert vendor.recipient_public(kid).public_bytes_raw() == bank.recipient_public_bytes()[1]
    vendor.import_recipient(kid, public, replace=True)
    assert Keyring.open(vendor.path).current_recipient_public()[1].public_bytes_raw() == public

    signer_kid, signer_public = vendor.signer_public_bytes()
    bank.trust_vendor("vendor-a", signer_kid, signer_public)
    bank.trust_vendor("vendor-a", signer_kid, bytes(32), replace=True)
    assert bank.vendor_public("vendor-a", signer_kid).public_bytes_raw() == bytes(32)


@pytest.mark.parametrize(
    "call",
    [
        lambda k: k.current_recipient(),
        lambda k: k.recipient_private("bank-hpke-1"),
        lambda k: k.store_key(),
        lambda k: k.branch_store_key("b1"),
        lambda k: k.head_office_key(),
        lambda k: k.trust_vendor("v", "k", bytes(32)),
        lambda k: k.vendor_public("v", "k"),
    ],
)
def test_a_vendor_keyring_holds_no_bank_secrets(vendor: Keyring, call):
    with pytest.raises(KeyringError, match="a vendor keyring cannot"):
        call(vendor)


def test_a_bank_keyring_holds_no_signing_keys(bank: Keyring):
    with pytest.raises(KeyringError, match="a bank keyring cannot"):
        bank.current_signer()
    with pytest.raises(KeyringError, match="a bank keyring cannot"):
        bank.import_recipient("bank-hpke-1", bytes(32))


def test_branch_and_head_office_keys_are_made_once_and_kept(bank: Keyring):
    b1, b2 = bank.branch_store_key("b001"), bank.branch_store_key("b002")
    head = bank.head_office_key()
    assert len({b1, b2, head, bank.store_key()}) == 4
    reopened = Keyring.open(bank.path)
    assert reopened.branch_store_key("b001") == b1
    assert reopened.head_office_key() == head
    with pytest.raises(ConfigError):
        bank.branch_store_key("../b003")


def test_no_key_bytes_in_any_repr_str_or_message(bank: Keyring, vendor: Keyring):
    bank.branch_store_key("b001")
    bank.head_office_key()
    epoch = bank.current_salt()
    vendor.import_salt(epoch)
    texts = [
        repr(bank),
        str(bank),
        repr(vendor),
        repr(epoch),
        str(epoch),
        repr(bank.current_recipient()),
        repr(vendor.current_signer()),
        repr(bank.recipient_private("bank-hpke-1")),
        repr(vendor.oprf_key(vendor.current_oprf_epoch())),
    ]
    (bank.path / "store.key").chmod(0o604)
    with pytest.raises(KeyringError) as loose:
        bank.store_key()
    texts.append(str(loose.value))
    with pytest.raises(UnknownEpochError) as unknown:
        bank.salt("nope")
    texts.append(str(unknown.value))
    with pytest.raises(UnknownEpochError) as unknown_oprf:
        vendor.oprf_key("nope")
    texts.append(str(unknown_oprf.value))
    blob = "\n".join(texts).encode()
    secrets = _secrets(bank) + _secrets(vendor)
    assert len(secrets) == 8  # bank: hpke, salt, store x3; vendor: signing, salt, oprf
    for secret in secrets:
        for form in _forms(secret):
            assert form not in blob


@pytest.mark.parametrize("role", ["bank", "vendor"])
def test_the_index_holds_no_secret_bytes(tmp_path: Path, role: str):
    keyring = _every_key(tmp_path / "k", role, vendor_id="v")
    index = (keyring.path / INDEX_NAME).read_bytes()
    secrets = _secrets(keyring)
    assert len(secrets) >= 3
    for secret in secrets:
        for form in _forms(secret):
            assert form not in index


def test_a_vendor_keyring_holds_an_oprf_key_per_epoch_and_keeps_old_ones(tmp_path: Path):
    vendor = Keyring.init(tmp_path / "v", role="vendor", vendor_id="vendor-a", now=NOW)
    first = vendor.current_oprf_epoch()
    assert first == "o2026-11-1" and vendor.oprf_epochs() == (first,)
    key = vendor.oprf_key(first)
    assert vendor.rotate("oprf", now=NOW) == "o2026-11-2"
    reopened = Keyring.open(vendor.path)
    assert reopened.current_oprf_epoch() == "o2026-11-2"
    assert reopened.oprf_key(first).scalar == key.scalar  # old epochs stay readable
    assert reopened.oprf_key("o2026-11-2").scalar != key.scalar
    assert (vendor.path / f"oprf.{first}.key").stat().st_mode & 0o077 == 0
    with pytest.raises(KeyringError, match="never replaced"):
        vendor.new_oprf_epoch(first)
    with pytest.raises(UnknownEpochError, match="OPRF epoch 'o1999-01-1'"):
        vendor.oprf_key("o1999-01-1")


def test_a_bank_keyring_holds_no_oprf_key(bank: Keyring):
    assert bank.oprf_epochs() == ()
    with pytest.raises(KeyringError, match="vendor"):
        bank.new_oprf_epoch()
    with pytest.raises(KeyringError, match="vendor"):
        bank.oprf_key("o2026-11-1")


def test_a_keyring_made_before_the_oprf_mode_starts_its_first_epoch_on_rotate(vendor: Keyring):
    index = json.loads((vendor.path / INDEX_NAME).read_bytes())
    for epoch in index.pop("oprf")["epochs"]:
        (vendor.path / f"oprf.{epoch}.key").unlink()
    (vendor.path / INDEX_NAME).write_text(json.dumps(index))
    old = Keyring.open(vendor.path)
    assert old.oprf_epochs() == ()
    with pytest.raises(KeyringError, match="fusion vendor rotate --what oprf"):
        old.current_oprf_epoch()
    epoch = old.rotate("oprf", now=NOW)
    assert Keyring.open(vendor.path).oprf_key(epoch) is not None


def test_the_oprf_budget_file_is_locked_kept_and_refuses_damage(vendor: Keyring):
    epoch = vendor.current_oprf_epoch()
    with vendor.oprf_budget(epoch) as stored:
        assert stored.read() is None
        stored.write({"used": 3})
    with vendor.oprf_budget(epoch) as stored:
        assert stored.read() == {"used": 3}
        assert stored.path.stat().st_mode & 0o077 == 0
        stored.path.write_text("{")
        with pytest.raises(KeyringError, match="backup"):
            stored.read()
