"""The journey event log in: customers' app and account milestones, log-ins and answers to
touches, checked row by row and stored once each.

Columns (contracts.journeys.JOURNEY_EVENT_LOG; a file or an API body may send text):

    event_key str (null: derived), customer_id i64, event str, occurred_at datetime (naive UTC,
    or text in ISO 8601 with or without an offset), touch_id str (answers only)

A row is refused, with its reason, when its customer id is not a whole number >= 0 or not in
the bank's customers, its event is not one of JOURNEY_EVENTS, its occurred_at is missing or past
the clock plus the allowed skew, an answer (exposure, click, opt_out) names no touch or a touch
that was not delivered to that customer, or another event names a touch. One bad row never costs
the good rows of its call.

A resent event is harmless: an `event_key` already stored (given, or the SHA-256 of
customer|event|occurred_at|touch_id) counts as `already_recorded`, and copies inside one call are
stored once. Each row keeps `received_at` = `now`, so every read is point in time (what the bank
knew by then). An opt_out answer also puts the customer on the `opt-out` suppression list from
that day, which every campaign and strategy screens against. One call is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from contracts.errors import ConfigError, StoreError
from contracts.journeys import ANSWER_EVENTS, JOURNEY_EVENT_LOG, JOURNEY_EVENTS
from fusion.campaigns.outcomes import (
    OPT_OUT_LIST,
    ROW,
    occurred_times,
    refused_rows,
    store_flags,
    stripped_text,
)
from fusion.journeys.lifecycle import naive_utc
from fusion.store import Store

__all__ = ["REQUIRED_COLUMNS", "EventsLoaded", "load_events", "read_events_file"]

REQUIRED_COLUMNS = ("customer_id", "event", "occurred_at")


@dataclass(frozen=True)
class EventsLoaded:
    """What one `load_events` call did: `recorded + already_recorded + refused.height` rows.

    `refused`: row i64 (0-based), customer_id i64 (null when unreadable), reason str.
    """

    recorded: int
    already_recorded: int
    refused: pl.DataFrame

    def to_dict(self) -> dict[str, object]:
        """Return the outcome as JSON-ready data (refused rows listed)."""
        return {
            "recorded": self.recorded,
            "already_recorded": self.already_recorded,
            "refused": self.refused.to_dicts(),
        }


def read_events_file(path: Path) -> pl.DataFrame:
    """Return the events of a CSV (text as written) or Parquet file; ConfigError if unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq") or not path.is_file():
        raise ConfigError(
            f"{path.name} is not a CSV or Parquet file that exists; write the events with a "
            f"header row ({', '.join(JOURNEY_EVENT_LOG.columns)})",
            setting="path",
        )
    try:
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise ConfigError(
            f"cannot read the events file {path.name} ({error.__class__.__name__}); write a "
            "UTF-8 CSV with a header row, or a Parquet file",
            setting="path",
        ) from None


