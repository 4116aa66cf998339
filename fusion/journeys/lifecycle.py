"""Lifecycle stages from the event log, per customer and day, and the cohort funnel.

A customer's milestones are the first day of each milestone event (download, first open,
register, bind card, first transaction, assets over 10k) that occurred by the end of the day and
that the bank had received by `now` (point in time: an event received later is not seen). The
stage on a day follows the furthest milestone reached (a later milestone implies the earlier):

    acquire    downloaded or opened, not registered
    activate   registered, card not bound
    grow       card bound (or a first transaction, or assets over 10k)

Activity is an app action by the customer: first open, register, log-in, bind card, first
transaction or a click on a touch. Day-N retention (N = 7, 30, 100) is activity in the seven days
ending N days after the download (days 1-7 for N = 7, 24-30, 94-100), over the customers whose
day N has passed by `as_of`; a stage conversion is reaching the next stage's milestone within
the horizon (100 days) of the download.

The funnel is counted by cohort week (the Monday of the download's week) and branch, and leaves
through the k-anonymity gate (`fusion.reports.disclosure.suppress`): a count under k, or one that
would let a reader recompute such a count, is withheld, and so is every rate computed from it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from contracts.errors import ConfigError
from contracts.journeys import MILESTONES, STAGE_OF_MILESTONE
from fusion.reports.disclosure import DEFAULT_K, Layout, check_k, suppress
from fusion.store import Store

__all__ = [
    "ACTIVITY_EVENTS",
    "FUNNEL_COUNTS",
    "HORIZON_DAYS",
    "RETENTION_DAYS",
    "branches",
    "cohort_funnel",
    "daily_stages",
    "milestones",
    "naive_utc",
    "stage_expr",
]

ACTIVITY_EVENTS = ("first_open", "register", "login", "bind_card", "first_transaction", "click")
RETENTION_DAYS = (7, 30, 100)
HORIZON_DAYS = 100
FUNNEL_COUNTS = (
    "customers",
    *(f"reached_{m}" for m in MILESTONES[1:]),
    *(f"{kind}_d{n}" for n in RETENTION_DAYS for kind in ("eligible", "retained")),
)
"""The funnel's count columns: cohort size, customers reaching each milestone, and per
retention day the customers whose day has passed and those of them retained."""


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_FIRSTS = ", ".join(
    f"min(occurred_at) FILTER (WHERE event = '{m}')::DATE AS {m}_on" for m in MILESTONES
)
_MILESTONES_SQL = f"""
SELECT customer_id, {_FIRSTS},
    max(occurred_at) FILTER (WHERE event IN ({_in(ACTIVITY_EVENTS)}))::DATE AS last_active_on
FROM journey_events
WHERE occurred_at < $end AND received_at <= $now
  AND event IN ({_in((*MILESTONES, *ACTIVITY_EVENTS))})
