"""Funnel events on a real store: every refusal by row and reason, idempotence, opt-outs,
files, and one transaction (a killed writer leaves nothing)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.campaigns.outcomes import (
    EVENT_SCHEMA,
    EventsRecorded,
    read_event_file,
    record_events,
)
from fusion.store import Store, StoreConfig
from tests.support.stores import store_config

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 10, 2, 9, 0)
TREATMENT = (1, 2, 3, 4)
CONTROL = (5, 6, 7, 8)
UNASSIGNED = (9, 10)  # customers of the bank in no campaign
SCHEMA = EVENT_SCHEMA


def seed(store: Store) -> None:
    """Customers 1-10 (B001); campaign c1 with 1-4 in treatment, 5-8 in control; campaign c2."""
    store.execute(
        "INSERT INTO customers (customer_id, branch_id) SELECT range, 'B001' FROM range(1, 11)"
    )
    for campaign in ("c1", "c2"):
        store.execute(
            "INSERT INTO campaigns VALUES (?, 1, '{}', ?, 'ab', ?, 'test', ?)",
            [campaign, b"\x00" * 32, NOW, NOW],
        )
    arms = [(c, "treatment") for c in TREATMENT] + [(c, "control") for c in CONTROL]
    store.insert_frame(
        "assignments",
        pl.DataFrame(
            {
                "campaign_id": "c1",
                "customer_id": [c for c, _ in arms],
                "plan_id": "p1",
                "stage": "ab",
                "arm": [a for _, a in arms],
                "branch_id": "B001",
                "stratum": "B001|1",
                "window_start": date(2026, 9, 1),
                "window_end": date(2026, 9, 29),
                "contact_day": [date(2026, 9, 2) if a == "treatment" else None for _, a in arms],
                "assigned_at": NOW,
            }
        ),
    )


@pytest.fixture
def config(tmp_path: Path, ext_dir: Path) -> StoreConfig:
    return store_config(tmp_path, ext_dir)


@pytest.fixture
def key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def store(config: StoreConfig, key: str) -> Iterator[Store]:
    with Store.open(config, key=key) as opened:
        seed(opened)
        yield opened


def events(*rows: tuple[Any, ...]) -> pl.DataFrame:
    """Rows of (campaign, customer, event, occurred_at[, amount[, event_key]])."""
    full = [(*row, *(None,) * (6 - len(row))) for row in rows]
    return pl.DataFrame(full, schema=SCHEMA, orient="row")


def record(store: Store, frame: pl.DataFrame, **kwargs: Any) -> EventsRecorded:
    return record_events(store, frame, source=kwargs.pop("source", "test"), now=NOW, **kwargs)


def stored(store: Store, sql: str = "SELECT customer_id, event FROM outcome_events") -> list[Any]:
    return sorted(store.execute(sql).fetchall())


def reasons(result: EventsRecorded) -> dict[int, str]:
    return dict(zip(result.refused["row"], result.refused["reason"], strict=True))


DAY = datetime(2026, 9, 3, 10, 30)


def test_good_events_are_stored_with_the_receiving_time_and_source(store: Store):
    frame = events(
        ("c1", 1, "delivered", DAY),
        ("c1", 1, "contacted", DAY + timedelta(hours=1)),
        ("c1", 1, "reached", DAY + timedelta(hours=1)),
        ("c1", 1, "responded", DAY + timedelta(days=2)),
        ("c1", 1, "converted", DAY + timedelta(days=3), 1200.5),
        ("c1", 5, "converted", DAY, 80.0),  # a control customer's organic conversion counts
        ("c1", 6, "responded", DAY),
    )
    result = record(store, frame, source="tok-1")
    assert (result.recorded, result.already_recorded, result.refused.height) == (7, 0, 0)
    assert result.refused.schema == pl.Schema(
        {"row": pl.Int64, "customer_id": pl.Int64, "reason": pl.String}
    )
    rows = stored(
        store,
        "SELECT customer_id, event, amount, occurred_at, received_at, source, length(event_key) "
        "FROM outcome_events WHERE event = 'converted'",
    )
    assert rows == [
        (1, "converted", 1200.5, DAY + timedelta(days=3), NOW, "tok-1", 64),
        (5, "converted", 80.0, DAY, NOW, "tok-1", 64),
    ]


def test_every_bad_row_is_refused_with_its_reason_and_the_good_rows_are_kept(store: Store):
    frame = events(
        ("c1", 1, "delivered", DAY),  # 0 good
        ("c1", 1, "clicked", DAY),  # 1 unknown event
        ("c1", 2, "contacted", NOW + timedelta(minutes=6)),  # 2 future, past the skew
        ("c1", 2, "converted", DAY, -1.0),  # 3 negative amount
        ("c1", 2, "converted", DAY, float("nan")),  # 4 NaN
        ("c1", 2, "converted", DAY, float("inf")),  # 5 infinite
        ("c1", 2, "responded", DAY, 10.0),  # 6 amount on another event
        ("nope", 2, "responded", DAY),  # 7 unknown campaign
        ("c1", 999, "responded", DAY),  # 8 unknown customer
        ("c1", 9, "responded", DAY),  # 9 a customer of the bank not in the campaign
        ("c2", 1, "responded", DAY),  # 10 assigned to c1, not to c2
        ("c1", 5, "delivered", DAY),  # 11 control: never contacted
        ("c1", 6, "contacted", DAY),  # 12
        ("c1", 7, "reached", DAY),  # 13
        ("c1", 8, "complained", DAY),  # 14
        ("c1", 8, "opted_out", DAY),  # 15
        ("c1", 2, "contacted", NOW + timedelta(minutes=4)),  # 16 good: within the skew
        ("c1", 3, "converted", datetime(2024, 1, 1), 0.0),  # 17 good: late and zero
        (None, 3, "responded", DAY),  # 18 no campaign
        ("c1", None, "responded", DAY),  # 19 no customer
        ("c1", 3, "responded", None),  # 20 no time
    )
    result = record(store, frame)
    assert (result.recorded, result.already_recorded) == (3, 0)
    why = reasons(result)
    assert sorted(why) == [r for r in range(21) if r not in (0, 16, 17)]
    assert why[1].startswith("unknown event; send one of delivered, contacted")
    assert "in the future" in why[2]
    assert all("finite number >= 0" in why[r] for r in (3, 4, 5))
    assert why[6].startswith("a responded event carries no amount")
    assert why[7].startswith("unknown campaign")
    assert why[8].startswith("unknown customer")
    assert why[9] == why[10] == "the customer is not assigned to this campaign"
    for row, event in zip(
        range(11, 16), ("delivered", "contacted", "reached", "complained", "opted_out"), strict=True
    ):
        assert why[row].startswith(f"a {event} event for a control customer"), why[row]
    assert why[18].startswith("campaign_id is missing")
    assert why[19].startswith("customer_id is missing")
    assert why[20].startswith("occurred_at is missing")
    ids = dict(zip(result.refused["row"], result.refused["customer_id"], strict=True))
    assert ids[8] == 999 and ids[19] is None
    assert stored(store) == [(1, "delivered"), (2, "contacted"), (3, "converted")]
    # Nothing of the refused rows reached the suppression list either.
    assert stored(store, "SELECT * FROM suppressions") == []


def test_a_resent_event_is_counted_once(store: Store):
    frame = events(
        ("c1", 1, "delivered", DAY),
        ("c1", 1, "delivered", DAY),  # a copy inside the request
        ("c1", 2, "converted", DAY, 10.0),
        ("c1", 2, "converted", DAY, 10.5),  # another amount: another event
        ("c1", 3, "responded", DAY, None, "crm-17"),
        ("c1", 4, "responded", DAY, None, "crm-17"),  # the sender's key decides
    )
    first = record(store, frame)
    assert (first.recorded, first.already_recorded) == (4, 2)
    again = record(store, frame)
    assert (again.recorded, again.already_recorded, again.refused.height) == (0, 6, 0)
    assert len(stored(store)) == 4
    # The derived key is the SHA-256 of the documented text.
    text = "c1|1|delivered|2026-09-03T10:30:00.000000|"
    keys = stored(store, "SELECT event_key FROM outcome_events WHERE customer_id = 1")
    assert keys == [(hashlib.sha256(text.encode()).hexdigest(),)]
    assert stored(store, "SELECT customer_id FROM outcome_events WHERE event_key = 'crm-17'") == [
        (3,)
    ]


def test_opt_outs_join_the_suppression_list_and_complaints_stay_as_events(store: Store):
    frame = events(
        ("c1", 1, "opted_out", DAY),
        ("c1", 1, "opted_out", DAY + timedelta(days=1)),  # a second report, a later time
        ("c1", 2, "complained", DAY),
    )
    assert record(store, frame).recorded == 3
    rows = stored(store, "SELECT * FROM suppressions")
    assert rows == [("opt-out", 1, DAY.date(), None, "opted out in campaign c1", "outcome_events")]
    # Already on the list from that day on: a later opt-out adds no row.
    record(store, events(("c1", 1, "opted_out", DAY + timedelta(days=5))))
    assert len(stored(store, "SELECT * FROM suppressions")) == 1
    assert stored(store, "SELECT customer_id FROM outcome_events WHERE event = 'complained'") == [
        (2,)
    ]


def test_an_error_inside_the_transaction_leaves_nothing(store: Store):
    with pytest.raises(RuntimeError, match="after"), store.transaction():
        result = record(store, events(("c1", 1, "opted_out", DAY)))
        assert result.recorded == 1
        raise RuntimeError("after")
    assert stored(store) == [] and stored(store, "SELECT * FROM suppressions") == []


_KILLED_INSIDE = """
import os, signal, sys
from datetime import datetime
import polars as pl
from fusion.campaigns.outcomes import record_events
from fusion.store import Store, StoreConfig

