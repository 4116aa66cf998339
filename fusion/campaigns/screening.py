"""Screening: who a campaign may not contact on the plan's first day, and why.

Rules, in the order they are applied; a candidate row is counted under the first that removes it,
so per campaign the input rows = the kept rows + the sum of `removed`:

    duplicate               a second row of the same (campaign_id, customer_id)
    suppressed:<list>       an active entry of a suppression list the campaign names (in its order)
    complaint               a complaint on or after the day `complaint_months` months before `day`
    frequency_cap           >= cap.contacts contacts with day - cap.days <= contact.day < day
    cooling_off             any contact with day - cooling_off_days <= contact.day < day
    holder:<column>         the customer holds the bank product `column` (> 0 or true)

Everything is computed over whole columns: the context frames are reduced once to one row of
facts per customer (last contact, contacts per cap window, last complaint, suppression and holder
flags), joined to the candidates once, and each campaign's rules become one polars expression
over its partition (a loop over campaigns, never over customers).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.declaration import Screening

__all__ = [
    "RULES",
    "Screened",
    "ScreeningContext",
    "by_campaign_and_customer",
    "rule_keys",
    "screen",
]

RULES = ("duplicate", "suppressed", "complaint", "frequency_cap", "cooling_off", "holder")
"""The rule families in the order they are applied (suppressed and holder carry a name)."""

_KEYS = ("campaign_id", "customer_id")
# Working columns: a prefix no candidate column is expected to carry, dropped before returning.
_DUP = "__screen_duplicate"
_LAST_CONTACT = "__screen_last_contact"
_LAST_COMPLAINT = "__screen_last_complaint"
_COUNT = "__screen_contacts_"
_SUPPRESSED = "__screen_suppressed_"
_HOLDER = "__screen_holder_"
_REASON = "__screen_reason"
_SORTABLE = (pl.String, pl.Boolean, pl.Date, pl.Datetime, pl.Duration, pl.Categorical)


@dataclass(frozen=True)
class ScreeningContext:
    """What screening reads besides the candidates, as of the plan window's first day.

    suppressions: list_name str, customer_id i64, since date, until date | null; an entry is
        active when since <= day and (until is null or day < until).
    contacts: customer_id i64, source str, channel str, day date (every touch delivered or
        planned, over every campaign).
    complaints: customer_id i64, occurred_at datetime (or date).
    holders: customer_id i64 + bank feature columns (numeric or boolean).
    """

    day: date
    suppressions: pl.DataFrame
    contacts: pl.DataFrame
    complaints: pl.DataFrame
    holders: pl.DataFrame


@dataclass(frozen=True)
class Screened:
    """The candidates that passed, and per campaign how many rows each rule removed."""

    frame: pl.DataFrame
    removed: dict[str, dict[str, int]]


def rule_keys(rule: Screening) -> list[str]:
    """Return the keys of `Screened.removed` for one campaign's screening, in application order."""
    return [
        "duplicate",
        *(f"suppressed:{name}" for name in _unique(rule.suppression_lists)),
        "complaint",
        "frequency_cap",
        "cooling_off",
        *(f"holder:{column}" for column in _unique(rule.exclude_holders)),
    ]


def screen(
    candidates: pl.DataFrame, rules: Mapping[str, Screening], context: ScreeningContext
) -> Screened:
    """Return the candidates no rule removes (sorted by campaign_id, customer_id) and the counts.

    Args:
        candidates: campaign_id str, customer_id i64 and any further columns (kept as they are).
        rules: each candidate campaign's screening (the declaration's `screening`).
        context: the day and the frames the rules read.

    Raises ConfigError when a candidate campaign has no rules, a frame lacks a column the rules
    read, or a holder column is not numeric or boolean.
    """
    _require(candidates, "candidates", _KEYS)
    present = candidates.get_column("campaign_id").unique().drop_nulls().to_list()
    missing = sorted(set(present) - set(rules))
    if missing or candidates.get_column("campaign_id").null_count():
        raise ConfigError(
            f"screening rules are missing for {len(missing)} candidate campaign(s) "
            f"({', '.join(missing[:5]) or 'a null campaign_id'}); pass every candidate "
            "campaign's declaration.screening",
            setting="rules",
        )
    removed = {campaign: dict.fromkeys(rule_keys(rules[campaign]), 0) for campaign in rules}
    if candidates.height == 0:
        return Screened(frame=candidates, removed=removed)
    columns = candidates.columns
    frame = _mark_duplicates(candidates)
    facts = _facts(frame, rules, context)
    frame = frame.join(facts, on="customer_id", how="left", maintain_order="left")
    kept: list[pl.DataFrame] = []
    # The frame is sorted by (campaign, customer): its partitions, in campaign order, stay so.
    parts = frame.partition_by("campaign_id", as_dict=True)
    for (campaign,), part in sorted(parts.items(), key=lambda item: str(item[0][0])):
        reason = part.select(_reason(rules[str(campaign)], context.day)).to_series()
        counts = reason.drop_nulls().value_counts()
        for name, n in counts.iter_rows():
            removed[str(campaign)][name] = n
        kept.append(part.filter(reason.is_null()).select(columns))
    return Screened(frame=pl.concat(kept), removed=removed)


