"""The world's second identifiers: ID numbers and device ids at the vendor, device ids at the bank,
and customers whose number at the bank is out of date.

Real customers are lost to a match on the phone alone: some changed their number and the bank
still holds the old one (a share of those old numbers now belongs to someone else at the vendor:
carriers recycle numbers), and family members who give one phone are matched by nobody. A
second identifier recovers some of them:

- the vendor holds the ID number of a share of its users (real-name checks), written in the
  normal form; for a bank customer it is the true number, so a customer whose extract carries a
  mistyped check character is not linked by it;
- the bank's mobile-banking app knows the device of most registered customers; the vendor's SDK
  reports the device of a share of its users; the same person's two device ids are the same
  device unless the person changed phones; a few devices report the all-zero id (limited ad
  tracking), which links nobody.

Everything here draws from streams of its own (`identifier_streams`), spawned apart from the
world's other streams, so every other column keeps the bytes it had before these identifiers
existed; only the old numbers change the bank's phone column, for the customers who have one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from labs.world.bank import Ids, id_prefixes
from labs.world.phones import MOBILE_BASE, MOBILE_SPACE, BankPhones
from labs.world.vendor import Vendor
from matcher.identity import id_check_characters

__all__ = [
    "BANK_DEVICE_SHARE",
    "CHANGED_NUMBER_SHARE",
    "RECYCLED_SHARE",
    "SAME_DEVICE_SHARE",
    "VENDOR_DEVICE_SHARE",
    "VENDOR_ID_SHARE",
    "ZEROED_DEVICE_SHARE",
    "Devices",
    "VendorIdentifiers",
    "bank_devices",
    "changed_numbers",
    "identifier_streams",
    "true_id_numbers",
    "vendor_identifiers",
    "with_vendor_identifiers",
]

Array = np.ndarray[Any, Any]

CHANGED_NUMBER_SHARE = 0.04  # of customers with a valid, unshared phone: the bank's is old
RECYCLED_SHARE = 0.15  # of those old numbers, now held by a vendor-only user
VENDOR_ID_SHARE = 0.6  # vendor users whose ID number the vendor holds
BANK_DEVICE_SHARE = 0.9  # customers registered on mobile banking whose device the bank knows
VENDOR_DEVICE_SHARE = 0.5  # vendor users whose device the vendor's SDK reports
SAME_DEVICE_SHARE = 0.85  # a customer's device at the bank and at the vendor: the same one
ZEROED_DEVICE_SHARE = 0.02  # device ids reported as all zeros (ad tracking limited)
# The child of the world's seed these streams are spawned from: far beyond the world's own
# streams (`labs.world.generate`), which take the first children in order.
_SPAWN_KEY = 1_000


def identifier_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Return the (bank, vendor) random streams of the second identifiers for a world seed."""
    bank, vendor = np.random.SeedSequence(seed, spawn_key=(_SPAWN_KEY,)).spawn(2)
    return np.random.Generator(np.random.PCG64(bank)), np.random.Generator(np.random.PCG64(vendor))


def changed_numbers(phones: BankPhones, vendor_only: int, rng: np.random.Generator) -> BankPhones:
    """Return the phones with an old number in the extract for some customers.

    A changed customer keeps its current number (`true`, the vendor's), and the extract gives an
    old one: a number no other person holds, or, for `RECYCLED_SHARE` of them, the number of one
    of the first `vendor_only` fresh numbers (vendor-only users hold those).
    """
    n = len(phones.true)
    changed = phones.valid & ~phones.shared & (rng.random(n) < CHANGED_NUMBER_SHARE)
    rows = np.flatnonzero(changed)
    recycled = rng.random(len(rows)) < RECYCLED_SHARE
    recycled &= np.cumsum(recycled) <= vendor_only
    old = np.empty(len(rows), dtype=np.int64)
    old[recycled] = phones.fresh[rng.choice(vendor_only, int(recycled.sum()), replace=False)]
    taken = np.concatenate([phones.true, phones.fresh])
    need = int((~recycled).sum())
    unused = np.empty(0, dtype=np.int64)
    while len(unused) < need:  # nobody's numbers: draw, drop the held and the repeated
        draw = MOBILE_BASE + rng.integers(0, MOBILE_SPACE, 2 * need + 16, dtype=np.int64)
        draw = np.unique(draw[~np.isin(draw, taken)])
        unused = np.unique(np.concatenate([unused, draw]))
    old[~recycled] = rng.permutation(unused)[:need]
    given = phones.given.copy()
    given[rows] = old
    return replace(phones, given=given)


@dataclass(frozen=True)
class Devices:
    """Device ids the bank's app knows: 16 bytes per customer, with who has one."""

    raw: Array  # uint8 (n, 16)
    known: Array  # bool: the bank holds a device id
    zeroed: Array  # bool: the id is all zeros (limited ad tracking)

    def column(self) -> pl.Series:
        """Return the extract's device_id column: upper-case UUID text, null where unknown."""
        return _uuid_text(self.raw, self.known, upper=True).alias("device_id")

    def usable(self) -> pl.Series:
        """Return each customer's device id in normal form where it can link (known, not 0)."""
        return _uuid_text(self.raw, self.known & ~self.zeroed, upper=False).alias("device_id")