config = StoreConfig(sys.argv[1], threads=2, extension_directory=sys.argv[2])
store = Store.open(config, key=os.environ["STORE_KEY"])
frame = pl.DataFrame({
    "campaign_id": ["c1", "c1"], "customer_id": [1, 2], "event": ["opted_out", "delivered"],
    "occurred_at": [datetime(2026, 9, 3), datetime(2026, 9, 3)],
})
with store.transaction():
    result = record_events(store, frame, source="killed", now=datetime(2026, 10, 2))
    assert result.recorded == 2, result
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_before_the_commit_leaves_the_store_as_it_was(
    store: Store, config: StoreConfig, key: str
):
    store.close()
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_INSIDE, str(config.path), str(config.extension_directory)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "STORE_KEY": key},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    with Store.open(config, key=key) as reopened:
        assert stored(reopened) == []
        assert stored(reopened, "SELECT * FROM suppressions") == []


def test_a_store_on_a_cursor_writes_in_the_cursors_own_transaction(store: Store):
    cursor = store.cursor()
    frame = events(("c1", 1, "delivered", DAY), ("c1", 5, "delivered", DAY))
    result = record_events(store.on_cursor(cursor), frame, source="api", now=NOW)
    assert (result.recorded, result.refused.height) == (1, 1)
    assert stored(store) == [(1, "delivered")]
    cursor.close()