def by_campaign_and_customer(frame: pl.DataFrame) -> pl.DataFrame:
    """Return the frame sorted by (campaign_id, customer_id); a sorted frame as it is.

    The check is one pass over two columns, several times cheaper than sorting a sorted frame.
    """
    campaign, customer = pl.col("campaign_id"), pl.col("customer_id")
    ascending = (campaign > campaign.shift(1)) | (
        (campaign == campaign.shift(1)) & (customer >= customer.shift(1))
    )
    if frame.select(ascending.fill_null(True).all()).item():
        return frame
    return frame.sort(list(_KEYS))


def _unique(names: Iterable[str]) -> list[str]:
    """Return the names without repeats, in their first order."""
    return list(dict.fromkeys(names))


def _require(frame: pl.DataFrame, name: str, columns: Iterable[str]) -> None:
    """Raise ConfigError when `frame` lacks one of `columns`."""
    absent = [column for column in columns if column not in frame.columns]
    if absent:
        raise ConfigError(
            f"{name} needs the column(s) {', '.join(absent)}, got {', '.join(frame.columns)}; "
            "build it as the fusion.campaigns frame contract says",
            setting=name,
        )


def _mark_duplicates(candidates: pl.DataFrame) -> pl.DataFrame:
    """Return the candidates sorted by campaign and customer, repeats of a pair flagged.

    The copy kept is the first in a sort over every sortable column, so which copy survives does
    not depend on the input's row order.
    """
    frame = by_campaign_and_customer(candidates)
    duplicate = (pl.col("campaign_id") == pl.col("campaign_id").shift(1)) & (
        pl.col("customer_id") == pl.col("customer_id").shift(1)
    )
    flagged = frame.with_columns(duplicate.fill_null(False).alias(_DUP))
    if not flagged.get_column(_DUP).any():
        return flagged
    rest = [
        column
        for column, dtype in frame.schema.items()
        if column not in _KEYS and (dtype.is_numeric() or isinstance(dtype, _SORTABLE))
    ]
    frame = candidates.sort([*_KEYS, *rest], nulls_last=True)
    return frame.with_columns(duplicate.fill_null(False).alias(_DUP))


def _facts(
    frame: pl.DataFrame, rules: Mapping[str, Screening], context: ScreeningContext
) -> pl.DataFrame:
    """Return one row per candidate customer with every fact the rules read."""
    used = [rules[c] for c in frame.get_column("campaign_id").unique().to_list()]
    customers = frame.select(pl.col("customer_id").unique())
    parts = [
        _contact_facts(context, used),
        _complaint_facts(context, used),
        _flags(_active_suppressions(context), "list_name", _SUPPRESSED, _lists(used)),
        _holder_facts(context.holders, _unique(c for r in used for c in r.exclude_holders)),
    ]
    for part in parts:
        if part is not None:
            customers = customers.join(part, on="customer_id", how="left")
    return customers


def _lists(used: Iterable[Screening]) -> list[str]:
    return _unique(name for rule in used for name in rule.suppression_lists)


def _contact_facts(context: ScreeningContext, used: list[Screening]) -> pl.DataFrame:
    """Return customer_id, the last contact before `day`, and the contacts in each cap window."""
    _require(context.contacts, "contacts", ("customer_id", "day"))
    windows = sorted({rule.frequency_cap.days for rule in used})
    longest = max([*windows, *(rule.cooling_off_days for rule in used), 0])
    day = context.day
    recent = context.contacts.select("customer_id", pl.col("day").cast(pl.Date)).filter(
        (pl.col("day") < day) & (pl.col("day") >= day - timedelta(days=longest))
    )
    return recent.group_by("customer_id").agg(
        pl.col("day").max().alias(_LAST_CONTACT),
        *(
            (pl.col("day") >= day - timedelta(days=days)).sum().alias(f"{_COUNT}{days}")
            for days in windows
        ),
    )


