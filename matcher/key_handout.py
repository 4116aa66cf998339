"""Snapshot keys for analysts: versioned keys, and a key sealed to one analyst's own key pair.

    analyst:  write_analyst_keys(folder)            -> analyst.key (X25519, 0600), analyst.pub
    bank:     seal_handout(key=..., snapshot=..., label=..., key_version=...,
                           recipient=analyst.pub bytes, store_key=bank's store key) -> handout
    analyst:  open_handout(handout, private_key=analyst.key, bank_public=bank's handout key,
                           snapshot=..., label=...)                                -> the key

A handout is a small JSON document: a header (snapshot, label, key version, the SHA-256 of the
recipient's public key, the bank's handout public key, the issue time), the snapshot key sealed
with single-shot HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-256-GCM: the suite of sealed batches, `matcher.envelope`), and an Ed25519 signature (RFC
8032) by the bank. The header is bound twice: into HPKE's `info` (label || SHA-256 of the
canonical header; RFC 9180 section 8.1 puts such context in `info`, as `matcher.envelope` does)
and into the signature. So a handout for branch B001 cannot be passed off as B002's or as
another analyst's: any edit of the header breaks the signature and the unwrap. Base mode does
not say who sealed; the signature does (cryptography's HPKE offers no auth mode).

The bank's keys here are derived from its DuckDB store key, which never leaves the bank, with
the one-message HMAC of `matcher.keyed_hash` as a KDF (NIST SP 800-108, feedback form):

    handout signing seed   = HMAC-SHA256(store key, "bankfusion/key-handout/v1/bank-signing")
    snapshot key, version v = HMAC-SHA256(store key, "bankfusion/snapshot-key/v1/<name>/<v>")

Version 1 of a snapshot key is the keyring's own random file (`Keyring.head_office_key`,
`Keyring.branch_store_key`); versions 2, 3... are derived, so rotating needs no new secret file
and no holder of one version can compute another (HMAC is a PRF). Nothing here prints or logs a
key, and no error message quotes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.errors import ConfigError, KeyringError
from matcher.atomic import write_atomic
from matcher.keyed_hash import hmac_digest

__all__ = [
    "HANDOUT_FORMAT",
    "OpenedHandout",
    "bank_handout_public",
    "derive_snapshot_key",
    "open_handout",
    "public_key_fingerprint",
    "read_public_key",
    "seal_handout",
    "write_analyst_keys",
    "write_public_key",
    "write_snapshot_key",
]

HANDOUT_FORMAT = "bankfusion-key-handout/1"
PRIVATE_NAME, PUBLIC_NAME = "analyst.key", "analyst.pub"
KEY_BYTES = 32
MAX_HANDOUT_BYTES = 16 * 1024
_INFO_LABEL = b"bankfusion/key-handout/v1/key"
_SIGNATURE_LABEL = b"bankfusion/key-handout/v1/signature"
_SIGNING_LABEL = b"bankfusion/key-handout/v1/bank-signing"
_SNAPSHOT_KEY_LABEL = "bankfusion/snapshot-key/v1/"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HEADER_FIELDS = ("format", "snapshot", "label", "key_version", "recipient", "signer", "issued_at")
_LOOSE = stat.S_IRWXG | stat.S_IRWXO
# One message for every handout that does not open: which check failed helps nobody but an
# attacker probing edits, and the analyst's fix is the same (ask the bank for a new handout).
_REFUSED = (
    "this key handout did not open: it was not sealed by the bank key given, was changed, or is "
    "for another analyst key, snapshot or label. Check --bank-key and --private-key, or ask the "
    "bank for a new handout (`fusion snapshot grant`)"
)


@dataclass(frozen=True, slots=True)
class OpenedHandout:
    """A verified handout: what it is for, and the snapshot key (never in the repr)."""

    snapshot: str
    label: str
    key_version: int
    issued_at: datetime
    key: str = field(repr=False)


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"{what} must be 1-64 letters, digits, '.', '_', '@' or '-' (starting with a letter "
            f"or digit), got {value!r}",
            setting=what,
        )
    return value


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"key_version must be a whole number from 1, got {version!r}", setting="key_version"
        )
    return version


def _store_secret(store_key: str) -> bytes:
    try:
        raw = base64.b64decode(store_key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            "store_key must be the keyring's store key (32 bytes, base64), as "
            "Keyring.store_key() returns it",
            setting="store_key",
        )
    return raw


def derive_snapshot_key(store_key: str, snapshot: str, version: int) -> str:
    """Return version `version` (>= 2) of snapshot `snapshot`'s key, base64 (ENCRYPTION_KEY).

    Version 1 is the keyring's own file; later versions come from the store key, so only the
    bank can make them and a holder of one version learns nothing of another.
    """
    _check_name(snapshot, "snapshot")
    if _check_version(version) < 2:
        raise ConfigError(
            "version 1 of a snapshot key is the keyring's own key (Keyring.head_office_key or "
            "branch_store_key); derive versions from 2",
            setting="key_version",
        )
    message = f"{_SNAPSHOT_KEY_LABEL}{snapshot}/{version}".encode()
    return base64.b64encode(hmac_digest(_store_secret(store_key), message)).decode("ascii")


def _bank_signer(store_key: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hmac_digest(_store_secret(store_key), _SIGNING_LABEL)
    )


def _raw(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def bank_handout_public(store_key: str) -> bytes:
    """Return the bank's handout verification key (Ed25519, 32 raw bytes) for analysts to pin."""
    return _raw(_bank_signer(store_key).public_key())


