"""Keyed hashing of normalised identifiers: the match key both parties compute.

    K_domain = HMAC-SHA256(salt_epoch, "bankfusion/match-key/v1/" || domain)    (RFC 2104)
    key      = HMAC-SHA256(hex(K_domain), normalised_id)

The domain ("mobile", "id_number", "device_id") separates identifier kinds through a derived
subkey, as a KDF in counter-less feedback form (NIST SP 800-108) would, rather than by prefixing
every message: the separation is the same, and it spares a per-row string concatenation. The
subkey is handed to the native HMAC as its 64 hex characters (the plugin's API takes a UTF-8
key); that is an encoding, not a weakening: the HMAC key still holds 256 bits.

Hot path: polars-hash's Rust `hmac_sha256` over slices on several threads, then the hex digests
decoded to 32 raw bytes with numpy arithmetic on the Arrow buffer (polars' own
`str.decode("hex")` is slower); a Python `hmac.digest` loop is several times slower still (the
README's benchmark table has the figures).

`hmac_digest` is the one-message form, for keys derived from a key (a domain's subkey, the OPRF
jobs' block seeds) and for the MAC the bank keeps of an OPRF request's inputs: every keyed hash
of the project is computed in this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow as pa

from contracts.errors import ConfigError, IdentifierError
from contracts.schemas import IDENTIFIER_TYPES

__all__ = [
    "KEY_BYTES",
    "SALT_BYTES",
    "SaltEpoch",
    "compose_keys",
    "domain_key",
    "hmac_digest",
    "hmac_sha256",
    "keyed_hash",
]

KEY_BYTES = 32
SALT_BYTES = 32
DOMAINS = IDENTIFIER_TYPES
_SLICE_MIN_ROWS = 250_000  # below this one slice is as fast as several
_MAX_SLICES = 8
_DOMAIN_LABEL = "bankfusion/match-key/v1/"


@dataclass(frozen=True, slots=True, repr=False)
class SaltEpoch:
    """A salt and the id both parties use to name it. Its repr never shows the salt."""

    epoch_id: str
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.salt) != SALT_BYTES:
            raise ConfigError(
                f"salt of epoch {self.epoch_id!r} must be {SALT_BYTES} bytes, got {len(self.salt)};"
                " create epochs with SaltEpoch.generate() or `fusion keys rotate`",
                setting="salt",
            )
        if not self.epoch_id or not self.epoch_id.isprintable():
            raise ConfigError("a salt epoch needs a printable, non-empty id", setting="epoch_id")

    @classmethod
    def generate(cls, epoch_id: str) -> SaltEpoch:
        """Return a new epoch with 32 bytes from the OS's CSPRNG."""
        return cls(epoch_id=epoch_id, salt=secrets.token_bytes(SALT_BYTES))

    def __repr__(self) -> str:
        return f"SaltEpoch(epoch_id={self.epoch_id!r}, salt=<{SALT_BYTES} bytes hidden>)"


def _unhex32(digests: pl.Series) -> pa.Array:
    """Return the 32-byte values of 64-char hex strings (no nulls), decoded on the Arrow buffer."""
    arr = digests.to_arrow()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8)
    chars = data[offsets[arr.offset] : offsets[arr.offset + len(arr)]]
    if chars.size != 64 * len(arr):
        raise IdentifierError("native HMAC returned digests of unexpected length")
    # ASCII hex digit -> nibble without a lookup: '0'-'9' are 0x3_, 'a'-'f' / 'A'-'F' are 0x_1-6
    # with bit 6 set, so (c & 15) + 9 * (c >> 6) gives 0-15 for both.
    nibbles = (chars & 15) + 9 * (chars >> 6)
    raw = (nibbles[0::2] << 4) | nibbles[1::2]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(KEY_BYTES), len(arr), [None, pa.py_buffer(raw)]
    )


def _hmac_slice(messages: pl.Series, key: str) -> pa.Array:
    digests = pl.DataFrame({"m": messages}).select(plh.col("m").chash.hmac_sha256(key=key))
    return _unhex32(digests.to_series())


