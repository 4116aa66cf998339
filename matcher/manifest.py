"""The manifest of a sealed batch: what the batch claims about itself, checked field by field.

A vendor builds one with `Manifest.new` (the clock and the keys are arguments); `seal`
(`matcher.envelope`) fills in the payload's size, SHA-256 and chunk size, and binds the
manifest's canonical JSON into the key unwrap, every chunk and the signature. Every field is
checked when a manifest is made or read back, so the bank never acts on a malformed claim; the
rules are listed in docs/envelope.md ("Manifest").
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from contracts.errors import EnvelopeError
from contracts.schemas import IDENTIFIER_TYPES, MatchMode

__all__ = ["BatchKeys", "Manifest"]

FORMAT_VERSION = 3  # what seal() writes
FORMAT_VERSIONS = (1, 2, 3)  # what open_sealed() reads
_OPTIONAL = ("counts", "suite", "oprf_public_key", "identifiers")  # left out when None
_SUITES = ("X25519", "MLKEM768-X25519")  # matcher.kem.Suite's values
MIN_CHUNK_SIZE = 64
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # bounds what an unverified manifest can make the bank allocate
_TEXT = re.compile(r"[\x20-\x7e]{1,128}")
_CREATED_AT = "%Y-%m-%dT%H:%M:%SZ"


def _text(value: object, name: str) -> str:
    # Printable ASCII without quote or backslash: the canonical JSON then has no escapes, so any
    # language's serialiser writes the same bytes (RFC 8785 agrees on this subset).
    if not isinstance(value, str) or not _TEXT.fullmatch(value) or '"' in value or "\\" in value:
        raise EnvelopeError(
            f"manifest field {name} must be 1-128 printable ASCII characters without quotes or "
            f"backslashes, got {value!r}"
        )
    return value


def _count(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise EnvelopeError(f"manifest field {name} must be a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchKeys:
    """Whose keys a batch is sealed with: the vendor, its signing key, the bank key, the epoch.

    `salt_epoch` names the salt epoch of a salted batch or the OPRF epoch of an OPRF batch.
    `vendor_id` is None on a bank keyring; `Manifest.new` refuses it.
    """

    vendor_id: str | None
    signing_kid: str
    recipient_kid: str
    salt_epoch: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a batch claims about itself; signed by the vendor, bound to the ciphertext.

    Build one with `Manifest.new`; `seal` fills in format_version, payload_bytes, payload_sha256
    and chunk_size.
    A manifest read back with `read_manifest` is unverified until `open_sealed` succeeds.
    """

    format_version: int
    batch_id: str
    vendor_id: str
    signing_kid: str
    recipient_kid: str
    salt_epoch: str
    created_at: str
    rows: int
    taxonomy_version: str
    contract: str
    mode: MatchMode = MatchMode.SALTED
    payload_bytes: int = 0
    payload_sha256: str = ""
    chunk_size: int = 0
    counts: Mapping[str, int] | None = field(default=None, hash=False)
    suite: str | None = None  # version 3: the HPKE suite the data key is wrapped with
    oprf_public_key: str | None = None  # version 3, OPRF mode: the epoch's VOPRF pkS (hex)
    # Version 3, a batch keyed by several identifiers: their types, comma-separated, in the
    # composite key's order (None: the mobile number alone).
    identifiers: str | None = None

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_sizes()
        self._check_version_3()

    def _check_version_3(self) -> None:
        """Check the fields version 3 adds: present only there, `suite` required there."""
        if self.format_version < 3:
            if any(v is not None for v in (self.suite, self.oprf_public_key, self.identifiers)):
                raise EnvelopeError(
                    f"suite, oprf_public_key and identifiers exist from format version 3; a "
                    f"version {self.format_version} manifest has none (X25519 is implied)"
                )
            return
        if self.suite not in _SUITES:
            raise EnvelopeError(
                f"manifest field suite must be one of {', '.join(_SUITES)}, got {self.suite!r}"
            )
        if self.oprf_public_key is not None:
            if not re.fullmatch(r"[0-9a-f]{64}", str(self.oprf_public_key)):
                raise EnvelopeError(
                    "oprf_public_key must be 64 lowercase hex characters (a ristretto255 element)"
                )
            if self.mode is not MatchMode.OPRF:
                raise EnvelopeError("oprf_public_key belongs to an OPRF-mode batch only")
        if self.identifiers is not None:
            kinds = str(self.identifiers).split(",")
            if kinds != [k for k in IDENTIFIER_TYPES if k in kinds] or "mobile" not in kinds:
                raise EnvelopeError(
                    "identifiers must be 'mobile' and other types of "
                    f"{', '.join(IDENTIFIER_TYPES)}, comma-separated in that order, got "
                    f"{self.identifiers!r}"
                )

    def _check_identity(self) -> None:
        """Check the version, the ids, the date and the mode; normalise the mode to MatchMode."""
        if type(self.format_version) is not int or self.format_version not in FORMAT_VERSIONS:
            known = ", ".join(map(str, FORMAT_VERSIONS))
            raise EnvelopeError(
                f"manifest format_version must be one of {known}, got {self.format_version!r}"
            )
        try:
            canonical_uuid = str(uuid.UUID(self.batch_id))
        except (TypeError, ValueError, AttributeError):
            canonical_uuid = None
        if canonical_uuid != self.batch_id:
            raise EnvelopeError(
                f"batch_id must be a UUID in canonical lowercase form, got {self.batch_id!r}; "
                "use str(uuid.uuid4())"
            )
        for name in ("vendor_id", "signing_kid", "recipient_kid", "salt_epoch"):
            _text(getattr(self, name), name)
        for name in ("taxonomy_version", "contract"):
            _text(getattr(self, name), name)
        try:
            if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(self.created_at)):
                raise ValueError
            datetime.strptime(self.created_at, _CREATED_AT)
        except ValueError:
            raise EnvelopeError(
                "created_at must be ISO-8601 UTC to the second, like 2026-11-03T09:30:00Z, got "
                f"{self.created_at!r}"
            ) from None
        try:
            object.__setattr__(self, "mode", MatchMode(self.mode))
        except ValueError:
            raise EnvelopeError(
                f"mode must be one of {', '.join(MatchMode)}, got {self.mode!r}"
            ) from None

    def _check_sizes(self) -> None:
        """Check the counts, the payload's size and digest and the chunk size; freeze counts."""
        _count(self.rows, "rows")
        _count(self.payload_bytes, "payload_bytes")
        if self.payload_sha256 and not re.fullmatch(r"[0-9a-f]{64}", str(self.payload_sha256)):
            raise EnvelopeError("payload_sha256 must be 64 lowercase hex characters")
        if _count(self.chunk_size, "chunk_size") and not (
            MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE
        ):
            raise EnvelopeError(
                f"chunk_size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes, got "
                f"{self.chunk_size}"
            )
        if self.counts is not None:
            if not isinstance(self.counts, Mapping):
                raise EnvelopeError(f"counts must be a dict of str to int, got {self.counts!r}")
            counts = {
                _text(k, "counts key"): _count(v, f"counts[{k!r}]") for k, v in self.counts.items()
            }
            object.__setattr__(self, "counts", MappingProxyType(counts))

    @classmethod
    def new(
        cls,
        *,
        batch_id: str,
        keys: BatchKeys,
        created_at: datetime,
        rows: int,
        taxonomy_version: str,
        contract: str,
        counts: Mapping[str, int] | None = None,
        mode: MatchMode = MatchMode.SALTED,
        oprf_public_key: bytes | None = None,
        identifiers: Sequence[str] | None = None,
    ) -> Manifest:
        """Return a manifest ready for `seal`; created_at is timezone-aware, kept to the second.

        `oprf_public_key` (an OPRF batch in the verifiable mode) is the epoch's pkS, 32 bytes;
        `identifiers`, the types of a batch keyed by several identifiers (any order); `seal`
        sets `suite` from the bank key it wraps the data key to.
        """
        if keys.vendor_id is None:
            raise EnvelopeError("vendor_id is missing: seal with a vendor keyring's vendor_id")
        if not isinstance(created_at, datetime) or created_at.utcoffset() is None:
            raise EnvelopeError(
                f"created_at must be a timezone-aware datetime (the clock is an argument), got "
                f"{created_at!r}"
            )
        return cls(
            format_version=FORMAT_VERSION,
            batch_id=batch_id,
            vendor_id=keys.vendor_id,
            signing_kid=keys.signing_kid,
            recipient_kid=keys.recipient_kid,
            salt_epoch=keys.salt_epoch,
            created_at=created_at.astimezone(UTC).strftime(_CREATED_AT),
            rows=rows,
            taxonomy_version=taxonomy_version,
            contract=contract,
            counts=counts,
            mode=mode,
            suite=_SUITES[0],
            oprf_public_key=None if oprf_public_key is None else oprf_public_key.hex(),
            identifiers=None
            if identifiers is None
            else ",".join(k for k in IDENTIFIER_TYPES if k in identifiers),
        )

    @property
    def identifier_types(self) -> tuple[str, ...]:
        """Return the identifier types the batch's rows are keyed by (the mobile number alone
        unless the manifest declares more)."""
        return tuple(self.identifiers.split(",")) if self.identifiers else ("mobile",)

    @property
    def is_sealed(self) -> bool:
        """Whether payload_bytes, payload_sha256 and chunk_size have been filled in by seal."""
        return bool(self.payload_sha256) and self.chunk_size > 0

    def to_bytes(self) -> bytes:
        """Return the canonical JSON: sorted keys, no spaces, UTF-8 (optional fields omitted when
        None)."""
        fields: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in _OPTIONAL or getattr(self, name) is not None
        }
        if self.counts is not None:
            fields["counts"] = dict(self.counts)
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Return the manifest in `data`: a sealed manifest in canonical form, or EnvelopeError."""
        try:
            fields = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"manifest is not JSON ({exc})") from None
        if not isinstance(fields, dict):
            raise EnvelopeError("manifest is not a JSON object")
        expected = set(cls.__dataclass_fields__)
        missing = expected - set(_OPTIONAL) - fields.keys()
        unknown = fields.keys() - expected
        if missing or unknown:
            raise EnvelopeError(
                "manifest fields differ from the format's: missing "
                f"{sorted(missing) or 'none'}, unknown {sorted(unknown) or 'none'}"
            )
        manifest = cls(**fields)
        if not manifest.is_sealed:
            raise EnvelopeError("manifest lacks payload_sha256 or chunk_size: it was never sealed")
        if manifest.to_bytes() != bytes(data):
            raise EnvelopeError("manifest is not in canonical form (sorted keys, no spaces)")
        return manifest
