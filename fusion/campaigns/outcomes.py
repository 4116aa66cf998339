"""Funnel events in, checked row by row: what a campaign's channels say happened, once each.

A campaign tool, a call centre's file or POST /v1/outcomes reports events

    campaign_id str, customer_id i64, event str, occurred_at datetime (naive UTC),
    amount f64 (converted only, else null), event_key str (null: derived)

where `event` is one of `EVENTS` (delivered, contacted, reached, responded, converted,
complained, opted_out). Every row is checked and either stored in `outcome_events` or refused
with its reason; one bad row never costs the good rows of its request, and none is dropped
without a word. A row is refused when

    its event is unknown, its occurred_at is missing or past the clock plus the allowed skew
    (late events are fine), its amount is negative, NaN or infinite or sits on an event other
    than converted, its campaign is unknown, its customer is not in `customers`, the customer
    is not assigned to the campaign, or the customer is in the control arm and the event is a
    contact (delivered, contacted, reached, complained, opted_out): control customers are never
    contacted, while their responded and converted events are what the control measures.

A resent event is harmless: `event_key` (given, or the SHA-256 of campaign|customer|event|
occurred_at|amount) already stored counts as `already_recorded`, and copies inside one request
are stored once. An opted_out event also puts the customer on the `opt-out` suppression list;
complained events stay in `outcome_events`, where the screening's complaint rule reads them.
Everything one call writes is one transaction: a crash leaves the store as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from contracts.errors import ConfigError, StoreError
from fusion.campaigns.declaration import EVENTS
from fusion.store import Store

__all__ = [
    "CONTACT_EVENTS",
    "EVENT_COLUMNS",
    "EVENT_SCHEMA",
    "OPT_OUT_LIST",
    "REQUIRED_EVENT_COLUMNS",
    "ROW",
    "EventsRecorded",
    "occurred_times",
    "read_event_file",
    "record_events",
    "refused_rows",
    "store_flags",
    "stripped_text",
]

REQUIRED_EVENT_COLUMNS = ("campaign_id", "customer_id", "event", "occurred_at")
EVENT_COLUMNS = (*REQUIRED_EVENT_COLUMNS, "amount", "event_key")
EVENT_SCHEMA = pl.Schema(
    [
        ("campaign_id", pl.String()),
        ("customer_id", pl.Int64()),
        ("event", pl.String()),
        ("occurred_at", pl.Datetime("us")),  # naive UTC
        ("amount", pl.Float64()),
        ("event_key", pl.String()),
    ]
)
"""The events `record_events` takes, as a frame: one row per event."""
# Events only a contact makes: a control customer is never contacted, so never has one.
CONTACT_EVENTS = ("delivered", "contacted", "reached", "complained", "opted_out")
OPT_OUT_LIST = "opt-out"

# What to write in each column, for the error that names a missing or unreadable one.
_WRITE = {
    "campaign_id": "the campaign's id, e.g. rescue-call-2026q3",
    "customer_id": "the bank's internal customer id, an integer",
    "event": f"one of {', '.join(EVENTS)}",
    "occurred_at": "an ISO 8601 date-time, UTC unless it has an offset, e.g. "
    "2026-10-01T17:30:00 or 2026-10-01T17:30:00+08:00",
    "amount": "a number >= 0 on converted events, empty on the others",
    "event_key": "the sender's unique id of the event, or empty to derive one",
}
_REFUSED_SCHEMA = {"row": pl.Int64, "customer_id": pl.Int64, "reason": pl.String}
ROW = "__row"
"""The input row number, 0-based, while rows are checked (a name no event column can take)."""
_KEY_TEXT = "__key_text"


@dataclass(frozen=True)
class EventsRecorded:
    """What one call of `record_events` did with its rows.

    `recorded + already_recorded + refused.height` is the number of rows sent. `refused` has
    one row per refused input row: row i64 (0-based), customer_id i64 (null when it was not an
    integer), reason str.
    """

    recorded: int
    already_recorded: int
    refused: pl.DataFrame


def record_events(
    store: Store,
    events: pl.DataFrame,
    *,
    source: str,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
) -> EventsRecorded:
    """Return what became of `events`: stored, already stored, or refused with a reason.

    `source` names the sender (a token id, a file name) in `outcome_events.source`; `now` is the
    receiving clock (naive UTC, or aware). Everything runs in one `store.transaction()` (joining
    one already open); a thread other than the store's own passes `store.on_cursor(cursor)`.
    Two calls must not run at once on one store file (each would find the other's new keys
    absent): the service holds its outcomes lock around this.
    """
    if store.read_only:
        raise StoreError(
            f"{store.path} is open read-only; outcome events are written by the one writing "
            "process (the fusion service or CLI)",
            path=str(store.path),
        )
    if not source.strip():
        raise ConfigError("source must name the sender of the events, got ''", setting="source")
    if clock_skew < timedelta(0):
        raise ConfigError(f"clock_skew must be >= 0, got {clock_skew}", setting="clock_skew")
    rows = _checked(_typed(events), latest=_naive_utc(now) + clock_skew)
    with store.transaction():
        rows = _store_checked(store, rows)
        accepted = rows.filter(pl.col("reason").is_null())
        new, already = _new_events(store, accepted)
        if not new.is_empty():
            _insert(store, new, received_at=_naive_utc(now), source=source)
    return EventsRecorded(recorded=new.height, already_recorded=already, refused=refused_rows(rows))


def refused_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Return the checked rows whose `reason` is set: row i64 (0-based), customer_id i64,
    reason str, by row."""
    return (
        rows.filter(pl.col("reason").is_not_null())
        .select(pl.col(ROW).alias("row"), "customer_id", "reason")
        .sort("row")
        .cast(_REFUSED_SCHEMA)  # type: ignore[arg-type]
    )