def public_key_fingerprint(public: bytes) -> str:
    """Return the SHA-256 of a public key, hex: what audit rows and handouts name it by."""
    return hashlib.sha256(public).hexdigest()


def write_public_key(path: Path, public: bytes) -> Path:
    """Write a public key as one line of hex (mode 0644); refuses to replace a file."""
    if len(public) != KEY_BYTES:
        raise ConfigError(f"a public key is {KEY_BYTES} bytes, got {len(public)}", setting="key")
    if path.exists():
        raise ConfigError(f"{path} exists; a key file is never overwritten", setting="path")
    return write_atomic(path, public.hex() + "\n", mode=0o644)


def read_public_key(path: Path) -> bytes:
    """Return the 32 raw bytes of a public key file (one line of 64 hex characters)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        raw = bytes.fromhex(text)
    except FileNotFoundError:
        raise ConfigError(f"no public key file at {path}", setting="public_key") from None
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{path} is not a public key file: expected one line of {2 * KEY_BYTES} hex "
            "characters, as `fusion snapshot keygen` writes analyst.pub",
            setting="public_key",
        )
    return raw


def write_analyst_keys(folder: Path) -> tuple[Path, Path]:
    """Return (private, public) key files of a new X25519 pair written in `folder` (0700).

    The private key is 32 raw bytes, mode 0600; the public key one line of hex, to send the
    bank. An existing pair is never replaced: a handout sealed to it would no longer open.
    """
    folder = Path(folder)
    private, public = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private.exists() or public.exists():
        raise ConfigError(
            f"{folder} already holds an analyst key pair; keep it (handouts are sealed to it), "
            "or choose another folder",
            setting="out",
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    write_atomic(private, key.private_bytes_raw(), mode=0o600)
    write_public_key(public, _raw(key.public_key()))
    return private, public


def write_snapshot_key(path: Path, opened: OpenedHandout) -> Path:
    """Write an opened handout's snapshot key as one line of text, mode 0600; never replaces."""
    if Path(path).exists():
        raise ConfigError(f"{path} exists; a key file is never overwritten", setting="out")
    return write_atomic(path, opened.key + "\n", mode=0o600)


def _read_private(path: Path) -> X25519PrivateKey:
    """Return the analyst's private key; refuses a file group or others can read."""
    try:
        info = Path(path).stat()
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyringError(f"no private key file at {path}", path=str(path)) from None
    if info.st_mode & _LOOSE:
        raise KeyringError(
            f"private key file {path} is open to group or others; run: chmod 600 {path}",
            path=str(path),
        )
    if len(raw) != KEY_BYTES:
        raise KeyringError(
            f"{path} holds {len(raw)} bytes, expected a {KEY_BYTES}-byte X25519 key as "
            "`fusion snapshot keygen` writes it",
            path=str(path),
        )
    return X25519PrivateKey.from_private_bytes(raw)


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _info(header_bytes: bytes) -> bytes:
    return _INFO_LABEL + hashlib.sha256(header_bytes).digest()