def _months_before(day: date, months: int) -> date:
    """Return the same day `months` calendar months earlier (clamped to the month's end)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def _complaint_facts(context: ScreeningContext, used: list[Screening]) -> pl.DataFrame | None:
    """Return customer_id and the date of the last complaint inside the longest rule's reach."""
    months = max((rule.complaint_months for rule in used), default=0)
    if months == 0:
        return None
    _require(context.complaints, "complaints", ("customer_id", "occurred_at"))
    cutoff = _months_before(context.day, months)
    # Later complaints count too: a plan made on its first day sees that morning's complaints.
    dated = context.complaints.select("customer_id", pl.col("occurred_at").cast(pl.Date))
    return (
        dated.filter(pl.col("occurred_at") >= cutoff)
        .group_by("customer_id")
        .agg(pl.col("occurred_at").max().alias(_LAST_COMPLAINT))
    )


def _active_suppressions(context: ScreeningContext) -> pl.DataFrame:
    """Return the suppression entries active on `day` (list_name, customer_id)."""
    _require(context.suppressions, "suppressions", ("list_name", "customer_id", "since", "until"))
    day = context.day
    since = pl.col("since").cast(pl.Date)
    until = pl.col("until").cast(pl.Date)
    active = (since <= day) & (until.is_null() | (until > day))
    return context.suppressions.filter(active).select("list_name", "customer_id")


def _flags(
    entries: pl.DataFrame, name_column: str, prefix: str, names: list[str]
) -> pl.DataFrame | None:
    """Return customer_id and one boolean column per name: does the customer have an entry."""
    if not names:
        return None
    return (
        entries.filter(pl.col(name_column).is_in(names))
        .group_by("customer_id")
        .agg((pl.col(name_column) == name).any().alias(f"{prefix}{name}") for name in names)
    )


def _holder_facts(holders: pl.DataFrame, columns: list[str]) -> pl.DataFrame | None:
    """Return customer_id and one boolean column per excluded product: does the customer hold it."""
    if not columns:
        return None
    _require(holders, "holders", ("customer_id",))
    absent = [column for column in columns if column not in holders.columns]
    if absent:
        raise ConfigError(
            f"screening excludes holders of {', '.join(absent)} but the holders frame has no "
            f"such column; use one of the bank feature columns ({len(holders.columns) - 1} "
            "available) or remove it from screening.exclude_holders",
            setting="screening.exclude_holders",
        )
    flags: list[pl.Expr] = []
    for column in columns:
        dtype = holders.schema[column]
        if dtype == pl.Boolean:
            flags.append(pl.col(column).fill_null(False).alias(f"{_HOLDER}{column}"))
        elif dtype.is_numeric():
            flags.append((pl.col(column) > 0).fill_null(False).alias(f"{_HOLDER}{column}"))
        else:
            raise ConfigError(
                f"holder column {column} must be numeric or boolean, got {dtype}; name a product "
                "column whose holders have a value > 0 or true",
                setting="screening.exclude_holders",
            )
    held = holders.select("customer_id", *flags)
    if held.get_column("customer_id").n_unique() == held.height:
        return held
    # A customer repeated in `holders` must not repeat candidate rows in the join.
    return held.group_by("customer_id").agg(pl.exclude("customer_id").any())


def _reason(rule: Screening, day: date) -> pl.Expr:
    """Return the expression naming the first rule that removes a row (null when none does)."""
    checks: list[tuple[pl.Expr, str]] = [(pl.col(_DUP), "duplicate")]
    checks += [
        (pl.col(f"{_SUPPRESSED}{name}"), f"suppressed:{name}")
        for name in _unique(rule.suppression_lists)
    ]
    if rule.complaint_months:
        cutoff = _months_before(day, rule.complaint_months)
        checks.append((pl.col(_LAST_COMPLAINT) >= cutoff, "complaint"))
    cap = rule.frequency_cap
    checks.append((pl.col(f"{_COUNT}{cap.days}") >= cap.contacts, "frequency_cap"))
    if rule.cooling_off_days:
        since = day - timedelta(days=rule.cooling_off_days)
        checks.append((pl.col(_LAST_CONTACT) >= since, "cooling_off"))
    checks += [
        (pl.col(f"{_HOLDER}{column}"), f"holder:{column}")
        for column in _unique(rule.exclude_holders)
    ]
    # The first check that holds names the row; a null fact (no contact, no entry) holds none.
    named = [pl.when(check).then(pl.lit(name)) for check, name in checks]
    return pl.coalesce(named).alias(_REASON)
