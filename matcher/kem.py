"""The HPKE suites a batch's data key can be wrapped with, and their keys as raw bytes.

Two suites, both RFC 9180 base mode with HKDF-SHA256 and AES-256-GCM; they differ in the KEM:

| suite             | KEM (HPKE id)                       | public | private, stored | enc   |
|-------------------|-------------------------------------|--------|-----------------|-------|
| `X25519`          | DHKEM(X25519, HKDF-SHA256) (0x0020) | 32     | 32 (RFC 7748)   | 32    |
| `MLKEM768-X25519` | MLKEM768-X25519 (0x647A, X-Wing)    | 1,216  | 96              | 1,120 |

The hybrid KEM (draft-ietf-hpke-pq; draft-irtf-cfrg-concrete-hybrid-kems, section 4.2) joins
ML-KEM-768 (FIPS 203) and X25519 and hashes both shared secrets together, so a batch recorded
today stays closed unless both are broken: X25519 by a future quantum computer, ML-KEM-768 by a
classical break of a young scheme. Its public key is the ML-KEM-768 encapsulation key (1,184
bytes) followed by the X25519 key (32); its private key is stored as the ML-KEM-768 seed d || z
(64 bytes, FIPS 203 section 7.1, the form `MLKEM768PrivateKey.from_seed_bytes` takes) followed by
the X25519 private key (32). cryptography 50 computes the KEM (`hpke.KEM.MLKEM768_X25519`).
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from contracts.errors import ConfigError

__all__ = [
    "RecipientPrivateKey",
    "RecipientPublicKey",
    "Suite",
    "generate",
    "private_key",
    "public_key",
    "suite_of",
]

RecipientPrivateKey = X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
RecipientPublicKey = X25519PublicKey | hpke.MLKEM768X25519PublicKey

_X25519_BYTES = 32
_MLKEM_SEED_BYTES = 64
_MLKEM_PUBLIC_BYTES = 1184


class Suite(StrEnum):
    """An HPKE suite of the envelope, named by its KEM as the manifest's `suite` field says."""

    X25519 = "X25519"
    MLKEM768_X25519 = "MLKEM768-X25519"

    @property
    def hpke(self) -> hpke.Suite:
        """Return the cryptography HPKE suite: this KEM, HKDF-SHA256, AES-256-GCM."""
        kem = hpke.KEM.X25519 if self is Suite.X25519 else hpke.KEM.MLKEM768_X25519
        return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    @property
    def enc_bytes(self) -> int:
        """Return the size of the KEM's encapsulated key (HPKE `enc`)."""
        kem = hpke.KEM.X25519 if self is Suite.X25519 else hpke.KEM.MLKEM768_X25519
        return int(kem.enc_length())

    @property
    def public_bytes(self) -> int:
        """Return the size of a raw public key of this suite."""
        return _X25519_BYTES if self is Suite.X25519 else _MLKEM_PUBLIC_BYTES + _X25519_BYTES

    @property
    def private_bytes(self) -> int:
        """Return the size of a stored private key of this suite."""
        return _X25519_BYTES if self is Suite.X25519 else _MLKEM_SEED_BYTES + _X25519_BYTES

    @classmethod
    def parse(cls, value: object, *, setting: str = "suite") -> Suite:
        """Return the suite named `value`; ConfigError lists the names otherwise."""
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        raise ConfigError(
            f"{setting} must be one of {', '.join(cls)}, got {value!r}", setting=setting
        )


def generate(suite: Suite) -> tuple[bytes, bytes]:
    """Return (private key as stored, raw public key) of a new key pair of `suite`."""
    x25519 = X25519PrivateKey.generate()
    x_private, x_public = x25519.private_bytes_raw(), x25519.public_key().public_bytes_raw()
    if suite is Suite.X25519:
        return x_private, x_public
    mlkem = MLKEM768PrivateKey.generate()
    seed = mlkem.private_bytes_raw()  # the 64-byte seed d || z
    return seed + x_private, mlkem.public_key().public_bytes_raw() + x_public


def private_key(suite: Suite, raw: bytes | bytearray) -> RecipientPrivateKey:
    """Return the private key of `suite` stored as `raw` (sizes checked by the caller)."""
    if suite is Suite.X25519:
        return X25519PrivateKey.from_private_bytes(bytes(raw))
    return hpke.MLKEM768X25519PrivateKey(
        MLKEM768PrivateKey.from_seed_bytes(bytes(raw[:_MLKEM_SEED_BYTES])),
        X25519PrivateKey.from_private_bytes(bytes(raw[_MLKEM_SEED_BYTES:])),
    )


def public_key(suite: Suite, raw: bytes) -> RecipientPublicKey:
    """Return the public key of `suite` whose raw bytes are `raw`; ConfigError on a bad size."""
    if len(raw) != suite.public_bytes:
        raise ConfigError(
            f"a {suite} public key is {suite.public_bytes} raw bytes, got {len(raw)}",
            setting="public_bytes",
        )
    if suite is Suite.X25519:
        return X25519PublicKey.from_public_bytes(raw)
    return hpke.MLKEM768X25519PublicKey(
        MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC_BYTES]),
        X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC_BYTES:]),
    )


def suite_of(key: object) -> Suite | None:
    """Return the suite of a recipient key (public or private), or None for anything else."""
    if isinstance(key, X25519PublicKey | X25519PrivateKey):
        return Suite.X25519
    if isinstance(key, hpke.MLKEM768X25519PublicKey | hpke.MLKEM768X25519PrivateKey):
        return Suite.MLKEM768_X25519
    return None