def test_arguments_and_frames_that_cannot_be_events_are_refused_whole(store: Store):
    frame = events(("c1", 1, "delivered", DAY))
    with pytest.raises(ConfigError, match="clock_skew must be >= 0"):
        record(store, frame, clock_skew=timedelta(minutes=-1))
    with pytest.raises(ConfigError, match="source must name the sender"):
        record(store, frame, source=" ")
    with pytest.raises(ConfigError, match="has no column occurred_at; add it with an ISO 8601"):
        record(store, frame.drop("occurred_at"))
    with pytest.raises(ConfigError, match="column\\(s\\) phone that events do not have"):
        record(store, frame.with_columns(phone=pl.lit("x")))
    empty = record(store, frame.head(0))
    assert (empty.recorded, empty.already_recorded, empty.refused.height) == (0, 0, 0)


def test_a_csv_file_is_read_as_text_and_bad_values_are_refused_by_row(store: Store, tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text(
        "campaign_id,customer_id,event,occurred_at,amount,event_key\n"
        "c1,1,delivered,2026-09-03T10:30:00,,\n"
        "c1,1,converted,2026-09-03T18:30:00+08:00,99.5,\n"
        "c1,1x,responded,2026-09-03T10:30:00,,\n"
        "c1,2,contacted,2026-09-03 10:30:00,,k-1\n"
        "c1,2,converted,2026-09-03T10:30:00,ten,\n"
        "c1,2,reached,yesterday,,\n"
        "c1,2,reached,2026-09-03,,\n"
    )
    frame = read_event_file(path)
    result = record(store, frame)
    assert result.recorded == 3
    why = reasons(result)
    assert why[2].startswith("customer_id is not a whole number")
    assert why[4].startswith("amount is not a finite number")
    assert why[5].startswith("occurred_at is missing or not a date-time")
    assert why[6].startswith("occurred_at is missing or not a date-time")  # a date has no time
    assert result.refused["customer_id"].to_list() == [None, 2, 2, 2]
    assert stored(store, "SELECT customer_id FROM outcome_events WHERE event_key = 'k-1'") == [(2,)]
    times = stored(store, "SELECT event, occurred_at FROM outcome_events")
    assert times == [("contacted", DAY), ("converted", DAY), ("delivered", DAY)]


def test_a_parquet_file_keeps_its_types(store: Store, tmp_path: Path):
    path = tmp_path / "events.parquet"
    events(("c1", 3, "converted", DAY, 5.0)).drop("event_key").with_columns(
        pl.col("occurred_at").dt.replace_time_zone("Asia/Shanghai")
    ).write_parquet(path)
    result = record(store, read_event_file(path))
    assert result.recorded == 1
    # An instant with a zone is stored as naive UTC.
    assert stored(store, "SELECT occurred_at FROM outcome_events") == [(DAY - timedelta(hours=8),)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "there is no events file"),
        ("events.txt", "x", "neither .csv nor .parquet"),
        ("events.parquet", "not parquet", "cannot read the events file events.parquet"),
        (
            "events.csv",
            "campaign_id,customer_id,event\nc1,1,delivered\n",
            "has no column occurred_at",
        ),
        (
            "events.csv",
            "campaign_id,customer_id,event,occurred_at,ammount\nc1,1,converted,2026-09-03T10:00:00,5\n",
            "column(s) ammount that events do not have; remove them or correct the spelling",
        ),
    ],
)
def test_an_unusable_event_file_is_refused_with_what_to_write(
    tmp_path: Path, name: str, content: str | None, message: str
):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as refused:
        read_event_file(path)
    assert message in str(refused.value)


def test_many_events_are_checked_in_one_pass(store: Store):
    n = 200_000
    frame = pl.DataFrame(
        {
            "campaign_id": "c1",
            "customer_id": pl.int_range(n, eager=True) % 12 + 1,
            "event": "responded",
            "occurred_at": pl.datetime_range(
                DAY - timedelta(seconds=n), DAY, "1s", closed="left", eager=True
            ),
        }
    )
    result = record(store, frame)
    # Customers 9-12: 9 and 10 are not assigned, 11 and 12 are no customers.
    assert result.refused.height == (frame["customer_id"] > 8).sum()
    assert result.recorded + result.already_recorded + result.refused.height == n
    assert result.already_recorded == 0