def bank_devices(registered: Array, rng: np.random.Generator) -> Devices:
    """Return the device ids the bank knows: most customers registered on mobile banking."""
    n = len(registered)
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    known = registered & (rng.random(n) < BANK_DEVICE_SHARE)
    zeroed = known & (rng.random(n) < ZEROED_DEVICE_SHARE)
    raw[zeroed] = 0
    return Devices(raw=raw, known=known, zeroed=zeroed)


def true_id_numbers(ids: Ids) -> pl.Series:
    """Return each customer's true ID number (normal form), whatever the extract's check says."""
    first17 = ids.numbers.str.to_uppercase().str.slice(0, 17)
    return (first17 + id_check_characters(first17)).alias("id_number")


@dataclass(frozen=True)
class VendorIdentifiers:
    """The vendor's ID numbers and device ids per vendor row (null where it holds none)."""

    id_number: pl.Series  # String, normal form
    device_raw: Array  # uint8 (n, 16)
    device_known: Array  # bool
    device_zeroed: Array  # bool

    def device_column(self) -> pl.Series:
        """Return the users file's device_id column: 32 lower-case hex digits, null if none."""
        return _uuid_text(self.device_raw, self.device_known, upper=False).alias("device_id")

    def usable_devices(self) -> pl.Series:
        """Return each row's device id where it can link (reported, not all zeros)."""
        usable = self.device_known & ~self.device_zeroed
        return _uuid_text(self.device_raw, usable, upper=False).alias("device_id")


def vendor_identifiers(
    customer: Array, ids: Ids, devices: Devices, snapshot: datetime.date, rng: np.random.Generator
) -> VendorIdentifiers:
    """Return the vendor's second identifiers for its rows (`customer`: bank row, -1 for none)."""
    n = len(customer)
    own = customer >= 0
    holds_id = rng.random(n) < VENDOR_ID_SHARE
    bank_true = true_id_numbers(ids)
    strangers = _stranger_ids(int((~own).sum()), snapshot, rng)
    numbers = pl.Series("id_number", [None] * n, dtype=pl.String)
    numbers = numbers.scatter(np.flatnonzero(own), bank_true.gather(customer[own]))
    numbers = numbers.scatter(np.flatnonzero(~own), strangers)
    # A stranger's drawn number that is some customer's is no number of the stranger's.
    clash = (~own) & numbers.is_in(bank_true.implode()).to_numpy()
    numbers = numbers.scatter(np.flatnonzero(~holds_id | clash), None)

    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    known = rng.random(n) < VENDOR_DEVICE_SHARE
    same = own & devices.known[np.maximum(customer, 0)] & (rng.random(n) < SAME_DEVICE_SHARE)
    raw[same] = devices.raw[customer[same]]
    zeroed = known & ~same & (rng.random(n) < ZEROED_DEVICE_SHARE)
    zeroed |= known & same & devices.zeroed[np.maximum(customer, 0)]
    raw[zeroed] = 0
    return VendorIdentifiers(numbers, raw, known, zeroed)


def _stranger_ids(n: int, snapshot: datetime.date, rng: np.random.Generator) -> pl.Series:
    """Return `n` valid ID numbers of adults (GB 11643-1999 layout), drawn at random."""
    age = rng.integers(18, 80, n)
    prefix = id_prefixes(
        rng.integers(0, 40, n), age, rng.integers(0, 364, n), rng.integers(0, 1000, n), snapshot
    )
    return (prefix + id_check_characters(prefix)).alias("id_number")


def _uuid_text(raw: Array, known: Array, *, upper: bool) -> pl.Series:
    """Return 16-byte ids as text (upper: 8-4-4-4-12 UUID form), null where not `known`."""
    n = len(raw)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [None, pa.py_buffer(np.ascontiguousarray(raw).tobytes())]
    )
    hexed = pl.Series("d", fixed).cast(pl.Binary).bin.encode("hex")
    if upper:
        hexed = pl.select(
            pl.concat_str(
                [hexed.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20))]
                + [hexed.str.slice(20, 12)],
                separator="-",
            ).str.to_uppercase()
        ).to_series()
    return hexed.scatter(np.flatnonzero(~known), None)


def with_vendor_identifiers(
    vendor: Vendor, ids: Ids, devices: Devices, snapshot: datetime.date, rng: np.random.Generator
) -> Vendor:
    """Return the vendor with its ID number and device id columns drawn."""
    drawn = vendor_identifiers(vendor.customer, ids, devices, snapshot, rng)
    return replace(vendor, id_number=drawn.id_number, device_id=drawn.device_column())
