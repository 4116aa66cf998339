"""Schemas of the data that crosses a boundary: the vendor batch and the bank's customer extract.

A schema check is the first contract rule: a frame whose columns or types are wrong is refused
before any value rule runs, with the missing, extra and mistyped columns named.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl

from contracts.errors import ContractError

__all__ = [
    "BANK_EXTRACT",
    "IDENTIFIER_COLUMNS",
    "IDENTIFIER_TYPES",
    "VENDOR_BATCH",
    "VENDOR_BATCH_V2",
    "VENDOR_OPRF_BATCH",
    "VENDOR_OPRF_BATCH_V2",
    "MatchMode",
    "TableSchema",
]

# The identifier types a match can use, in the fixed order of a composite key: a row keyed by
# several identifiers carries one key (or label) per type, concatenated in this order, each of
# the same width (contracts/schemas.py VENDOR_BATCH_V2; docs/envelope.md "Batch payloads").
IDENTIFIER_TYPES = ("mobile", "id_number", "device_id")
# The column of a bank extract or a vendor users file that holds each identifier type.
IDENTIFIER_COLUMNS = {"mobile": "phone", "id_number": "id_number", "device_id": "device_id"}


class MatchMode(StrEnum):
    """How a vendor batch is keyed, and so how the bank matches it (named in the manifest).

    SALTED: each row is keyed by HMAC-SHA256 under the shared epoch salt (fast; the salt holders
    could brute-force the phone space). OPRF: each row is a label and a sealed payload derived
    from the vendor's OPRF key (RFC 9497); the bank opens only the rows it matched.
    """

    SALTED = "salted"
    OPRF = "oprf"


@dataclass(frozen=True)
class TableSchema:
    """A named, versioned set of required columns; `extra_allowed` admits further columns."""

    contract: str
    columns: dict[str, pl.DataType]
    extra_allowed: bool = False

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    def check(self, frame: pl.DataFrame | pl.LazyFrame, *, batch_id: str | None = None) -> None:
        """Raise ContractError naming every missing, mistyped or unexpected column."""
        actual = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
        missing = [c for c in self.columns if c not in actual]
        mistyped = [
            f"{c} (expected {self.columns[c]}, got {actual[c]})"
            for c in self.columns
            if c in actual and actual[c] != self.columns[c]
        ]
        extra = [] if self.extra_allowed else [c for c in actual if c not in self.columns]
        problems = []
        if missing:
            problems.append(f"missing columns: {', '.join(missing)}")
        if mistyped:
            problems.append(f"mistyped columns: {', '.join(mistyped)}")
        if extra:
            problems.append(f"unexpected columns: {', '.join(extra)}")
        if problems:
            raise ContractError(
                f"{self.contract}: {'; '.join(problems)}. Produce the frame with the schema in "
                "contracts/schemas.py (the vendor CLI does this for batches)",
                contract=self.contract,
                rules=("schema",),
                batch_id=batch_id,
            )


VENDOR_BATCH = TableSchema(
    contract="vendor_batch/v1",
    columns={
        "key": pl.Binary(),  # HMAC-SHA256 of the normalised phone, 32 bytes
        "app_ids": pl.List(pl.Int32()),
        "app_days": pl.List(pl.Int16()),  # active days in the last 30
        "app_sessions": pl.List(pl.Int32()),  # sessions in the last 30 days
        "tag_ids": pl.List(pl.Int32()),
        "tag_weights": pl.List(pl.Float32()),  # interest strength in (0, 1]
    },
)

# Version 2: the same columns; `key` is the user's composite key, one 32-byte keyed hash per
# IDENTIFIER_TYPES in that order (96 bytes), random bytes where the user lacks that identifier,
# so one vendor user stays one row of apps and tags whichever identifier matches it.
VENDOR_BATCH_V2 = TableSchema(contract="vendor_batch/v2", columns=dict(VENDOR_BATCH.columns))

# The OPRF mode's batch (matcher/oprf_match.py): per user a 16-byte label derived from F_k(phone)
# and that user's VENDOR_BATCH lists, encrypted under another key derived from F_k(phone). The
# bank can check only the shape of these rows on arrival; the lists' own rules are checked on
# the rows it opens, at match time (fusion/oprf_psi.py).
VENDOR_OPRF_BATCH = TableSchema(
    contract="vendor_oprf_batch/v1",
    columns={
        "label": pl.Binary(),  # HKDF-SHA256(F_k(phone), "bankfusion/oprf/row/v1")[:16]
        "sealed": pl.Binary(),  # nonce (12) || AES-256-GCM(lists payload) || tag (16)
    },
)

# Version 2 (matcher/oprf_match.py `seal_rows_by_identifier`): `label` is one 16-byte label per
# IDENTIFIER_TYPES (48 bytes, random where absent); `sealed` is the row key wrapped under each
# identifier's key (3 x 60 bytes, random where absent), then nonce || AES-256-GCM(lists).
VENDOR_OPRF_BATCH_V2 = TableSchema(
    contract="vendor_oprf_batch/v2", columns=dict(VENDOR_OPRF_BATCH.columns)
)

# The bank extract carries ~70 features; the contract pins the columns every job relies on and
# admits the rest (their ranges are checked by the extract suite).
BANK_EXTRACT = TableSchema(
    contract="bank_extract/v1",
    columns={
        "customer_id": pl.Int64(),
        "branch_id": pl.String(),
        "phone": pl.String(),
        "id_number": pl.String(),  # a `device_id` String column may follow (optional)
        "age": pl.Int16(),
        "mb_registered": pl.Boolean(),
    },
    extra_allowed=True,
)