def read_event_file(path: Path) -> pl.DataFrame:
    """Return the events of a CSV or Parquet file, its columns as written (checked by name).

    Values are not converted here: `record_events` refuses a row whose value is not what its
    column needs, naming the row. Raises ConfigError for a missing or unreadable file and for
    a missing or unknown column, saying what to write.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ConfigError(
            f"{path.name} is neither .csv nor .parquet; write the events as a CSV file with a "
            f"header row ({', '.join(EVENT_COLUMNS)}) or as Parquet",
            setting="path",
        )
    if not path.is_file():
        raise ConfigError(f"there is no events file at {path}; check the path", setting="path")
    try:
        if suffix == ".csv":
            # Text as written: a bad value is one refused row, never a failed file.
            frame = pl.read_csv(path, infer_schema=False)
        else:
            frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise ConfigError(
            f"cannot read the events file {path.name} ({error.__class__.__name__}); write a "
            "UTF-8 CSV with a header row, or a Parquet file",
            setting="path",
        ) from None
    _check_columns(frame.columns, what=f"the events file {path.name}")
    return frame


def _check_columns(columns: list[str], *, what: str) -> None:
    """Raise ConfigError naming the first missing or unknown event column."""
    for name in REQUIRED_EVENT_COLUMNS:
        if name not in columns:
            raise ConfigError(
                f"{what} has no column {name}; add it with {_WRITE[name]} in every row "
                f"(columns: {', '.join(EVENT_COLUMNS)}; amount and event_key may be left out)",
                setting=name,
            )
    unknown = [name for name in columns if name not in EVENT_COLUMNS]
    if unknown:
        shown = ", ".join(name[:40] for name in unknown[:5])
        raise ConfigError(
            f"{what} has column(s) {shown} that events do not have; remove them or correct "
            f"the spelling (columns: {', '.join(EVENT_COLUMNS)})",
            setting="columns",
        )


# -- values ------------------------------------------------------------------------------------


def _naive_utc(moment: datetime) -> datetime:
    """Return `moment` as the store keeps timestamps: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _typed(events: pl.DataFrame) -> pl.DataFrame:
    """Return the events with typed columns, the row number and flags of unreadable values."""
    _check_columns(events.columns, what="the events frame")
    frame = events.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    for name in ("amount", "event_key"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    schema = frame.schema
    customer, customer_given = _integers(schema["customer_id"])
    amount, amount_given = _numbers(schema["amount"])
    return frame.select(
        ROW,
        _text("campaign_id", schema["campaign_id"]),
        customer.alias("customer_id"),
        customer_given.alias("customer_given"),
        _text("event", schema["event"]),
        _times(schema["occurred_at"]).alias("occurred_at"),
        amount.alias("amount"),
        amount_given.alias("amount_given"),
        _text("event_key", schema["event_key"]),
    )


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Return column `name` as stripped text, an empty value as null."""
    if not (dtype == pl.String or dtype == pl.Null or dtype == pl.Categorical):
        raise ConfigError(
            f"the events column {name} holds {dtype}, not text; write {_WRITE[name]}",
            setting=name,
        )
    return stripped_text(name)


def stripped_text(name: str) -> pl.Expr:
    """Return column `name` as text without surrounding blanks, an empty value as null."""
    stripped = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped).alias(name)


def _integers(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """Return customer_id as Int64 (null where it is not a whole number) and 'was given'."""
    column = pl.col("customer_id")
    if dtype.is_integer():
        value = column.cast(pl.Int64, strict=False)
    elif dtype.is_float():
        whole = column.is_finite() & (column == column.floor())
        value = pl.when(whole).then(column).otherwise(None).cast(pl.Int64, strict=False)
    elif dtype == pl.String or dtype == pl.Null:
        value = column.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
    else:
        raise ConfigError(
            f"the events column customer_id holds {dtype}; write {_WRITE['customer_id']}",
            setting="customer_id",
        )
    given = column.is_not_null()
    if dtype == pl.String:
        given = given & (column.str.strip_chars() != "")
    return value, given


def _numbers(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """Return amount as Float64 (null where it is not a number) and 'was given'."""
    column = pl.col("amount")
    if dtype.is_numeric():
        return column.cast(pl.Float64, strict=False), column.is_not_null()
    if dtype == pl.String or dtype == pl.Null:
        text = column.cast(pl.String).str.strip_chars()
        return text.cast(pl.Float64, strict=False), text.is_not_null() & (text != "")
    raise ConfigError(
        f"the events column amount holds {dtype}; write {_WRITE['amount']}", setting="amount"
    )


def _times(dtype: pl.DataType) -> pl.Expr:
    """Return occurred_at as naive UTC microseconds; null where it is no date-time."""
    if not (isinstance(dtype, pl.Datetime) or dtype == pl.String or dtype == pl.Null):
        raise ConfigError(
            f"the events column occurred_at holds {dtype}; write {_WRITE['occurred_at']}",
            setting="occurred_at",
        )
    return occurred_times(dtype)


def occurred_times(dtype: pl.DataType) -> pl.Expr:
    """Return occurred_at (of `dtype`) as naive UTC microseconds; null where it is no
    date-time. Text is ISO 8601, UTC unless it has an offset; any other type is read as text."""
    column = pl.col("occurred_at")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return column.cast(pl.Datetime("us"))
    text = column.cast(pl.String).str.strip_chars().str.replace(" ", "T", literal=True)
    with_offset = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    ).dt.replace_time_zone(None)
    naive = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False)
    return pl.coalesce(naive, with_offset)


# -- checks ------------------------------------------------------------------------------------


def _checked(frame: pl.DataFrame, *, latest: datetime) -> pl.DataFrame:
    """Return `frame` with `reason`: why the row is refused on its own values, else null."""
    event, amount = pl.col("event"), pl.col("amount")
    reason = (
        pl.when(pl.col("customer_id").is_null() & pl.col("customer_given"))
        .then(pl.lit("customer_id is not a whole number; send the bank's customer id"))
        .when(pl.col("customer_id").is_null() | (pl.col("customer_id") < 0))
        .then(pl.lit("customer_id is missing or negative; send the bank's customer id"))
        .when(pl.col("campaign_id").is_null())
        .then(pl.lit("campaign_id is missing; send the campaign's id"))
        .when(event.is_null() | ~event.is_in(EVENTS))
        .then(pl.lit(f"unknown event; send one of {', '.join(EVENTS)}"))
        .when(pl.col("occurred_at").is_null())
        .then(pl.lit(f"occurred_at is missing or not a date-time; send {_WRITE['occurred_at']}"))
        .when(pl.col("occurred_at") > latest)
        .then(
            pl.lit(
                "occurred_at is in the future (past the clock plus its allowed skew); send an "
                "event once it happened, and check the sender's clock"
            )
        )
        .when(pl.col("amount_given") & (event != "converted"))
        .then(
            pl.format(
                "a {} event carries no amount; only converted events have one (leave it empty)",
                event,
            )
        )
        .when(pl.col("amount_given") & (amount.is_null() | ~amount.is_finite() | (amount < 0)))
        .then(pl.lit("amount is not a finite number >= 0; send the converted amount, e.g. 120.5"))
        .otherwise(None)
    )
    return frame.with_columns(reason.alias("reason"))


_STORE_CHECKS = """
WITH i AS (SELECT "{row}" AS row_number, campaign_id, customer_id FROM {view}),
known AS (
    SELECT DISTINCT customer_id FROM customers
    WHERE customer_id IN (SELECT customer_id FROM i)
),
arms AS (
    -- Planning keeps one arm per campaign and customer; were there two, control wins, so
    -- a contact is still refused.
    SELECT campaign_id, customer_id, bool_or(arm = 'control') AS control
    FROM assignments
    WHERE customer_id IN (SELECT customer_id FROM i)
    GROUP BY campaign_id, customer_id
)
SELECT
    i.row_number AS "{row}",
    c.campaign_id IS NOT NULL AS campaign_known,
    k.customer_id IS NOT NULL AS customer_known,
    a.control AS control
FROM i
LEFT JOIN campaigns AS c ON c.campaign_id = i.campaign_id
LEFT JOIN known AS k ON k.customer_id = i.customer_id
LEFT JOIN arms AS a ON a.campaign_id = i.campaign_id AND a.customer_id = i.customer_id
"""


def _store_checked(store: Store, rows: pl.DataFrame) -> pl.DataFrame:
    """Return `rows` with the reasons the store gives: campaign, customer, assignment, arm."""
    joined = store_flags(store, rows, columns=("campaign_id", "customer_id"), query=_STORE_CHECKS)
    if joined is None:
        return rows
    reason = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(~pl.col("campaign_known"))
        .then(pl.lit("unknown campaign; create it first or check the campaign_id"))
        .when(~pl.col("customer_known"))
        .then(pl.lit("unknown customer: not in the bank's customers"))
        .when(pl.col("control").is_null())
        .then(pl.lit("the customer is not assigned to this campaign"))
        .when(pl.col("control") & pl.col("event").is_in(CONTACT_EVENTS))
        .then(
            pl.format(
                "a {} event for a control customer: control customers are never contacted "
                "(only their responded and converted events are recorded); check the sender's "
                "list against the delivered file",
                pl.col("event"),
            )
        )
        .otherwise(None)
    )
    return joined.with_columns(reason.alias("reason")).drop(
        "campaign_known", "customer_known", "control"
    )


def store_flags(
    store: Store, rows: pl.DataFrame, *, columns: tuple[str, ...], query: str
) -> pl.DataFrame | None:
    """Return `rows` joined with what `query` finds in the store for the rows not refused yet,
    or None when every row is refused already.

    `query` reads `{view}` (those rows: ROW and `columns`) and returns `"{row}"` (ROW) and its
    flags; a refused row's flags are null.
    """
    pending = rows.filter(pl.col("reason").is_null()).select(ROW, *columns)
    if pending.is_empty():
        return None
    with store.registered(pending) as view:
        # `view` is a name made here; the row column's name is a constant.
        found = pl.from_arrow(store.execute(query.format(view=view, row=ROW)).fetch_arrow_table())
    assert isinstance(found, pl.DataFrame)
    return rows.join(found, on=ROW, how="left", maintain_order="left")


# -- writing -----------------------------------------------------------------------------------

_KEYS = """
WITH k AS (
    SELECT "{row}", coalesce(event_key, sha256({key_text})) AS event_key FROM {view}
)
SELECT k.*, k.event_key IN (SELECT event_key FROM outcome_events) AS stored FROM k
"""


def _new_events(store: Store, accepted: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Return the accepted rows not stored yet (one per key, with their key) and how many
    accepted rows were stored already or repeat a key of this request."""
    if accepted.is_empty():
        return accepted, 0
    # The derived key: ISO 8601 with microseconds, and polars' shortest text of the amount.
    key_text = pl.concat_str(
        pl.col("campaign_id"),
        pl.col("customer_id").cast(pl.String),
        pl.col("event"),
        pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
        pl.col("amount").cast(pl.String).fill_null(""),
        separator="|",
    )
    keyed_input = accepted.select(ROW, "event_key", key_text.alias(_KEY_TEXT))
    with store.registered(keyed_input) as view:
        keys = pl.from_arrow(
            store.execute(_KEYS.format(view=view, row=ROW, key_text=_KEY_TEXT)).fetch_arrow_table()
        )
    assert isinstance(keys, pl.DataFrame)
    keyed = accepted.drop("event_key").join(keys, on=ROW, how="left", maintain_order="left")
    new = keyed.filter(~pl.col("stored")).unique(
        subset="event_key", keep="first", maintain_order=True
    )
    return new, accepted.height - new.height


# One row per customer and campaign of the new opted_out events, from the day of the first;
# a customer already on the list from that day on, with no end, is not added again.
_INSERT_OPT_OUTS = """
INSERT INTO suppressions (list_name, customer_id, since, until, reason, source)
SELECT $list, n.customer_id, n.since, NULL, 'opted out in campaign ' || n.campaign_id,
       'outcome_events'
FROM (
    SELECT customer_id, campaign_id, min(occurred_at)::DATE AS since
    FROM {view}
    WHERE event = 'opted_out'
    GROUP BY customer_id, campaign_id
) AS n
WHERE NOT EXISTS (
    SELECT 1 FROM suppressions AS s
    WHERE s.list_name = $list AND s.customer_id = n.customer_id
      AND s.since <= n.since AND s.until IS NULL
)
"""


def _insert(store: Store, new: pl.DataFrame, *, received_at: datetime, source: str) -> None:
    """Insert the new events, and their opt-outs into the suppression list."""
    rows = new.select(
        "event_key",
        "campaign_id",
        "customer_id",
        "event",
        "amount",
        "occurred_at",
        pl.lit(received_at, dtype=pl.Datetime("us")).alias("received_at"),
        pl.lit(source, dtype=pl.String).alias("source"),
    )
    store.insert_frame("outcome_events", rows)
    opted_out = rows.filter(pl.col("event") == "opted_out")
    if not opted_out.is_empty():
        with store.registered(opted_out) as view:
            store.execute(_INSERT_OPT_OUTS.format(view=view), {"list": OPT_OUT_LIST})
