"""The event log in: row-by-row refusals, idempotent loads, opt-outs suppressed, point in time."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from fusion.journeys.events import load_events
from fusion.journeys.lifecycle import cohort_funnel, daily_stages, milestones
from tests.support.journeys import DAY0, NOW


def rows(*events: tuple[object, str, str, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"customer_id": c, "event": e, "occurred_at": t, "touch_id": touch}
            for c, e, t, touch in events
        ],
        schema={
            "customer_id": pl.String,
            "event": pl.String,
            "occurred_at": pl.String,
            "touch_id": pl.String,
        },
    )


def test_each_bad_row_is_refused_with_its_reason_and_the_rest_kept(store):
    loaded = load_events(
        store,
        rows(
            ("1000001", "login", "2026-10-02T08:00:00", None),
            ("abc", "login", "2026-10-02T08:00:00", None),
            ("1000001", "dance", "2026-10-02T08:00:00", None),
            ("1000001", "login", "yesterday", None),
            ("1000001", "login", "2031-01-01T00:00:00", None),
            ("1000001", "click", "2026-10-02T08:00:00", None),
            ("1000001", "login", "2026-10-02T08:00:00", "t-1"),
            ("1000001", "click", "2026-10-02T08:00:00", "no-such-touch"),
            ("99", "login", "2026-10-02T08:00:00", None),
        ),
        source="test",
        now=NOW,
    )
    assert loaded.recorded == 1 and loaded.already_recorded == 0
    reasons = dict(zip(loaded.refused["row"], loaded.refused["reason"], strict=True))
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    for row, word in (
        (1, "whole number"),
        (2, "unknown event"),
        (3, "ISO 8601"),
        (4, "future"),
        (5, "touch_id"),
        (6, "answers no touch"),
        (7, "no touch delivered"),
        (8, "unknown customer"),
    ):
        assert word in reasons[row], reasons[row]


def test_a_resent_file_changes_nothing_and_copies_count_once(store, tmp_path):
    events = rows(
        ("1000002", "login", "2026-10-03T09:00:00+08:00", None),
        ("1000002", "login", "2026-10-03T09:00:00+08:00", None),
    )
    path = tmp_path / "events.csv"
    events.write_csv(path)
    first = load_events(store, path, source="file", now=NOW)
    again = load_events(store, path, source="file", now=NOW)
    assert (first.recorded, first.already_recorded) == (1, 1)
    assert (again.recorded, again.already_recorded) == (0, 2)
    stored = store.execute(
        "SELECT occurred_at FROM journey_events WHERE source = 'file'"
    ).fetchall()
    assert stored == [(datetime(2026, 10, 3, 1, 0),)]  # kept in UTC


def test_reads_are_point_in_time(store):
    late = NOW + timedelta(days=1)
    load_events(
        store, rows(("1000003", "assets_10k", "2026-10-01T10:00:00", None)), source="late", now=late
    )
    before = milestones(store, DAY0 + timedelta(days=60), now=NOW)
    after = milestones(store, DAY0 + timedelta(days=60), now=late)
    pick = pl.col("customer_id") == 1_000_003
    assert before.filter(pick)["assets_10k_on"].item() != DAY0 or before.filter(pick).is_empty()
    assert after.filter(pick)["assets_10k_on"].item() == DAY0
    assert after.filter(pick)["stage"].item() == "grow"


def test_stages_follow_the_furthest_milestone_day_by_day(store):
    frame = daily_stages(store, DAY0, DAY0 + timedelta(days=39), now=NOW, customers=[1_000_010])
    known = milestones(store, DAY0 + timedelta(days=39), now=NOW).filter(
        pl.col("customer_id") == 1_000_010
    )
    register = known["register_on"].item()
    if register is not None:
        assert frame.filter(pl.col("day") == register)["stage"].item() in ("activate", "grow")
    assert frame["day"].is_sorted()


def test_the_funnel_is_k_anonymous_and_adds_up(store):
    funnel = cohort_funnel(store, as_of=DAY0 + timedelta(days=39), now=NOW, k=5)
    shown = funnel.filter(~pl.col("suppressed"))
    counts = funnel["customers"].drop_nulls()
    assert (counts >= 5).all()
    for row in shown.iter_rows(named=True):
        assert row["reached_register"] <= row["reached_first_open"] <= row["customers"]
        assert row["retained_d7"] <= row["eligible_d7"]
    total = store.execute(
        "SELECT count(DISTINCT customer_id) FROM journey_events WHERE event = 'download'"
    ).fetchone()[0]
    assert funnel["customers"].fill_null(0).sum() <= total