def seal_handout(
    *,
    key: str,
    snapshot: str,
    label: str,
    key_version: int,
    recipient: bytes,
    store_key: str,
    issued_at: datetime,
) -> bytes:
    """Return a handout (JSON bytes) of snapshot key `key`, sealed to `recipient` and signed.

    Args:
        key: the snapshot's DuckDB key (base64 text) at version `key_version`.
        snapshot: "head_office" or a branch id: what the key opens.
        label: the analyst it is for, as the bank's audit names them.
        recipient: the analyst's X25519 public key, 32 raw bytes (`read_public_key`).
        store_key: the bank's store key; the signing key is derived from it.
        issued_at: the time written into the handout (an argument, so tests pin it).
    """
    if len(recipient) != KEY_BYTES:
        raise ConfigError(
            f"recipient must be a {KEY_BYTES}-byte X25519 public key", setting="public_key"
        )
    signer = _bank_signer(store_key)
    header = {
        "format": HANDOUT_FORMAT,
        "snapshot": _check_name(snapshot, "snapshot"),
        "label": _check_name(label, "label"),
        "key_version": _check_version(key_version),
        "recipient": public_key_fingerprint(recipient),
        "signer": _raw(signer.public_key()).hex(),
        "issued_at": issued_at.astimezone(UTC).isoformat(),
    }
    header_bytes = _canonical(header)
    sealed = _SUITE.encrypt(
        key.encode("ascii"), X25519PublicKey.from_public_bytes(recipient), info=_info(header_bytes)
    )
    signature = signer.sign(_SIGNATURE_LABEL + header_bytes + hashlib.sha256(sealed).digest())
    document = header | {
        "sealed": base64.b64encode(sealed).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def open_handout(
    handout: bytes,
    *,
    private_key: Path,
    bank_public: bytes,
    snapshot: str | None = None,
    label: str | None = None,
) -> OpenedHandout:
    """Return the verified handout's snapshot key, or raise KeyringError (one message).

    The signature is checked against `bank_public` (pinned by the analyst, from the bank) before
    anything is decrypted; `snapshot` and `label`, when given, must be what the handout names.
    """
    private = _read_private(private_key)
    try:
        document = json.loads(handout[:MAX_HANDOUT_BYTES])
        header = {name: document[name] for name in _HEADER_FIELDS}
        sealed = base64.b64decode(document["sealed"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        header_bytes = _canonical(header)
        Ed25519PublicKey.from_public_bytes(bank_public).verify(
            signature, _SIGNATURE_LABEL + header_bytes + hashlib.sha256(sealed).digest()
        )
        mine = public_key_fingerprint(_raw(private.public_key()))
        wanted = {"format": HANDOUT_FORMAT, "recipient": mine, "signer": bank_public.hex()}
        wanted |= {"snapshot": snapshot} if snapshot is not None else {}
        wanted |= {"label": label} if label is not None else {}
        ours = all(header[name] == value for name, value in wanted.items())
        key = _SUITE.decrypt(sealed, private, info=_info(header_bytes)).decode("ascii")
        opened = (
            None
            if not ours
            else OpenedHandout(
                snapshot=_check_name(header["snapshot"], "snapshot"),
                label=_check_name(header["label"], "label"),
                key_version=_check_version(header["key_version"]),
                issued_at=datetime.fromisoformat(header["issued_at"]),
                key=key,
            )
        )
    except (
        InvalidSignature,
        InvalidTag,
        ValueError,  # JSON, base64, a wrong-sized key, a header that is not for us
        KeyError,
        TypeError,
        UnicodeDecodeError,
    ):
        opened = None
    if opened is None:
        raise KeyringError(_REFUSED)  # outside the except: no cause chained to the message
    return opened
