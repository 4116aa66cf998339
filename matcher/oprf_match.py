"""The OPRF match mode: vendor rows sealed under F_k(phone), opened by the bank for its customers.

The vendor holds an OPRF key per epoch (`matcher.oprf`). For each of its users it computes
F_k(id) directly and writes one row, `seal_rows`:

    okm      = HKDF-SHA256(F_k(id), info="bankfusion/oprf/row/v1"), 48 bytes     (RFC 5869)
    label    = okm[0:16]
    data_key = okm[16:48]
    sealed   = nonce (12 random bytes) || AES-256-GCM(data_key, nonce, payload, aad=label)

The bank blinds its customers' ids (`request`), the vendor evaluates them under an
`EvaluationBudget` (`EvaluationBudget.answer`), and the bank unblinds the answer into the same
labels and data keys (`unblind_labels`) and opens the rows whose label it holds (`open_matched`).
A row of any other vendor user stays ciphertext: its label and its key both need F_k of an id
the bank never had evaluated, and the budget (declared customers x 1.1 + 1000 per epoch) stops
the bank from evaluating the phone space to get them. The label in the associated data ties a
payload to its row, so a payload moved under another label does not open either.

Label and key are disjoint parts of one HKDF output (as TLS 1.2 cuts its key block): HKDF's
output is pseudorandom, so the label reveals nothing about the data key. One expand instead of
two halves the per-row KDF work, which the vendor pays for every user. HKDF's salt is left
empty (RFC 5869 section 3.1): F_k(id) is already a uniform SHA-512 output. 16-byte labels
(`contracts.suites.LABEL_BYTES`, which the batch contract checks) collide among 10^9 users with
probability below 2^-68. Each data key encrypts one row per packing; the nonces are
random, so packing an epoch again with new tags is safe.

The payload is one user's app and tag lists (contracts.schemas.VENDOR_BATCH) in a fixed
little-endian layout, `encode_lists` / `decode_lists`:

    version u8 (=1) | n_apps u16 | n_tags u16 |
    app_ids i32[n_apps] | app_days i16[n_apps] | app_sessions i32[n_apps] |
    tag_ids i32[n_tags] | tag_weights f32[n_tags]

5 + 10 n_apps + 8 n_tags bytes: the contract keeps the app lists and the tag lists aligned and
free of nulls, so two counts describe a row. An Arrow IPC message per row would add several
hundred bytes of schema and framing to a payload of a few hundred. Both directions are numpy
gathers over the Arrow buffers; only the final split into one `bytes` per row loops.

Several identifiers (layout v2 of a batch, `seal_rows_by_identifier`): a user is evaluated once
per identifier it has, each on its own domain-separated input (`oprf_input`: the bare 11 digits
for a mobile number, as in v1, so v1 and v2 rows of one user share a phone label; else
"bankfusion/oprf/v1/<type>:" || the normalised value, which no mobile number can equal). Each
output gives that identifier's label and a key-encryption key as above. The row's lists are
sealed under a random 32-byte row key, which is wrapped under each identifier's
key-encryption key:

    label    = label_mobile || label_id_number || label_device_id           (3 x 16 bytes)
    wrap_t   = nonce_t (12) || AES-256-GCM(kek_t, nonce_t, row_key, aad=label_t)   (60 bytes)
    sealed   = wrap_mobile || wrap_id_number || wrap_device_id || nonce || AES-256-GCM(row_key,
               nonce, payload, aad=label)

An identifier the user lacks gets 16 random bytes of label and 60 of wrap, so a row shows no
one which identifiers its user has. The bank that evaluated any one identifier of the user
unwraps the row key and opens the row (`open_rows_by_identifier`); nothing else.

Blinds from one seed: the bank keeps a request's 32-byte seed, never its blinds. The rows are cut
into fixed blocks of `BLIND_BLOCK_ROWS`; block b's blinds are drawn from its own seed,
`block_seed(seed, b)` (an HMAC of the block number under the request's seed), so a row's blind
depends only on the seed and the row's position. `replay_blinds` rebuilds a whole request's
state; `block_blinds` the blinds of any run of whole blocks, which lets the bucketed jobs of
`fusion.jobs.oprf` blind and finalise a request chunk by chunk on a cluster, element for element
as this process does.

Hot path: the OPRF (vendor: evaluate; bank: blind + finalize) is the dearest step per item and
sets the pace. HKDF (one cryptography HKDF object a row) and AES-GCM are per-key crypto, so they
loop in Python; they run on the OPRF's own workers, each part right after its outputs
(`matcher.oprf.Then`), so a batch's whole per-row work spreads over the cores and only labels,
keys and sealed rows come back. The README's benchmark table has the rates.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contracts.errors import ConfigError, EvaluationCapError, OprfError
from contracts.schemas import IDENTIFIER_TYPES, VENDOR_BATCH
from contracts.suites import LABEL_BYTES, WRAPPED_KEY_BYTES
from matcher.batch_parts import PackedRows
from matcher.keyed_hash import hmac_digest
from matcher.oprf import (
    OUTPUT_BYTES,
    OprfMode,
    OprfServerKey,
    Then,
    blind,
    blind_evaluate,
    draw_blinds,
    evaluate_then,
    finalize_then,
)

__all__ = [
    "BLIND_BLOCK_ROWS",
    "DATA_KEY_BYTES",
    "NONCE_BYTES",
    "PAYLOAD_COLUMNS",
    "SEED_BYTES",
    "BankRequest",
    "EvaluationBudget",
    "block_blinds",
    "block_seed",
    "check_seed",
    "decode_lists",
    "derive_row_keys",
    "encode_lists",
    "open_matched",
    "open_rows",
    "open_rows_by_identifier",
    "oprf_input",
    "replay_blinds",
    "request",
    "seal_rows",
    "seal_rows_by_identifier",
    "seeded_rng",
    "unblind_labels",
]

DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # AES-GCM's 96-bit nonce (NIST SP 800-38D 8.2.2, random construction)
TAG_BYTES = 16
INFO_ROW = b"bankfusion/oprf/row/v1"
PAYLOAD_COLUMNS = ("app_ids", "app_days", "app_sessions", "tag_ids", "tag_weights")
SEED_BYTES = 32  # a request's blind seed
BLIND_BLOCK_ROWS = 1_024  # rows whose blinds one block seed draws
_BLOCK_SEED_LABEL = b"bankfusion/oprf/block-seed/v1"
INPUT_PREFIX = "bankfusion/oprf/v1/"  # OPRF input of an identifier other than the mobile number

_LAYOUT_VERSION = 1
_HEADER = np.dtype([("version", "u1"), ("n_apps", "<u2"), ("n_tags", "<u2")])  # 5 bytes, packed
_WIRE: dict[
    str, np.dtype
] = {  # each list's element type on the wire, in payload order; the first three use n_apps
    "app_ids": np.dtype("<i4"),
    "app_days": np.dtype("<i2"),
    "app_sessions": np.dtype("<i4"),
    "tag_ids": np.dtype("<i4"),
    "tag_weights": np.dtype("<f4"),
}
_MAX_LIST = 0xFFFF

RandomBytes = Callable[[int], bytes]
_REFUSED = "sealed row {index} could not be opened with the key its label was derived with"


def derive_row_keys(outputs: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Return (16-byte labels, 32-byte AES keys) derived from OPRF outputs by HKDF-SHA256.

    Both sides call this: the vendor on `evaluate`'s outputs, the bank on `finalize`'s. One HKDF
    of 48 bytes per output is per-key crypto, so it loops (it holds the GIL, so
    threads would not help).

    Args:
        outputs: 64-byte OPRF outputs F_k(id).
    """
    for i, out in enumerate(outputs):
        if not isinstance(out, bytes) or len(out) != OUTPUT_BYTES:
            raise OprfError(
                f"OPRF output {i} must be {OUTPUT_BYTES} bytes as finalize/evaluate return it",
                item="output",
                index=i,
            )
    return _split_keys([_row_keys(list(outputs), (), None)])


