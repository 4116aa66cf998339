"""Normalise mobile numbers, resident ID numbers and device ids, vectorised, with reject reasons.

Both sides of a match must turn the same person into the same bytes before hashing, so the
rules here are the contract: a mobile number becomes its 11 ASCII digits (`1[3-9]` then 9
digits) after full-width digits are folded, separators removed and a `+86` / `0086` / `86`
country prefix dropped; an ID number becomes 17 digits and a check character (`0-9` or upper
`X`) whose ISO 7064 MOD 11-2 check holds and whose birth date exists (GB 11643-1999); a device
id (an advertising id such as OAID or IDFA: a UUID, RFC 9562) becomes its 32 lower-case hex
digits, and the all-zero id a device reports when its user limits ad tracking is rejected
(`zeroed`: every such device would share it).

`IDENTIFIER_TYPES` names the kinds in the fixed order of a composite match key
(`contracts.schemas.IDENTIFIER_TYPES`); each kind is also its keyed hash's domain tag.

Nothing in this module ever puts a value into a message: callers see counts and reason codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from contracts.errors import IdentifierError
from contracts.schemas import IDENTIFIER_TYPES as IDENTIFIER_ORDER

__all__ = [
    "DEVICE_REJECTS",
    "IDENTIFIER_TYPES",
    "ID_REJECTS",
    "PHONE_REJECTS",
    "IdentifierKind",
    "NormalizedIds",
    "id_check_characters",
    "normalize",
    "normalize_device_ids",
    "normalize_id_numbers",
    "normalize_phones",
]

IdentifierKind = str  # "mobile" | "id_number" | "device_id": also the keyed hash's domain tag
IDENTIFIER_TYPES: tuple[IdentifierKind, ...] = IDENTIFIER_ORDER

PHONE_REJECTS = ("missing", "bad_chars", "bad_length", "bad_prefix")
ID_REJECTS = ("missing", "bad_chars", "bad_length", "bad_birth_date", "bad_checksum")
DEVICE_REJECTS = ("missing", "bad_chars", "bad_length", "zeroed")

_FULL_WIDTH = [chr(0xFF10 + d) for d in range(10)] + ["＋", "（", "）", "－", "　", "Ｘ", "ｘ"]
_HALF_WIDTH = [str(d) for d in range(10)] + ["+", "(", ")", "-", " ", "X", "x"]
_SEPARATORS = r"[\s\-\(\)\.\u2010-\u2015]"
_NORMAL_FORM = r"^1[3-9][0-9]{9}$"
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # check character for (sum of weighted digits) mod 11


@dataclass(frozen=True)
class NormalizedIds:
    """Normalised values (null where rejected) and a reject reason (null where accepted)."""

    values: pl.Series  # String
    reasons: pl.Series  # Enum of the kind's reject codes

    @property
    def n_rejected(self) -> int:
        return int(self.reasons.is_not_null().sum())

    def reason_counts(self) -> dict[str, int]:
        """Give the number of rejects per reason code; never any value."""
        counts = self.reasons.drop_nulls().value_counts()
        return {str(r): int(n) for r, n in counts.iter_rows()}


def _require_string(series: pl.Series, what: str) -> None:
    if series.dtype != pl.String:
        raise IdentifierError(
            f"{what} column {series.name!r} must be text (polars String), got {series.dtype}; "
            "read identifiers as strings so leading zeros and '+' signs survive",
            column=series.name,
        )


def _fold(expr: pl.Expr) -> pl.Expr:
    """Fold full-width characters to ASCII and strip separators."""
    folded = expr.str.replace_many(_FULL_WIDTH, _HALF_WIDTH)
    return folded.str.replace_all(_SEPARATORS, "")


def normalize_phones(series: pl.Series) -> NormalizedIds:
    """Return 11-digit Chinese mobile numbers, or null with a reason code for each reject."""
    _require_string(series, "mobile number")
    # Fast path: numbers already in normal form (most of a vendor's file) skip the folding and
    # the reason passes; one regex decides, and only the other rows take the full path.
    clean = series.str.contains(_NORMAL_FORM).fill_null(False)
    if clean.all():
        return NormalizedIds(
            values=series, reasons=pl.Series("reason", [None] * len(series), pl.Enum(PHONE_REJECTS))
        )
    if clean.any():
        dirty = _normalize_dirty_phones(series.filter(~clean))
        at = (~clean).arg_true()
        values = series.set(~clean, None).scatter(at, dirty.values)
        reasons = pl.Series("reason", [None] * len(series), pl.Enum(PHONE_REJECTS)).scatter(
            at, dirty.reasons
        )
        return NormalizedIds(values=values, reasons=reasons)
    return _normalize_dirty_phones(series)


def _normalize_dirty_phones(series: pl.Series) -> NormalizedIds:
    raw = pl.col("raw")
    cleaned = _fold(raw)
    # Drop one country prefix; "86" alone only when 13 digits remain, so a bare 11-digit
    # number that happens to start with 86 is never cut.
    no_prefix = (
        pl.when(cleaned.str.starts_with("+86"))
        .then(cleaned.str.slice(3))
        .when(cleaned.str.starts_with("0086"))
        .then(cleaned.str.slice(4))
        .when(cleaned.str.starts_with("86") & (cleaned.str.len_chars() == 13))
        .then(cleaned.str.slice(2))
        .otherwise(cleaned)
    )
    frame = pl.DataFrame({"raw": series}).select(no_prefix.alias("v"), raw.is_null().alias("null"))
    v = pl.col("v")
    reason = (
        pl.when(pl.col("null") | (v.str.len_chars() == 0))
        .then(pl.lit("missing"))
        .when(~v.str.contains(r"^[0-9]+$"))
        .then(pl.lit("bad_chars"))
        .when(v.str.len_chars() != 11)
        .then(pl.lit("bad_length"))
        .when(~v.str.contains(r"^1[3-9]"))
        .then(pl.lit("bad_prefix"))
        .otherwise(pl.lit(None))
        .cast(pl.Enum(PHONE_REJECTS))
    )
    return _kept(frame, reason, series.name)


def _kept(frame: pl.DataFrame, reason: pl.Expr, name: str) -> NormalizedIds:
    """Return column `v` of `frame` where `reason` is null, and the reasons (named `name`)."""
    out = frame.select(reason.alias("reason"), pl.col("v")).select(
        pl.when(pl.col("reason").is_null()).then(pl.col("v")).alias(name), pl.col("reason")
    )
    return NormalizedIds(values=out[name], reasons=out["reason"])


def _weighted_sum(first17: pl.Expr) -> pl.Expr:
    terms = [
        first17.str.slice(i, 1).cast(pl.Int32, strict=False) * w for i, w in enumerate(_ID_WEIGHTS)
    ]
    return pl.sum_horizontal(terms)


def _check_expr(first17: pl.Expr) -> pl.Expr:
    remainder = _weighted_sum(first17) % 11
    return pl.lit(_ID_CHECK).str.slice(remainder, 1)


def id_check_characters(first17: pl.Series) -> pl.Series:
    """Return the GB 11643 check character (ISO 7064 MOD 11-2) for each 17-digit prefix."""
    _require_string(first17, "ID number prefix")
    return pl.DataFrame({"p": first17}).select(_check_expr(pl.col("p")).alias(first17.name))[
        first17.name
    ]


def normalize_id_numbers(series: pl.Series) -> NormalizedIds:
    """Return 18-character resident ID numbers, or null with a reason code for each reject.

    The 15-digit first-generation numbers are rejected as `bad_length`: they carry no check
    character, and banks have re-keyed them to 18 digits since 2013.
    """
    _require_string(series, "ID number")
    frame = pl.DataFrame({"raw": series}).select(
        _fold(pl.col("raw")).str.to_uppercase().alias("v"), pl.col("raw").is_null().alias("null")
    )
    v = pl.col("v")
    birth = v.str.slice(6, 8).str.to_date("%Y%m%d", strict=False)
    reason = (
        pl.when(pl.col("null") | (v.str.len_chars() == 0))
        .then(pl.lit("missing"))
        .when(~v.str.contains(r"^[0-9]*X?$"))
        .then(pl.lit("bad_chars"))
        .when(v.str.len_chars() != 18)
        .then(pl.lit("bad_length"))
        .when(birth.is_null() | (birth.dt.year() < 1900))
        .then(pl.lit("bad_birth_date"))
        .when(_check_expr(v.str.slice(0, 17)) != v.str.slice(17, 1))
        .then(pl.lit("bad_checksum"))
        .otherwise(pl.lit(None))
        .cast(pl.Enum(ID_REJECTS))
    )
    return _kept(frame, reason, series.name)


def normalize_device_ids(series: pl.Series) -> NormalizedIds:
    """Return 32 lower-case hex digits per device id, or null with a reason code for each reject.

    Hyphens, braces, spaces and case are the writer's (RFC 9562 UUID text, Windows GUIDs);
    the all-zero id is what a device reports when its user limits ad tracking (`zeroed`).
    """
    _require_string(series, "device id")
    frame = pl.DataFrame({"raw": series}).select(
        _fold(pl.col("raw")).str.replace_all(r"[{}]", "").str.to_lowercase().alias("v"),
        pl.col("raw").is_null().alias("null"),
    )
    v = pl.col("v")
    reason = (
        pl.when(pl.col("null") | (v.str.len_chars() == 0))
        .then(pl.lit("missing"))
        .when(~v.str.contains(r"^[0-9a-f]+$"))
        .then(pl.lit("bad_chars"))
        .when(v.str.len_chars() != 32)
        .then(pl.lit("bad_length"))
        .when(~v.str.contains(r"[1-9a-f]"))
        .then(pl.lit("zeroed"))
        .otherwise(pl.lit(None))
        .cast(pl.Enum(DEVICE_REJECTS))
    )
    return _kept(frame, reason, series.name)


def normalize(kind: IdentifierKind, series: pl.Series) -> NormalizedIds:
    """Return `series` normalised by the rules of identifier `kind` (see IDENTIFIER_TYPES)."""
    rules = {
        "mobile": normalize_phones,
        "id_number": normalize_id_numbers,
        "device_id": normalize_device_ids,
    }
    if kind not in rules:
        raise IdentifierError(
            f"identifier type must be one of {', '.join(IDENTIFIER_TYPES)}, got {kind!r}",
            column=series.name,
        )
    return rules[kind](series)
