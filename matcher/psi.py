"""Private set intersection, salted (keyed-hash) mode: the bank's side of the match key.

Both parties normalise phones and keyed-hash them under the same salt epoch
(`matcher.keyed_hash`); equal keys are the intersection. The bank computes its customers' keys
here, with the two rules that make a match trustworthy:

- a phone that does not normalise gets no key (`invalid`), with its reason counted;
- a phone that two or more customers share gets no key for any of them (`duplicated`): a vendor
  record under that phone cannot be attributed to one customer, so none of them is matched.

The join itself runs in the bank's store (`fusion.match`), as a DuckDB equi-join on the 32-byte
keys. Limit of this mode: the salt is shared, so either party holding the other's keys and the
salt can reverse them by enumerating the ~7x10^9 mobile numbers; the OPRF mode removes that.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from contracts.errors import IdentifierError
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash

__all__ = ["KEY_STATUSES", "CustomerKeys", "CustomerPhones", "customer_keys", "customer_phones"]

KEY_STATUSES = ("ok", "invalid", "duplicated")


@dataclass(frozen=True)
class CustomerKeys:
    """Customers' match keys: `keys` has customer_id, key (null unless ok), key_status."""

    keys: pl.DataFrame
    invalid: int
    duplicated: int
    reasons: dict[str, int]

    @property
    def keyed(self) -> int:
        return self.keys.height - self.invalid - self.duplicated


@dataclass(frozen=True, repr=False)
class CustomerPhones:
    """Customers' normalised phones for matching: `phones` has customer_id, phone (null unless
    the key status is ok), key_status. Holds raw phones: never store or log it."""

    phones: pl.DataFrame
    invalid: int
    duplicated: int
    reasons: dict[str, int]

    def __repr__(self) -> str:
        return f"CustomerPhones(<{self.phones.height} customers, phones hidden>)"


def customer_phones(customer_ids: pl.Series, phones: pl.Series) -> CustomerPhones:
    """Return each customer's normalised phone, or none with the reason why it cannot match.

    The two rules of both modes: a phone that does not normalise is `invalid`; a phone two or
    more customers share is `duplicated` for all of them. Only `ok` rows keep their phone.

    Args:
        customer_ids: the bank's customer ids (unique).
        phones: the customers' phone strings as the extract has them (dirty forms allowed).
    """
    if len(customer_ids) != len(phones):
        raise IdentifierError(
            f"{len(customer_ids):,} customer ids but {len(phones):,} phones; pass the two columns "
            "of one extract",
            column=phones.name,
        )
    normalised = normalize_phones(phones)
    frame = pl.DataFrame({"customer_id": customer_ids, "phone": normalised.values}).with_columns(
        shared=pl.col("phone").is_not_null() & pl.col("phone").is_duplicated(),
    )
    status = (
        pl.when(pl.col("phone").is_null())
        .then(pl.lit("invalid"))
        .when(pl.col("shared"))
        .then(pl.lit("duplicated"))
        .otherwise(pl.lit("ok"))
    )
    out = frame.with_columns(key_status=status).with_columns(
        phone=pl.when(pl.col("key_status") == "ok").then(pl.col("phone"))
    )
    return CustomerPhones(
        phones=out.select("customer_id", "phone", "key_status"),
        invalid=normalised.n_rejected,
        duplicated=int(frame["shared"].sum()),
        reasons=normalised.reason_counts(),
    )


def customer_keys(customer_ids: pl.Series, phones: pl.Series, epoch: SaltEpoch) -> CustomerKeys:
    """Return each customer's keyed hash under `epoch`, or none with the reason why not.

    Args:
        customer_ids: the bank's customer ids (unique).
        phones: the customers' phone strings as the extract has them (dirty forms allowed).
        epoch: the salt epoch agreed with the vendor.
    """
    found = customer_phones(customer_ids, phones)
    frame = found.phones
    usable = frame["key_status"] == "ok"
    keys = keyed_hash(frame["phone"].filter(usable), epoch, domain="mobile")
    out = frame.with_columns(key=pl.lit(None, dtype=pl.Binary))
    out = out.with_columns(out["key"].scatter(usable.arg_true(), keys))
    return CustomerKeys(
        keys=out.select("customer_id", "key", "key_status"),
        invalid=found.invalid,
        duplicated=found.duplicated,
        reasons=found.reasons,
    )
