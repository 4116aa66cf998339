"""Private set intersection, salted (keyed-hash) mode: the bank's side of the match keys.

Both parties normalise identifiers and keyed-hash them under the same salt epoch, each type in
its own domain (`matcher.keyed_hash`); equal keys of one type are a link. The bank computes its
customers' keys here, by identifier type (mobile number, ID number, device id: as many as its
declared priority names), with the two rules that make a match trustworthy:

- a value that does not normalise gets no key of that type (`invalid`), its reason counted;
- a value that two or more customers share gets no key of that type for any of them
  (`duplicated`): a vendor record under it cannot be attributed to one customer.

A customer matching on the mobile number alone keeps the 32-byte phone key; with several
identifiers its key is the composite of one key per type (`keyed_hash.compose_keys`, zero bytes
where it has none). A customer is `ok` with at least one usable key; otherwise it has the
status of its highest-priority identifier (`invalid` or `duplicated`).

The join and the priority rule run in the bank's store (`fusion.match`). Limit of this mode: the
salt is shared, so either party holding the other's keys and the salt can reverse them by
enumerating each identifier's space (~7x10^9 mobile numbers, fewer ID numbers); the OPRF mode
removes that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from contracts.errors import ConfigError, IdentifierError
from contracts.schemas import IDENTIFIER_COLUMNS, IDENTIFIER_TYPES
from matcher.identity import normalize
from matcher.keyed_hash import KEY_BYTES, SaltEpoch, compose_keys, keyed_hash

__all__ = [
    "DEFAULT_PRIORITY",
    "KEY_STATUSES",
    "CustomerIdentifiers",
    "CustomerKeys",
    "check_priority",
    "combine_keys",
    "customer_identifiers",
    "customer_keys",
    "identifier_keys",
    "usable_priority",
]

KEY_STATUSES = ("ok", "invalid", "duplicated")
DEFAULT_PRIORITY = IDENTIFIER_TYPES  # mobile > id_number > device_id


def check_priority(identifiers: Sequence[str]) -> tuple[str, ...]:
    """Return the declared identifier priority, highest first; refuse unknown or repeated types."""
    declared = tuple(identifiers)
    unknown = [t for t in declared if t not in IDENTIFIER_TYPES]
    if not declared or unknown or len(set(declared)) != len(declared):
        raise ConfigError(
            f"identifiers must name one or more of {', '.join(IDENTIFIER_TYPES)}, each once, "
            f"highest priority first; got {', '.join(map(repr, declared)) or 'none'}",
            setting="identifiers",
        )
    return declared


def usable_priority(columns: Sequence[str], identifiers: Sequence[str] | None) -> tuple[str, ...]:
    """Return the priority to match with: the declared one, or by default every type whose
    column the frame has (in DEFAULT_PRIORITY's order). A declared type needs its column."""
    if identifiers is None:
        found = tuple(t for t in DEFAULT_PRIORITY if IDENTIFIER_COLUMNS[t] in columns)
        return found or ("mobile",)
    declared = check_priority(identifiers)
    missing = [IDENTIFIER_COLUMNS[t] for t in declared if IDENTIFIER_COLUMNS[t] not in columns]
    if missing:
        raise ConfigError(
            f"the identifiers {', '.join(declared)} need the column(s) {', '.join(missing)}, "
            "which the file lacks; declare only the identifiers it holds",
            setting="identifiers",
        )
    return declared


@dataclass(frozen=True)
class CustomerKeys:
    """Customers' match keys: `keys` has customer_id, key (null unless ok), key_status."""

    keys: pl.DataFrame
    invalid: int
    duplicated: int
    reasons: dict[str, int]  # unusable phones by reason
    identifiers: tuple[str, ...] = ("mobile",)
    by_identifier: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def keyed(self) -> int:
        return self.keys.height - self.invalid - self.duplicated


@dataclass(frozen=True, repr=False)
class CustomerIdentifiers:
    """Customers' normalised identifiers for matching. `frame` has customer_id, key_status and,
    per type of `identifiers`, the value (null unless usable) and `<type>_status`. Holds raw
    identifiers: never store or log it."""

    frame: pl.DataFrame
    identifiers: tuple[str, ...]
    invalid: int
    duplicated: int
    reasons: dict[str, int]  # unusable phones by reason (mobile only)
    by_identifier: dict[str, dict[str, int]]  # type -> usable, invalid, duplicated

    def __repr__(self) -> str:
        return f"CustomerIdentifiers(<{self.frame.height} customers, identifiers hidden>)"


def _statuses(kind: str, values: pl.Series) -> tuple[pl.DataFrame, dict[str, int]]:
    """Return (value and <kind>_status per row, reject reasons) under the two rules."""
    normalised = normalize(kind, values)
    value = pl.col("v")
    status = (
        pl.when(value.is_null())
        .then(pl.lit("invalid"))
        .when(value.is_duplicated())
        .then(pl.lit("duplicated"))
        .otherwise(pl.lit("ok"))
    )
    frame = (
        pl.DataFrame({"v": normalised.values})
        .with_columns(status.alias(f"{kind}_status"))
        .select(pl.when(pl.col(f"{kind}_status") == "ok").then(value).alias(kind), f"{kind}_status")
    )
    return frame, normalised.reason_counts()


def customer_identifiers(
    extract: pl.DataFrame, identifiers: Sequence[str] = ("mobile",)
) -> CustomerIdentifiers:
    """Return each customer's normalised identifiers of the given types, or why each cannot match.

    Args:
        extract: customer_id (unique) and the identifier columns (`IDENTIFIER_COLUMNS`: phone,
            id_number, device_id) as the extract has them (dirty forms allowed).
        identifiers: the types to use, highest priority first.
    """
    declared = check_priority(identifiers)
    needed = ("customer_id", *(IDENTIFIER_COLUMNS[t] for t in declared))
    lacking = [c for c in needed if c not in extract.columns]
    if lacking:
        raise IdentifierError(
            f"the extract lacks {', '.join(lacking)}; pass customer_id and one column per "
            f"identifier type matched on ({', '.join(declared)})",
            column=lacking[0],
        )
    parts, reasons, by_identifier = [extract.select("customer_id")], {}, {}
    for kind in declared:
        part, found = _statuses(kind, extract[IDENTIFIER_COLUMNS[kind]])
        parts.append(part)
        by_identifier[kind] = _status_counts(part[f"{kind}_status"])
        if kind == "mobile":
            reasons = found
    frame = pl.concat(parts, how="horizontal")
    overall = _overall_status(declared) if len(declared) > 1 else pl.col(f"{declared[0]}_status")
    frame = frame.with_columns(key_status=overall).select(
        "customer_id", "key_status", *(c for k in declared for c in (k, f"{k}_status"))
    )
    status = frame["key_status"]
    return CustomerIdentifiers(
        frame=frame,
        identifiers=declared,
        invalid=int((status == "invalid").sum()),
        duplicated=int((status == "duplicated").sum()),
        reasons=reasons,
        by_identifier=by_identifier,
    )


def identifier_keys(found: CustomerIdentifiers, epoch: SaltEpoch) -> CustomerKeys:
    """Return each customer's match key under `epoch`: its phone key when the mobile number is
    the only identifier, else the composite of one keyed hash per type (zeros where none)."""
    frame = found.frame
    keys = {kind: keyed_hash(frame[kind], epoch, domain=kind) for kind in found.identifiers}
    if found.identifiers == ("mobile",):
        return CustomerKeys(
            keys=pl.DataFrame(
                [frame["customer_id"], keys["mobile"].alias("key"), frame["key_status"]]
            ),
            invalid=found.invalid,
            duplicated=found.duplicated,
            reasons=found.reasons,
            by_identifier=found.by_identifier,
        )
    per_type = {
        kind: pl.DataFrame(
            [
                frame["customer_id"],
                keys[kind].alias("key"),
                frame[f"{kind}_status"].alias("key_status"),
            ]
        )
        for kind in found.identifiers
    }
    return combine_keys(per_type, reasons=found.reasons)


def combine_keys(per_type: Mapping[str, pl.DataFrame], *, reasons: dict[str, int]) -> CustomerKeys:
    """Return each customer's composite key from its keys of each type, highest priority first.

    Args:
        per_type: identifier type -> customer_id, key (null unless ok), key_status, one row per
            customer (the same customers for every type, in any order).
        reasons: unusable phones by reason.
    """
    declared = check_priority(list(per_type))
    frame = per_type[declared[0]].select("customer_id")
    for kind in declared:
        part = per_type[kind].select(
            "customer_id", pl.col("key").alias(kind), pl.col("key_status").alias(f"{kind}_status")
        )
        frame = frame.join(part, on="customer_id", how="left", maintain_order="left")
    frame = frame.with_columns(key_status=_overall_status(declared))
    composite = compose_keys({kind: frame[kind] for kind in declared}, KEY_BYTES)
    key = pl.select(pl.when(frame["key_status"] == "ok").then(composite).alias("key")).to_series()
    status = frame["key_status"]
    return CustomerKeys(
        keys=pl.DataFrame([frame["customer_id"], key, status]),
        invalid=int((status == "invalid").sum()),
        duplicated=int((status == "duplicated").sum()),
        reasons=reasons,
        identifiers=declared,
        by_identifier={kind: _status_counts(frame[f"{kind}_status"]) for kind in declared},
    )


def _overall_status(identifiers: Sequence[str]) -> pl.Expr:
    """Return a customer's status: ok with any usable key, else its highest-priority
    identifier's (invalid or duplicated), as a match on that identifier alone would say."""
    statuses = [pl.col(f"{kind}_status") for kind in identifiers]
    return (
        pl.when(pl.any_horizontal(s == "ok" for s in statuses))
        .then(pl.lit("ok"))
        .otherwise(statuses[0])
    )


def _status_counts(status: pl.Series) -> dict[str, int]:
    return dict.fromkeys(KEY_STATUSES, 0) | {
        str(s): int(n) for s, n in status.value_counts().iter_rows()
    }


def customer_keys(customer_ids: pl.Series, phones: pl.Series, epoch: SaltEpoch) -> CustomerKeys:
    """Return each customer's phone key under `epoch`, or none with the reason why not.

    Args:
        customer_ids: the bank's customer ids (unique).
        phones: the customers' phone strings as the extract has them (dirty forms allowed).
        epoch: the salt epoch agreed with the vendor.
    """
    if len(customer_ids) != len(phones):
        raise IdentifierError(
            f"{len(customer_ids):,} customer ids but {len(phones):,} phones; pass the two columns "
            "of one extract",
            column=phones.name,
        )
    extract = pl.DataFrame([customer_ids.alias("customer_id"), phones.alias("phone")])
    return identifier_keys(customer_identifiers(extract), epoch)
