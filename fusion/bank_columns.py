"""The in-bank columns of a feature table: the bank's data dictionary and how values are coded.

Text columns become integer codes rather than one-hot columns: trees split codes as well, one
column per business variable keeps importances and reason codes on the variable the bank knows,
and the code lists travel in the feature manifest, so a scoring table built like a training one
gets the training codes (a value unseen in training becomes null). Booleans become 0/1 and dates
the days before the snapshot. Every column carries a `ColumnNote` (its group, source and what it
holds), as `fusion.vendor_features` gives the vendor's columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import polars as pl

from contracts.errors import StoreError

__all__ = ["BankColumns", "ColumnNote", "bank_group", "encode_bank", "is_text"]

ID_COLUMNS = ("customer_id", "branch_id")
_LABEL = "opened_mb"
_FLAGS = ("mb_registered",)
# The bank's data dictionary, grouped as in its data mart. A column it does not name is
# "channels" when it is a windowed transaction measure, else "bank_other".
_BANK_GROUPS: dict[str, tuple[str, ...]] = {
    "demographics": (
        "age", "gender", "marital", "education", "job", "city_tier", "household_size",
        "has_children", "is_local_resident", "annual_income",
    ),
    "relationship": (
        "tenure_months", "customer_level", "n_products", "ukey_holder", "online_banking",
        "payroll", "credit_card", "credit_card_limit", "n_debit_cards", "wechat_bound",
        "sms_alerts", "has_relationship_manager", "months_since_contact", "complaints_12m",
        "social_security_card",
    ),
    "assets": (
        "aum_current", "aum_month_avg", "aum_year_avg", "aum_max_12m", "demand_deposit",
        "time_deposit", "time_deposit_count", "wealth_mgmt", "wealth_ratio", "funds",
        "insurance", "bonds", "precious_metals", "loan_balance", "mortgage_balance",
        "consumer_loan_balance", "credit_card_balance", "n_loans",
    ),
}  # fmt: skip
_GROUP_OF = {name: group for group, names in _BANK_GROUPS.items() for name in names}
_CHANNEL_MARKS = ("_3m", "_12m", "_days_since_last")


@dataclass(frozen=True)
class ColumnNote:
    """Where a feature column belongs and what it holds (its type is its frame's)."""

    group: str
    source: str
    description: str


@dataclass(frozen=True)
class BankColumns:
    """The bank columns made numeric, each column's note, and the text codes used."""

    frame: pl.DataFrame
    notes: dict[str, ColumnNote]  # column name -> its note, in frame order
    codes: dict[str, tuple[str, ...]]  # text column -> its values in code order (code = index)


def bank_group(name: str) -> str:
    """Return the feature group of a bank column: the data dictionary's, else by its name."""
    if name in _GROUP_OF:
        return _GROUP_OF[name]
    if name.endswith(_CHANNEL_MARKS) or "_txn_" in name:
        return "channels"
    return "bank_other"


def is_text(dtype: pl.DataType) -> bool:
    """Return whether a column of this type is coded as text."""
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)


def encode_bank(
    bank: pl.DataFrame,
    snapshot_date: date,
    *,
    codes_like: Mapping[str, tuple[str, ...]] | None = None,
) -> BankColumns:
    """Return the bank columns made numeric, their notes and the text codes.

    `codes_like` are a training manifest's codes: a text column found there keeps them.
    """
    exprs: list[pl.Expr] = []
    notes: dict[str, ColumnNote] = {}
    codes: dict[str, tuple[str, ...]] = {}
    for name, dtype in bank.schema.items():
        if name in ID_COLUMNS:
            description = "the bank's customer id" if name == "customer_id" else "its branch"
            exprs.append(pl.col(name))
            notes[name] = ColumnNote("id", "bank_features", description)
            continue
        if is_text(dtype):
            codes[name] = (
                codes_like[name]
                if codes_like is not None and name in codes_like
                else tuple(bank[name].cast(pl.String).drop_nulls().unique().sort().to_list())
            )
        expr, description = _encode(name, dtype, snapshot_date, codes.get(name, ()))
        exprs.append(expr.alias(name))
        group = "label" if name == _LABEL else "flag" if name in _FLAGS else bank_group(name)
        notes[name] = ColumnNote(group, "bank_features", description)
    return BankColumns(bank.select(exprs), notes, codes)


def _encode(
    name: str, dtype: pl.DataType, snapshot_date: date, values: tuple[str, ...]
) -> tuple[pl.Expr, str]:
    """Return the expression that makes a bank column numeric, and what its values mean."""
    if dtype == pl.Boolean:
        return pl.col(name).cast(pl.Int8), "1 = true, 0 = false"
    if is_text(dtype):
        code_type = pl.Int16 if len(values) < 2**15 else pl.Int32
        expr = (
            pl.col(name)
            .cast(pl.String)
            .replace_strict(values, range(len(values)), default=None)
            .cast(code_type)
        )
        return expr, f"code of the value in manifest.codes[{name!r}]"
    if dtype == pl.Date:
        days = (pl.lit(snapshot_date) - pl.col(name)).dt.total_days().cast(pl.Int32)
        return days, "days before the snapshot date"
    if dtype.is_numeric():
        return pl.col(name), ""
    raise StoreError(
        f"bank_features column {name!r} has type {dtype}, which no model reads; "
        "give it a numeric, boolean, text or date type in the extract"
    )
