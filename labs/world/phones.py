"""Phone rules of the synthetic data: who owns which number and how each side writes it.

Both generators use them: the world (`labs.world`) and the scale inputs (`labs.scale`). A bank
extract writes a customer's mobile number in one of eight dirty styles (`PHONE_STYLES`); about
1% of customers give an unusable one (`INVALID_PHONE_SHARE`, kinds in `INVALID_MIX`) and 0.25%
of customers, in pairs, give the number of another customer (`SHARED_PHONE_PAIRS`). The vendor
writes clean numbers, a few with the country code (`VENDOR_PLUS86_SHARE`).

A number is an int64 `MOBILE_BASE + x` with x in [0, MOBILE_SPACE): 1[3-9] followed by 9 digits.
A phone's kind is a valid style 0..7, or `INVALID` and above for the unusable kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "INVALID",
    "INVALID_MIX",
    "INVALID_PHONE_SHARE",
    "MOBILE_BASE",
    "MOBILE_SPACE",
    "PHONE_STYLES",
    "SHARED_PHONE_PAIRS",
    "VENDOR_PLUS86_SHARE",
    "BankPhones",
    "bank_phones",
    "dirty_phones",
    "distinct_mobiles",
    "vendor_phones",
]

Array = np.ndarray[Any, Any]

INVALID_PHONE_SHARE = 0.01
SHARED_PHONE_PAIRS = 0.0025  # pairs, so ~0.5% of customers share a phone
# The vendor writes a few numbers with the country code; the bank's extract is far dirtier.
VENDOR_PLUS86_SHARE = 0.06
# Dirty phone styles of the bank extract and their shares (valid numbers only).
PHONE_STYLES = np.array([0.40, 0.12, 0.08, 0.06, 0.14, 0.08, 0.06, 0.06])
# Phone kinds: 0..7 valid styles, then the invalid kinds.
INVALID = len(PHONE_STYLES)
_BAD_LENGTH, _BAD_PREFIX, _LETTERS, _EMPTY, _NULL = range(INVALID, INVALID + 5)
INVALID_MIX = np.array([0.30, 0.25, 0.15, 0.15, 0.15])
MOBILE_BASE = 13 * 10**9
MOBILE_SPACE = 7 * 10**9  # 1[3-9] followed by 9 digits


@dataclass(frozen=True)
class BankPhones:
    """Phone numbers of bank customers and of the vendor-only users, all distinct."""

    true: Array  # int64 11-digit number each customer owns
    given: Array  # int64 number in the bank extract (a shared number for the copies)
    kind: Array  # int8: valid style 0..7 or an invalid kind
    shared: Array  # bool: another customer gives the same valid number
    copy: Array  # bool: gives someone else's number (so is never the vendor person of it)
    fresh: Array  # int64 numbers no bank customer owns, for vendor-only users

    @property
    def valid(self) -> Array:
        """Return, per customer, whether the extract's phone normalises (bool)."""
        return self.kind < INVALID


def distinct_mobiles(n: int, rng: np.random.Generator) -> Array:
    """Return `n` distinct valid mobile numbers (int64) in random order."""
    values = np.empty(0, dtype=np.int64)
    while len(values) < n:  # one round almost always; a second one if collisions ate the margin
        extra = rng.integers(0, MOBILE_SPACE, n + n // 500 + 100, dtype=np.int64)
        merged = np.sort(np.concatenate([values, extra]))
        values = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    return MOBILE_BASE + rng.permutation(values)[:n]


def bank_phones(
    owned: Array, rng: np.random.Generator, *, fresh: Array | None = None
) -> BankPhones:
    """Return what the extract says of customers owning the distinct numbers `owned`.

    Draws each customer's style, the pairs where one gives the other's number and the unusable
    phones; `fresh` (numbers nobody in `owned` holds) rides along for vendor-only users.
    """
    n = len(owned)
    kind = rng.choice(len(PHONE_STYLES), size=n, p=PHONE_STYLES).astype(np.int8)
    order = rng.permutation(n)
    n_pairs = round(n * SHARED_PHONE_PAIRS)
    n_invalid = round(n * INVALID_PHONE_SHARE)
    copies, owners = order[:n_pairs], order[n_pairs : 2 * n_pairs]
    invalid = order[2 * n_pairs : 2 * n_pairs + n_invalid]
    kind[invalid] = INVALID + rng.choice(len(INVALID_MIX), size=n_invalid, p=INVALID_MIX)
    given = owned.copy()
    given[copies] = owned[owners]
    shared = np.zeros(n, dtype=bool)
    shared[copies] = shared[owners] = True
    copy = np.zeros(n, dtype=bool)
    copy[copies] = True
    unused = np.empty(0, dtype=np.int64) if fresh is None else fresh
    return BankPhones(owned, given, kind, shared, copy, unused)


def dirty_phones(phones: BankPhones, rng: np.random.Generator) -> pl.Series:
    """Return the phone column as a bank extract writes it: many styles, a few unusable."""
    digits = pl.Series("d", phones.given).cast(pl.String)
    frame = pl.DataFrame({"d": digits, "k": phones.kind, "r": rng.integers(0, 10, len(digits))})
    d, k = pl.col("d"), pl.col("k")
    a, b, c = d.str.slice(0, 3), d.str.slice(3, 4), d.str.slice(7, 4)
    full_width = d.str.replace_many(
        [str(i) for i in range(10)], [chr(0xFF10 + i) for i in range(10)]
    )
    styles = [
        d,
        pl.concat_str([pl.lit("+86 "), a, pl.lit(" "), b, pl.lit(" "), c]),
        pl.concat_str([pl.lit("0086-"), d]),
        pl.concat_str([pl.lit("(86)"), d]),
        pl.concat_str([a, pl.lit("-"), b, pl.lit("-"), c]),
        pl.concat_str([a, pl.lit(" "), b, pl.lit(" "), c]),
        full_width,
        pl.concat_str([pl.lit("+86"), d]),
    ]
    invalid = {
        # One digit missing or one too many (a typo at the counter).
        _BAD_LENGTH: pl.when(pl.col("r") < 5)
        .then(d.str.slice(0, 10))
        .otherwise(pl.concat_str([d, pl.col("r").cast(pl.String)])),
        # A landline-like or mistyped second digit: 10x, 11x, 12x are no mobile prefixes.
        _BAD_PREFIX: pl.concat_str(
            [pl.lit("1"), (pl.col("r") % 3).cast(pl.String), d.str.slice(2)]
        ),
        _LETTERS: pl.concat_str([d.str.slice(0, 5), pl.lit("O"), d.str.slice(6)]),
        _EMPTY: pl.lit(""),
        _NULL: pl.lit(None, dtype=pl.String),
    }
    # Each row takes the style of its kind; a null style (kind _NULL) leaves the row null.
    chosen = [pl.when(k == code).then(style) for code, style in enumerate(styles)]
    chosen += [pl.when(k == code).then(style) for code, style in invalid.items()]
    return frame.select(pl.coalesce(chosen).alias("phone"))["phone"]


def vendor_phones(numbers: Array, plus86: Array) -> pl.Series:
    """Return the numbers as the vendor writes them: 11 digits, "+86" first where `plus86`."""
    text = pl.Series("phone", numbers).cast(pl.String)
    return pl.select(
        pl.when(pl.Series(plus86)).then(pl.lit("+86") + text).otherwise(text)
    ).to_series()