def hmac_sha256(messages: pl.Series, key: str) -> pl.Series:
    """Return HMAC-SHA256(key, message) as 32 bytes per row, computed natively on every core.

    Args:
        messages: String or Binary series; nulls stay null.
        key: the HMAC key as text (its UTF-8 bytes are the key), as the native plugin takes it.
    """
    if messages.dtype not in (pl.String, pl.Binary):
        raise IdentifierError(
            f"column {messages.name!r} must be String or Binary, got {messages.dtype}",
            column=messages.name,
        )
    present = messages.drop_nulls()
    n = len(present)
    # Slices go to a thread pool: the plugin and numpy release the GIL, so the hashing of one
    # slice overlaps the decoding of another.
    n_slices = max(1, min(_MAX_SLICES, n // _SLICE_MIN_ROWS))
    step = max(1, -(-n // n_slices))
    slices = [present.slice(i * step, step) for i in range(n_slices)]
    if n_slices == 1:
        chunks = [_hmac_slice(slices[0], key)]
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            chunks = list(pool.map(lambda part: _hmac_slice(part, key), slices))
    hashed = pl.Series(messages.name, pa.chunked_array(chunks, type=pa.binary(KEY_BYTES)))
    hashed = hashed.cast(pl.Binary)
    if n == len(messages):
        return hashed
    out = pl.Series(messages.name, [None] * len(messages), dtype=pl.Binary)
    return out.scatter(messages.is_not_null().arg_true(), hashed)


def hmac_digest(key: bytes, message: bytes) -> bytes:
    """Return HMAC-SHA256(key, message), 32 bytes (RFC 2104): one message, in this process."""
    return hmac.new(key, message, hashlib.sha256).digest()


def domain_key(epoch: SaltEpoch, domain: str) -> str:
    """Return the hex subkey of `domain` under the epoch's salt (the native HMAC's key)."""
    if domain not in DOMAINS:
        raise ConfigError(
            f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}", setting="domain"
        )
    return hmac_digest(epoch.salt, f"{_DOMAIN_LABEL}{domain}".encode()).hex()


def keyed_hash(values: pl.Series, epoch: SaltEpoch, *, domain: str) -> pl.Series:
    """Return the 32-byte keyed hash of each normalised identifier (null stays null).

    Args:
        values: normalised identifiers (String), as `matcher.identity` returns them.
        epoch: the salt epoch both parties agreed on.
        domain: the identifier kind, "mobile", "id_number" or "device_id".

    Returns:
        A Binary series of the same length and name; every non-null value is 32 bytes.
    """
    key = domain_key(epoch, domain)
    if values.dtype != pl.String:
        raise IdentifierError(
            f"column {values.name!r} must hold normalised identifiers as String, got "
            f"{values.dtype}; run matcher.identity.normalize_* first",
            column=values.name,
        )
    return hmac_sha256(values, key)


def compose_keys(
    parts: Mapping[str, pl.Series], width: int, *, random_fill: bool = False
) -> pl.Series:
    """Return each row's composite key: one `width`-byte key per identifier type, concatenated.

    The order is `contracts.schemas.IDENTIFIER_TYPES`; a type missing from `parts`, or null in
    a row, is filled with zero bytes (the bank's own keys: a zero block never matches, since
    the vendor fills its gaps at random) or, with `random_fill`, random bytes (the vendor's: a
    row then does not show which identifiers its user lacks). Vectorised on the Arrow buffers.

    Args:
        parts: identifier type -> Binary keys of `width` bytes (or null), all of one length.
        width: bytes per key (32 for a keyed hash, 16 for an OPRF label).
        random_fill: fill gaps from the OS's CSPRNG instead of zeros.
    """
    unknown = [t for t in parts if t not in IDENTIFIER_TYPES]
    lengths = {len(s) for s in parts.values()}
    if unknown or len(lengths) > 1:
        raise IdentifierError(
            f"composite keys take identifier types {', '.join(IDENTIFIER_TYPES)} of one length; "
            f"got {', '.join(unknown) or 'lengths ' + str(sorted(lengths))}"
        )
    n = lengths.pop() if lengths else 0
    slots = len(IDENTIFIER_TYPES)
    if random_fill:
        out = np.frombuffer(secrets.token_bytes(n * slots * width), np.uint8).reshape(n, -1).copy()
    else:
        out = np.zeros((n, slots * width), dtype=np.uint8)
    for slot, kind in enumerate(IDENTIFIER_TYPES):
        if kind not in parts:
            continue
        keys = parts[kind].to_arrow()
        present = keys.is_valid().to_numpy(zero_copy_only=False)
        if not present.any():
            continue
        fixed = keys.drop_null().cast(pa.binary(width))
        data = np.frombuffer(fixed.buffers()[1], np.uint8)
        start = fixed.offset * width
        out[present, slot * width : (slot + 1) * width] = data[
            start : start + len(fixed) * width
        ].reshape(-1, width)
    array = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(slots * width), n, [None, pa.py_buffer(out.tobytes())]
    )
    return pl.Series("key", array).cast(pl.Binary)