_OKM_BYTES = LABEL_BYTES + DATA_KEY_BYTES  # one HKDF output: a row's label, then its key


def _row_keys(outputs: list[bytes], rows: tuple[Sequence[Any], ...], args: object) -> bytes:
    """Return the HKDF output of each of a part's outputs, end to end (a `Then` function)."""
    sha256 = hashes.SHA256()
    return b"".join(HKDF(sha256, _OKM_BYTES, None, INFO_ROW).derive(out) for out in outputs)


_ROW_KEYS = Then(_row_keys)


def _split_keys(parts: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Return (labels, data keys) cut from the parts' `_row_keys`, in order."""
    labels: list[bytes] = []
    data_keys: list[bytes] = []
    for okms in parts:
        starts = range(0, len(okms), _OKM_BYTES)
        labels += [okms[i : i + LABEL_BYTES] for i in starts]
        data_keys += [okms[i + LABEL_BYTES : i + _OKM_BYTES] for i in starts]
    return labels, data_keys


def _seal_part(
    outputs: list[bytes], rows: tuple[Sequence[Any], ...], args: object
) -> tuple[bytes, PackedRows]:
    """Return (the part's labels end to end, its sealed rows packed): a `Then` function.

    A row is sealed as nonce || AES-GCM(payload), so it is 28 bytes longer than its payload.
    """
    payloads, nonces = rows
    assert isinstance(payloads, PackedRows)
    sha256 = hashes.SHA256()
    labels: list[bytes] = []
    sealed: list[bytes] = []
    for out, payload, nonce in zip(outputs, payloads, nonces, strict=True):
        okm = HKDF(sha256, _OKM_BYTES, None, INFO_ROW).derive(out)
        label = okm[:LABEL_BYTES]
        labels.append(label)
        sealed += (nonce, AESGCM(okm[LABEL_BYTES:]).encrypt(nonce, payload, label))
    grown = payloads.ends + (NONCE_BYTES + TAG_BYTES) * np.arange(1, len(payloads) + 1)
    return b"".join(labels), PackedRows(b"".join(sealed), grown)


def encode_lists(batch: pl.DataFrame) -> list[bytes]:
    """Return one payload per row of `batch`'s app/tag lists, in the module's fixed layout v1.

    Args:
        batch: the VENDOR_BATCH list columns (other columns are ignored), app lists aligned,
            tag lists aligned, no nulls, at most 65535 entries per list.
    """
    missing = [c for c in PAYLOAD_COLUMNS if c not in batch.columns]
    if missing:
        raise ConfigError(
            f"the batch lacks {', '.join(missing)}; see contracts/schemas.py VENDOR_BATCH",
            setting="batch",
        )
    frame = batch.select(pl.col(c).cast(VENDOR_BATCH.columns[c]) for c in PAYLOAD_COLUMNS).rechunk()
    for c in PAYLOAD_COLUMNS:
        column = frame[c]
        if column.null_count() or column.list.eval(pl.element().is_null()).list.any().any():
            raise ConfigError(f"{c} holds a null list or element; payloads carry none", setting=c)
    n = frame.height
    n_apps = frame["app_ids"].list.len().to_numpy().astype(np.int64)
    n_tags = frame["tag_ids"].list.len().to_numpy().astype(np.int64)
    lengths = {c: (n_apps if c.startswith("app_") else n_tags) for c in PAYLOAD_COLUMNS}
    for c in PAYLOAD_COLUMNS:
        if not np.array_equal(frame[c].list.len().to_numpy(), lengths[c]):
            raise ConfigError(
                f"{c} is not aligned with {'app_ids' if c.startswith('app_') else 'tag_ids'} "
                "row by row; the vendor batch contract requires it",
                setting=c,
            )
    if n and max(int(n_apps.max()), int(n_tags.max())) > _MAX_LIST:
        raise ConfigError(f"a payload list holds more than {_MAX_LIST} entries", setting="batch")

    header = np.zeros(n, dtype=_HEADER)
    header["version"], header["n_apps"], header["n_tags"] = _LAYOUT_VERSION, n_apps, n_tags
    # One source buffer (headers, then each column's flat values) and, per row, six byte ranges
    # into it in payload order: gathering the ranges lays every payload out back to back.
    sources = [header.view(np.uint8)]
    starts, sizes = [np.arange(n, dtype=np.int64) * _HEADER.itemsize], [np.full(n, 5, np.int64)]
    base = _HEADER.itemsize * n
    for c, wire in _WIRE.items():
        flat = frame[c].to_arrow().flatten().to_numpy(zero_copy_only=False).astype(wire)
        sources.append(flat.view(np.uint8))
        starts.append(base + wire.itemsize * _exclusive_cumsum(lengths[c]))
        sizes.append(wire.itemsize * lengths[c])
        base += flat.nbytes
    data = _gather_ranges(
        np.concatenate(sources), np.stack(starts, axis=1).ravel(), np.stack(sizes, axis=1).ravel()
    ).tobytes()
    ends = np.cumsum(np.stack(sizes, axis=1).sum(axis=1)).tolist()
    return [data[a:b] for a, b in zip([0, *ends], ends, strict=False)]


def decode_lists(payloads: Sequence[bytes]) -> pl.DataFrame:
    """Return the VENDOR_BATCH list columns, one row per payload made by `encode_lists`."""
    sizes = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
    if np.any(sizes < _HEADER.itemsize):
        raise OprfError(_layout_error(int(np.argmax(sizes < _HEADER.itemsize))), item="payload")
    buf = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    row_starts = _exclusive_cumsum(sizes)
    header = _gather_ranges(buf, row_starts, np.full(len(sizes), 5)).view(_HEADER)
    n_apps = header["n_apps"].astype(np.int64)
    n_tags = header["n_tags"].astype(np.int64)
    bad = (header["version"] != _LAYOUT_VERSION) | (sizes != 5 + 10 * n_apps + 8 * n_tags)
    if bad.any():
        raise OprfError(
            _layout_error(int(np.argmax(bad))), item="payload", index=int(np.argmax(bad))
        )
    columns = {}
    at = row_starts + _HEADER.itemsize
    for c, wire in _WIRE.items():
        lengths = n_apps if c.startswith("app_") else n_tags
        flat = _gather_ranges(buf, at, wire.itemsize * lengths).view(wire)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        columns[c] = _list_series(c, flat, offsets)
        at = at + wire.itemsize * lengths
    return pl.DataFrame(columns).select(
        pl.col(c).cast(VENDOR_BATCH.columns[c]) for c in PAYLOAD_COLUMNS
    )


def seal_rows(
    key: OprfServerKey,
    ids: Sequence[bytes],
    payloads: Sequence[bytes],
    *,
    rng: RandomBytes | None = None,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """Return (label, nonce || AES-GCM ciphertext) per user: the vendor's OPRF-mode batch rows.

    Args:
        key: the vendor's OPRF key of the epoch.
        ids: unique normalised identifiers as bytes (11 ASCII digits for a mobile number).
        payloads: one per id, e.g. from `encode_lists`.
        rng: returns n random bytes for the nonces; `secrets.token_bytes` by default.
        mode: the RFC 9497 mode the bank will blind in (VOPRF: the batch publishes pkS).
        workers: threads for the OPRF evaluation; every core by default.
    """
    if len(ids) != len(payloads):
        raise OprfError(
            f"ids and payloads must be aligned, got {len(ids)} ids and {len(payloads)} payloads",
            item="batch",
        )
    if len(set(ids)) != len(ids):  # two rows would share a label: the bank could open one
        seen: dict[bytes, int] = {}
        for i, x in enumerate(ids):
            if seen.setdefault(x, i) != i:
                raise OprfError(
                    f"ids {seen[x]} and {i} are equal; deduplicate users before sealing",
                    item="input",
                    index=i,
                )
    draw = secrets.token_bytes if rng is None else rng
    nonces = draw(NONCE_BYTES * len(ids))
    if not isinstance(nonces, bytes) or len(nonces) != NONCE_BYTES * len(ids):
        raise OprfError("rng must return exactly the bytes asked for", item="rng")
    then = Then(_seal_part, (PackedRows.of(payloads), PackedRows.fixed(nonces, NONCE_BYTES)))
    rows: list[tuple[bytes, bytes]] = []
    for labels, sealed in evaluate_then(key, ids, then, mode=mode, workers=workers):
        rows += zip(PackedRows.fixed(labels, LABEL_BYTES), sealed, strict=True)
    return rows


def oprf_input(kind: str, value: str) -> bytes:
    """Return the OPRF input of a normalised identifier of type `kind` (domain-separated).

    A mobile number is its 11 ASCII digits (as layout v1 evaluates it); any other type is
    "bankfusion/oprf/v1/<kind>:" || value, which starts with a letter, so no two types' inputs
    can be equal.
    """
    if kind not in IDENTIFIER_TYPES:
        raise ConfigError(
            f"identifier type must be one of {', '.join(IDENTIFIER_TYPES)}, got {kind!r}",
            setting="identifiers",
        )
    return value.encode("ascii") if kind == "mobile" else f"{INPUT_PREFIX}{kind}:{value}".encode()


def seal_rows_by_identifier(
    key: OprfServerKey,
    values: Mapping[str, pl.Series],
    payloads: Sequence[bytes],
    *,
    rng: RandomBytes | None = None,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """Return (3 x 16-byte label, sealed row) per user: layout v2, openable by any identifier.

    Args:
        key: the vendor's OPRF key of the epoch.
        values: identifier type -> normalised values (String, null where the user has none),
            each unique among its non-null values, aligned with `payloads`.
        payloads: one per user, e.g. from `encode_lists`.
        rng: returns n random bytes (row keys, nonces, fillers); `secrets.token_bytes` default.
        mode: the RFC 9497 mode the bank will blind in.
        workers: threads for the OPRF evaluation; every core by default.
    """
    n, slots = len(payloads), len(IDENTIFIER_TYPES)
    if any(len(v) != n for v in values.values()) or any(k not in IDENTIFIER_TYPES for k in values):
        raise OprfError(
            f"values must map identifier types of {', '.join(IDENTIFIER_TYPES)} to {n} values, "
            "one per payload",
            item="batch",
        )
    rows: list[int] = []
    inputs: list[bytes] = []
    kinds: list[int] = []
    for kind in values:
        present = values[kind].is_not_null()
        if values[kind].filter(present).is_duplicated().any():
            raise OprfError(f"two users share a {kind}; leave it out of both", item="input")
        rows.extend(present.arg_true().to_list())
        inputs.extend(oprf_input(kind, v) for v in values[kind].filter(present))
        kinds.extend([IDENTIFIER_TYPES.index(kind)] * int(present.sum()))
    labels, keks = _split_keys(evaluate_then(key, inputs, _ROW_KEYS, mode=mode, workers=workers))
    draw = secrets.token_bytes if rng is None else rng
    # Per row: random fillers for every label and wrap (the user's own overwrite theirs), then
    # the row key, the body's nonce and the wraps' nonce.
    tail = slots * (LABEL_BYTES + WRAPPED_KEY_BYTES)
    per_row = tail + DATA_KEY_BYTES + 2 * NONCE_BYTES
    fresh = draw(per_row * n)
    if not isinstance(fresh, bytes) or len(fresh) != per_row * n:
        raise OprfError("rng must return exactly the bytes asked for", item="rng")
    drawn = [fresh[i * per_row : (i + 1) * per_row] for i in range(n)]
    label_of = [bytearray(row[: slots * LABEL_BYTES]) for row in drawn]
    wraps = [bytearray(row[slots * LABEL_BYTES : tail]) for row in drawn]
    row_keys = [row[tail : tail + DATA_KEY_BYTES] for row in drawn]
    nonces = [row[tail + DATA_KEY_BYTES :] for row in drawn]
    for row, slot, label in zip(rows, kinds, labels, strict=True):
        label_of[row][slot * LABEL_BYTES : (slot + 1) * LABEL_BYTES] = label
    for row, slot, label, kek in zip(rows, kinds, labels, keks, strict=True):
        nonce = nonces[row][NONCE_BYTES:]  # one per wrap: distinct keys, so reuse across is safe
        wrapped = nonce + AESGCM(kek).encrypt(nonce, row_keys[row], label)
        wraps[row][slot * WRAPPED_KEY_BYTES : (slot + 1) * WRAPPED_KEY_BYTES] = wrapped
    out = []
    for i, payload in enumerate(payloads):
        composite, nonce = bytes(label_of[i]), nonces[i][:NONCE_BYTES]
        body = AESGCM(row_keys[i]).encrypt(nonce, payload, composite)
        out.append((composite, bytes(wraps[i]) + nonce + body))
    return out


def open_rows_by_identifier(
    sealed: Sequence[bytes],
    labels: Sequence[bytes],
    kinds: Sequence[str],
    keys: Sequence[bytes],
) -> list[bytes]:
    """Return the payload of each layout-v2 row, opened through one identifier's key (aligned).

    Args:
        sealed: the rows' sealed bytes (wrapped row keys first).
        labels: the rows' 3 x 16-byte labels.
        kinds: the identifier type the bank matched each row by.
        keys: the key-encryption key derived with that identifier's label (`unblind_labels`).

    Every failure is the same `OprfError`, naming the position only, as for `open_rows`.
    """
    if not len(sealed) == len(labels) == len(kinds) == len(keys):
        raise OprfError("sealed rows, labels, types and keys must be aligned", item="batch")
    slots = len(IDENTIFIER_TYPES)
    opened = []
    for i, (row, label, kind, kek) in enumerate(zip(sealed, labels, kinds, keys, strict=True)):
        slot = IDENTIFIER_TYPES.index(kind)
        wrap = row[slot * WRAPPED_KEY_BYTES : (slot + 1) * WRAPPED_KEY_BYTES]
        body = row[slots * WRAPPED_KEY_BYTES :]
        own = label[slot * LABEL_BYTES : (slot + 1) * LABEL_BYTES]
        try:
            row_key = AESGCM(kek).decrypt(wrap[:NONCE_BYTES], wrap[NONCE_BYTES:], own)
            opened.append(AESGCM(row_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], label))
        except (InvalidTag, ValueError, TypeError):
            raise OprfError(_REFUSED.format(index=i), item="sealed row", index=i) from None
    return opened


@dataclass(slots=True)
class EvaluationBudget:
    """The vendor's count of OPRF evaluations in one epoch, refused beyond the bank's allowance.

    limit = floor(declared_customers x ratio) + slack. The margin lets the bank's customer file
    grow during the epoch and retry a failed transfer; past it, every extra evaluation could
    only probe phones the bank does not hold. A refused request counts nothing, and a request
    is answered whole or not at all. `to_dict` / `from_dict` keep the count on disk between runs;
    the caller holds one budget per epoch and one writer at a time.
    """

    epoch_id: str
    declared_customers: int
    ratio: float = 1.1
    slack: int = 1_000
    used: int = 0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.epoch_id, str)
            or not self.epoch_id.isprintable()
            or not self.epoch_id
        ):
            raise ConfigError("a budget needs a printable, non-empty epoch id", setting="epoch_id")
        for name in ("declared_customers", "slack", "used"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer", setting=name)
        ratio = self.ratio
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 1 <= ratio <= 10:
            raise ConfigError("ratio must be a number between 1 and 10", setting="ratio")

    @property
    def limit(self) -> int:
        """Return the evaluations the epoch allows in all."""
        return math.floor(self.declared_customers * self.ratio) + self.slack

    @property
    def remaining(self) -> int:
        """Return the evaluations still allowed in the epoch."""
        return max(0, self.limit - self.used)

    def answer(
        self, key: OprfServerKey, blinded: Sequence[bytes], *, workers: int | None = None
    ) -> list[bytes]:
        """Return the evaluated elements for a bank's blinded ones, and count them.

        Raises:
            EvaluationCapError: the request would take the epoch past `limit`; nothing counted.
            OprfError: an element is invalid (`blind_evaluate`); nothing counted.
        """
        if len(blinded) > self.remaining:
            raise EvaluationCapError(
                epoch=self.epoch_id, limit=self.limit, used=self.used, requested=len(blinded)
            )
        evaluated = blind_evaluate(key, blinded, workers=workers)
        self.used += len(evaluated)
        return evaluated

    def to_dict(self) -> dict[str, object]:
        """Return the budget as JSON-ready values."""
        return {
            "epoch_id": self.epoch_id,
            "declared_customers": self.declared_customers,
            "ratio": self.ratio,
            "slack": self.slack,
            "used": self.used,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EvaluationBudget:
        """Return the budget `to_dict` gave; fields are checked as by the constructor."""
        fields = ("epoch_id", "declared_customers", "ratio", "slack", "used")
        if set(data) != set(fields):
            raise ConfigError(
                f"a stored budget holds exactly the fields {', '.join(fields)}; got "
                f"{', '.join(sorted(data))}",
                setting="budget",
            )
        return cls(**data)  # type: ignore[arg-type]  # __post_init__ checks every type


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class BankRequest:
    """The bank's secret half of a request: its ids and their blinds. Never sent; repr hides it."""

    inputs: tuple[bytes, ...]
    blinds: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.inputs)

    def __repr__(self) -> str:
        return f"BankRequest(<{len(self.inputs)} ids and blinds hidden>)"


def request(
    ids: Sequence[bytes],
    *,
    rng: RandomBytes | None = None,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> tuple[BankRequest, list[bytes]]:
    """Return (the state to keep, the blinded elements to send) for the bank's customer ids.

    Args:
        ids: normalised identifiers as bytes, as the vendor sealed them.
        rng: returns n random bytes for the blinds; the OS's CSPRNG by default.
        mode: the mode the vendor sealed its rows in.
        workers: threads to use; every core by default.
    """
    blinds, blinded = blind(ids, rng=rng, mode=mode, workers=workers)
    return BankRequest(tuple(ids), tuple(blinds)), blinded


def unblind_labels(
    state: BankRequest, evaluated: Sequence[bytes], *, workers: int | None = None
) -> tuple[list[bytes], list[bytes]]:
    """Return (labels, data keys) for the request's ids, in order, from the vendor's answer."""
    parts = finalize_then(state.inputs, state.blinds, evaluated, _ROW_KEYS, workers=workers)
    return _split_keys(parts)


def seeded_rng(seed: bytes) -> RandomBytes:
    """Return an rng for `request` that replays the same bytes for the same 32-byte seed.

    The bank blinds with it so that it keeps one seed (in its encrypted store) instead of a blind
    per customer between sending a request and reading the answer. Call k returns
    SHAKE-256("bankfusion/oprf/blinds/v1" || seed || k as 8 bytes) cut to the length asked:
    with a uniformly random seed these are uniformly random bytes (SHAKE-256 as an XOF, FIPS 202),
    and `blind` draws its scalars in a fixed order, so the same ids give the same blinds.
    """
    check_seed(seed)
    calls = 0

    def draw(n: int) -> bytes:
        nonlocal calls
        xof = hashlib.shake_256(b"bankfusion/oprf/blinds/v1" + seed + calls.to_bytes(8, "big"))
        calls += 1
        return xof.digest(n)

    return draw


def check_seed(seed: bytes) -> None:
    """Raise `OprfError` unless `seed` is a request's 32 random bytes."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise OprfError(f"a blind seed must be {SEED_BYTES} random bytes", item="rng")


def block_seed(seed: bytes, block: int) -> bytes:
    """Return the 32-byte blind seed of rows 1024 b to 1024 b + 1023 (block b) of a request.

    HMAC-SHA256(seed, "bankfusion/oprf/block-seed/v1" || b as 8 bytes, big-endian): HMAC keyed
    with a uniformly random seed is a PRF (RFC 2104; M. Bellare, "New proofs for NMAC and HMAC:
    security without collision resistance", CRYPTO 2006), so block seeds are independent
    uniform values. Block b's blinds are `draw_blinds(rows of b, rng=seeded_rng(block_seed(seed,
    b)))`. Blocks are fixed whatever the task size, so a row's blind depends only on the seed
    and the row's position: blinding and finalising may cut the rows into different chunks.

    Args:
        seed: the request's 32 random bytes (the bank keeps it, never the blinds).
        block: the block's number, from 0.
    """
    check_seed(seed)
    if block < 0:
        raise ConfigError(f"a block number is >= 0, got {block}", setting="block")
    return hmac_digest(seed, _BLOCK_SEED_LABEL + block.to_bytes(8, "big"))


def block_blinds(seed: bytes, start: int, count: int) -> list[bytes]:
    """Return the blinds of rows start to start + count - 1 of a request; start opens a block.

    Every block but the request's last is whole, so each block is drawn with its own row count
    whichever chunk asks for it; `count` must therefore reach the request's end or a block's.
    """
    if start % BLIND_BLOCK_ROWS:
        raise ConfigError(
            f"blinds are drawn by whole blocks of {BLIND_BLOCK_ROWS} rows; row {start} does not "
            "open one",
            setting="start",
        )
    blinds: list[bytes] = []
    for first in range(start, start + count, BLIND_BLOCK_ROWS):
        rows = min(BLIND_BLOCK_ROWS, start + count - first)
        rng = seeded_rng(block_seed(seed, first // BLIND_BLOCK_ROWS))
        blinds.extend(draw_blinds(rows, rng=rng))
    return blinds


def replay_blinds(ids: Sequence[bytes], seed: bytes) -> BankRequest:
    """Return the request state (ids and their blinds) a request blinded from `seed` keeps.

    `blind_with(ids, state.blinds)` gives the blinded elements to send, and
    `unblind_labels(state, evaluated)` the labels and data keys: in this process the same,
    element for element, as the bucketed jobs of `fusion.jobs.oprf` on any engine and with any
    chunk size.
    """
    check_seed(seed)
    return BankRequest(tuple(ids), tuple(block_blinds(seed, 0, len(ids))))


def open_rows(
    sealed: Sequence[bytes], labels: Sequence[bytes], data_keys: Sequence[bytes]
) -> list[bytes]:
    """Return the payload of each sealed row, opened with its label and data key (aligned).

    The bank calls this on the rows its DuckDB join matched, with the key each label was
    derived with. Every failure (bad tag, wrong key, truncated) refuses the whole call with the
    same `OprfError`, naming the position only.
    """
    if not len(sealed) == len(labels) == len(data_keys):
        raise OprfError(
            f"sealed rows, labels and data keys must be aligned, got {len(sealed)}, "
            f"{len(labels)} and {len(data_keys)}",
            item="batch",
        )
    opened = []
    for i, (row, label, data_key) in enumerate(zip(sealed, labels, data_keys, strict=True)):
        try:
            opened.append(AESGCM(data_key).decrypt(row[:NONCE_BYTES], row[NONCE_BYTES:], label))
        except (InvalidTag, ValueError, TypeError):
            raise OprfError(_REFUSED.format(index=i), item="sealed row", index=i) from None
    return opened


def open_matched(
    rows: Mapping[bytes, bytes], labels: Sequence[bytes], data_keys: Sequence[bytes]
) -> dict[int, bytes]:
    """Return {index of the bank's id: payload} for the ids whose label has a row; decrypt no other.

    Every failure to open a matched row (bad tag, wrong key, truncated) is the same `OprfError`
    and refuses the whole batch: it names the bank's own index, never a value.

    Args:
        rows: label -> sealed row, the vendor's batch.
        labels, data_keys: from `unblind_labels`, aligned with the bank's ids.
    """
    if len(labels) != len(data_keys):
        raise OprfError(
            f"labels and data keys must be aligned, got {len(labels)} and {len(data_keys)}",
            item="batch",
        )
    hits = [i for i, label in enumerate(labels) if label in rows]
    try:
        payloads = open_rows(
            [rows[labels[i]] for i in hits], [labels[i] for i in hits], [data_keys[i] for i in hits]
        )
    except OprfError as exc:
        index = hits[exc.index] if exc.index is not None else None
        raise OprfError(_REFUSED.format(index=index), item="sealed row", index=index) from None
    return dict(zip(hits, payloads, strict=True))


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    np.cumsum(values[:-1], out=out[1:])
    return out


def _gather_ranges(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Return buf[starts[0]:starts[0]+sizes[0]] ++ buf[starts[1]:...] ++ ..., without a loop."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, dtype=buf.dtype)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - _exclusive_cumsum(sizes), sizes)
    return buf[shift + np.arange(total, dtype=np.int64)]


def _list_series(name: str, flat: np.ndarray, offsets: np.ndarray) -> pl.Series:
    array = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat))
    return pl.Series(name, array)


def _layout_error(index: int) -> str:
    return (
        f"payload {index} does not follow layout v{_LAYOUT_VERSION} (header, then lists of the "
        "sizes it declares); the vendor must re-encode it with encode_lists"
    )