def load_events(
    store: Store,
    events: pl.DataFrame | Path,
    *,
    source: str,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
) -> EventsLoaded:
    """Return what became of the events: stored, already stored, or refused with a reason.

    `events` is a frame (JOURNEY_EVENT_LOG's columns; event_key and touch_id may be left out)
    or the path of a CSV or Parquet file. `source` names the sender; `now` is the receiving
    clock. Everything is one transaction.
    """
    if store.read_only:
        raise StoreError(
            f"{store.path} is open read-only; events are loaded by the writer", path=str(store.path)
        )
    if not source.strip():
        raise ConfigError("source must name the sender of the events, got ''", setting="source")
    frame = read_events_file(events) if isinstance(events, Path) else events
    received = naive_utc(now)
    rows = _checked(_typed(frame), latest=received + clock_skew)
    with store.transaction():
        rows = _store_checked(store, rows)
        accepted = rows.filter(pl.col("reason").is_null())
        new = _new(store, accepted)
        if new.height:
            store.insert_frame(
                "journey_events",
                new.select(
                    *JOURNEY_EVENT_LOG.columns,
                    pl.lit(received, dtype=pl.Datetime("us")).alias("received_at"),
                    pl.lit(source).alias("source"),
                ),
            )
            _suppress_opt_outs(store, new)
    return EventsLoaded(new.height, accepted.height - new.height, refused_rows(rows))


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Return the events with typed columns (null where unreadable) and the row number."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in JOURNEY_EVENT_LOG.columns]
    if missing or unknown:
        raise ConfigError(
            f"the events have {'no column ' + ', '.join(missing) if missing else ''}"
            f"{'; ' if missing and unknown else ''}"
            f"{'unknown column(s) ' + ', '.join(c[:40] for c in unknown[:5]) if unknown else ''}"
            f"; send the columns {', '.join(JOURNEY_EVENT_LOG.columns)} (event_key and touch_id "
            "may be left out)",
            setting="columns",
        )
    for name in ("event_key", "touch_id"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    schema = frame.schema
    customer = pl.col("customer_id")
    if schema["customer_id"].is_integer():
        customer_id = customer.cast(pl.Int64, strict=False)
    else:
        text = customer.cast(pl.String).str.strip_chars()
        customer_id = text.cast(pl.Int64, strict=False)
    return frame.with_row_index(ROW).select(
        pl.col(ROW).cast(pl.Int64),
        customer_id.alias("customer_id"),
        *(stripped_text(c) for c in ("event", "event_key", "touch_id")),
        occurred_times(schema["occurred_at"]).alias("occurred_at"),
    )


def _checked(frame: pl.DataFrame, *, latest: datetime) -> pl.DataFrame:
    """Return `frame` with `reason`: why the row is refused on its own values, else null."""
    event, touch = pl.col("event"), pl.col("touch_id")
    answer = event.is_in(ANSWER_EVENTS)
    reason = (
        pl.when(pl.col("customer_id").is_null() | (pl.col("customer_id") < 0))
        .then(pl.lit("customer_id is missing or not a whole number >= 0; send the bank's id"))
        .when(event.is_null() | ~event.is_in(JOURNEY_EVENTS))
        .then(pl.lit(f"unknown event; send one of {', '.join(JOURNEY_EVENTS)}"))
        .when(pl.col("occurred_at").is_null())
        .then(
            pl.lit("occurred_at is missing or not an ISO 8601 date-time, e.g. 2026-10-01T17:30:00")
        )
        .when(pl.col("occurred_at") > latest)
        .then(pl.lit("occurred_at is in the future; send an event once it happened"))
        .when(answer & touch.is_null())
        .then(pl.format("a {} answers a touch: send its touch_id", event))
        .when(~answer & touch.is_not_null())
        .then(pl.format("a {} event answers no touch: leave touch_id empty", event))
        .otherwise(None)
    )
    return frame.with_columns(reason.alias("reason"))


_STORE_CHECKS = """
SELECT i."{row}",
    i.customer_id IN (SELECT customer_id FROM customers) AS customer_known,
    i.touch_id IS NULL OR EXISTS (
        SELECT 1 FROM journey_touches AS t
        WHERE t.touch_id = i.touch_id AND t.customer_id = i.customer_id AND t.delivered
    ) AS touch_known
FROM {view} AS i
"""


def _store_checked(store: Store, rows: pl.DataFrame) -> pl.DataFrame:
    joined = store_flags(store, rows, columns=("customer_id", "touch_id"), query=_STORE_CHECKS)
    if joined is None:
        return rows
    reason = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(~pl.col("customer_known"))
        .then(pl.lit("unknown customer: not in the bank's customers"))
        .when(~pl.col("touch_known"))
        .then(pl.lit("touch_id names no touch delivered to this customer; check the channel's id"))
        .otherwise(None)
    )
    return joined.with_columns(reason.alias("reason")).drop("customer_known", "touch_known")


def _new(store: Store, accepted: pl.DataFrame) -> pl.DataFrame:
    """Return the accepted rows whose key is not stored yet, one per key, keys filled in."""
    if accepted.is_empty():
        return accepted
    derived = pl.concat_str(
        pl.col("customer_id").cast(pl.String),
        pl.col("event"),
        pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
        pl.col("touch_id").fill_null(""),
        separator="|",
    )
    with store.registered(accepted.select(ROW, "event_key", derived.alias("__text"))) as view:
        keys = pl.from_arrow(
            store.execute(
                f'SELECT "{ROW}", coalesce(event_key, sha256(__text)) AS event_key '  # noqa: S608
                f"FROM {view}"
            ).fetch_arrow_table()
        )
    assert isinstance(keys, pl.DataFrame)
    keyed = accepted.drop("event_key").join(keys, on=ROW, maintain_order="left")
    unique = keyed.unique(subset="event_key", keep="first", maintain_order=True)
    with store.registered(unique.select(ROW, "event_key")) as view:
        stored = pl.from_arrow(
            store.execute(
                f'SELECT "{ROW}" FROM {view} WHERE event_key IN '  # noqa: S608
                "(SELECT event_key FROM journey_events)"
            ).fetch_arrow_table()
        )
    assert isinstance(stored, pl.DataFrame)
    return unique.join(stored, on=ROW, how="anti", maintain_order="left")


_OPT_OUTS = """
INSERT INTO suppressions (list_name, customer_id, since, until, reason, source)
SELECT $list, n.customer_id, n.since, NULL, 'opted out of a journey touch', 'journey_events'
FROM (
    SELECT customer_id, min(occurred_at)::DATE AS since FROM {view}
    WHERE event = 'opt_out' GROUP BY customer_id
) AS n
WHERE NOT EXISTS (
    SELECT 1 FROM suppressions AS s
    WHERE s.list_name = $list AND s.customer_id = n.customer_id
      AND s.since <= n.since AND s.until IS NULL
)
"""


def _suppress_opt_outs(store: Store, new: pl.DataFrame) -> None:
    opted = new.filter(pl.col("event") == "opt_out").select("customer_id", "event", "occurred_at")
    if opted.height:
        with store.registered(opted) as view:
            store.execute(_OPT_OUTS.format(view=view), {"list": OPT_OUT_LIST})