GROUP BY customer_id
"""  # noqa: S608 - constants only


def milestones(store: Store, day: date, *, now: datetime) -> pl.DataFrame:
    """Return one row per customer with an event by the end of `day`, received by `now`.

    Columns: customer_id i64, `<milestone>_on` date per milestone (null: not reached),
    last_active_on date, stage str (acquire / activate / grow), milestone str (the furthest).
    """
    end = datetime.combine(day + timedelta(days=1), datetime.min.time())
    frame = pl.from_arrow(
        store.execute(_MILESTONES_SQL, {"end": end, "now": naive_utc(now)}).fetch_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(stage_expr().alias("stage"), _furthest().alias("milestone")).cast(
        {"customer_id": pl.Int64}
    )


def stage_expr(day: date | pl.Expr | None = None) -> pl.Expr:
    """Return the lifecycle stage from the `<milestone>_on` columns, as of `day` (None: any)."""

    def reached(milestone: str) -> pl.Expr:
        on = pl.col(f"{milestone}_on")
        return on.is_not_null() if day is None else on.is_not_null() & (on <= day)

    grow = pl.any_horizontal(reached(m) for m, s in STAGE_OF_MILESTONE.items() if s == "grow")
    activate = pl.any_horizontal(
        reached(m) for m, s in STAGE_OF_MILESTONE.items() if s == "activate"
    )
    return (
        pl.when(grow)
        .then(pl.lit("grow"))
        .when(activate)
        .then(pl.lit("activate"))
        .otherwise(pl.lit("acquire"))
    )


def _furthest() -> pl.Expr:
    chain: Any = pl.when(pl.col(f"{MILESTONES[-1]}_on").is_not_null()).then(pl.lit(MILESTONES[-1]))
    for milestone in reversed(MILESTONES[:-1]):
        chain = chain.when(pl.col(f"{milestone}_on").is_not_null()).then(pl.lit(milestone))
    return chain.otherwise(None)


def daily_stages(
    store: Store, start: date, end: date, *, now: datetime, customers: list[int] | None = None
) -> pl.DataFrame:
    """Return customer_id, day, stage, milestone for every day in [start, end] from the first
    event on (one row per customer and day: for an audience or a day range, not the base).
    """
    if end < start:
        raise ConfigError(f"end {end} is before start {start}; give start <= end", setting="end")
    frame = milestones(store, end, now=now)
    if customers is not None:
        frame = frame.filter(pl.col("customer_id").is_in(customers))
    days = pl.date_range(start, end, "1d", eager=True).alias("day")
    first = pl.min_horizontal(pl.col(f"{m}_on") for m in MILESTONES)
    expanded = frame.join(days.to_frame(), how="cross").filter(first <= pl.col("day"))
    furthest: Any = pl.when(pl.lit(value=False)).then(pl.lit(None, dtype=pl.String))
    for milestone in reversed(MILESTONES):
        on = pl.col(f"{milestone}_on")
        furthest = furthest.when(on.is_not_null() & (on <= pl.col("day"))).then(pl.lit(milestone))
    return expanded.select(
        "customer_id", "day", stage_expr(pl.col("day")).alias("stage"), furthest.alias("milestone")
    ).sort("customer_id", "day")


def branches(store: Store) -> pl.DataFrame:
    """Return customer_id, branch_id: each customer's branch in its newest extract."""
    frame = pl.from_arrow(
        store.execute(
            "SELECT customer_id, arg_max(branch_id, coalesce(snapshot_date, DATE '1900-01-01')) "
            "AS branch_id FROM customers GROUP BY customer_id"
        ).fetch_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame.cast({"customer_id": pl.Int64, "branch_id": pl.String})


_RETAINED = ", ".join(
    f"bool_or(date_diff('day', m.download_on, e.occurred_at::DATE) BETWEEN {max(1, n - 6)} "
    f"AND {n}) AS retained_d{n}"
    for n in RETENTION_DAYS
)
_RETAINED_SQL = f"""
SELECT e.customer_id, {_RETAINED}
FROM journey_events AS e JOIN {{view}} AS m USING (customer_id)
WHERE e.occurred_at < $end AND e.received_at <= $now AND e.event IN ({_in(ACTIVITY_EVENTS)})
GROUP BY e.customer_id
"""  # noqa: S608 - constants and a view name made here


def cohort_funnel(store: Store, *, as_of: date, now: datetime, k: int = DEFAULT_K) -> pl.DataFrame:
    """Return the funnel by cohort week and branch, k-anonymised.

    Columns: cohort_week date, branch_id str, the FUNNEL_COUNTS, the rates `rate_<milestone>`
    (of the cohort) and `conversion_<stage>` (activate: registered of the cohort, grow: card
    bound of the registered), `retention_d<N>` (retained of eligible), then `suppressed_cells`
    and `suppressed`. Withheld cells are null.
    """
    check_k(k)
    base = milestones(store, as_of, now=now).filter(pl.col("download_on").is_not_null())
    horizon = pl.col("download_on") + timedelta(days=HORIZON_DAYS)
    with store.registered(base.select("customer_id", "download_on")) as view:
        end = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
        retained = pl.from_arrow(
            store.execute(
                _RETAINED_SQL.format(view=view), {"end": end, "now": naive_utc(now)}
            ).fetch_arrow_table()
        )
    assert isinstance(retained, pl.DataFrame)
    frame = (
        base.join(retained.cast({"customer_id": pl.Int64}), on="customer_id", how="left")
        .join(branches(store), on="customer_id", how="left")
        .with_columns(
            pl.col("download_on").dt.truncate("1w").alias("cohort_week"),
            pl.col("branch_id").fill_null("unknown"),
        )
    )
    counts = [pl.len().alias("customers")]
    for milestone in MILESTONES[1:]:
        on = pl.col(f"{milestone}_on")
        counts.append((on.is_not_null() & (on <= horizon)).sum().alias(f"reached_{milestone}"))
    for n in RETENTION_DAYS:
        eligible = pl.col("download_on") + timedelta(days=n) <= as_of
        counts.append(eligible.sum().alias(f"eligible_d{n}"))
        retained_n = eligible & pl.col(f"retained_d{n}").fill_null(False)
        counts.append(retained_n.sum().alias(f"retained_d{n}"))
    table = frame.group_by("cohort_week", "branch_id").agg(counts).sort("cohort_week", "branch_id")
    table = table.with_columns(pl.col(c).cast(pl.Int64) for c in FUNNEL_COUNTS)
    rates = [
        *((f"rate_{m}", f"reached_{m}", "customers") for m in MILESTONES[1:]),
        ("conversion_activate", "reached_register", "customers"),
        ("conversion_grow", "reached_bind_card", "reached_register"),
        *((f"retention_d{n}", f"retained_d{n}", f"eligible_d{n}") for n in RETENTION_DAYS),
    ]
    table = table.with_columns(
        pl.when(pl.col(d) > 0).then(pl.col(s) / pl.col(d)).alias(name) for name, s, d in rates
    )
    layout = Layout(
        counts=FUNNEL_COUNTS,
        complements=tuple((f"not_{m}", "customers", f"reached_{m}") for m in MILESTONES[1:]),
        derived=tuple((name, (s, d)) for name, s, d in rates),
    )
    return suppress(table, layout, k=k)


def naive_utc(moment: datetime) -> datetime:
    """Return `moment` as the store keeps timestamps: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
