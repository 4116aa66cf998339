"""The daily engine on a small store: touches, reruns that write nothing, a SIGKILL that leaves
nothing, caps shared with campaigns, one node per customer and strategy, the dry run."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from contracts.errors import ConfigError
from contracts.journeys import JOURNEY_TOUCHES
from fusion.journeys.book import create_strategy
from fusion.journeys.engine import dry_run, run_day
from fusion.journeys.strategy import Strategy
from fusion.store import Store, StoreConfig
from tests.support.journeys import DAY0, NOW, example, killed_mid_run, strategy

TABLES = ("journey_state", "journey_visits", "journey_touches", "journey_runs", "contacts")


def launch(store: Store, declared: Strategy, stage: str = "full") -> None:
    create_strategy(
        store, declared, actor="test", now=NOW, salt=declared.name.encode().ljust(32, b".")
    )
    store.execute(
        "UPDATE journey_strategies SET stage = ? WHERE strategy_id = ?", [stage, declared.name]
    )


def sizes(store: Store) -> dict[str, int]:
    return {t: store.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def run(store: Store, days: range) -> None:
    for d in days:
        run_day(store, DAY0 + timedelta(days=d), now=NOW)


@pytest.mark.slow
def test_a_day_emits_touches_and_a_rerun_writes_nothing(store):
    launch(store, example("activation-push"))
    launch(store, example("idle-sms"))
    run(store, range(20))
    before = sizes(store)
    assert before["journey_touches"] > 0 and before["journey_runs"] == 20
    # Rerunning any day, not only the last one, writes nothing and gives the day's own touches.
    for d in range(20):
        replayed = run_day(store, DAY0 + timedelta(days=d), now=NOW)
        stored = store.execute(
            "SELECT count(*) FROM journey_touches WHERE day = ? AND delivered",
            [DAY0 + timedelta(days=d)],
        ).fetchone()[0]
        assert replayed.replayed and replayed.touches.height == stored
    assert sizes(store) == before
    day = DAY0 + timedelta(days=19)
    again = run_day(store, day, now=NOW)
    assert again.replayed and sizes(store) == before
    JOURNEY_TOUCHES.check(again.touches)
    stored = store.execute(
        "SELECT count(*) FROM journey_touches WHERE day = ? AND delivered", [day]
    ).fetchone()[0]
    assert again.touches.height == stored
    assert (again.touches["arm"] == "treatment").all() and (
        again.held_out["arm"] == "control"
    ).all()
    # one touch per customer and day, and every delivered touch is a contact of its strategy
    per_day = store.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM journey_touches GROUP BY customer_id, day)"
    ).fetchone()[0]
    assert per_day == 1
    contacts = store.execute(
        "SELECT count(*) FROM contacts WHERE source IN ('activation-push', 'idle-sms')"
    ).fetchone()[0]
    assert (
        contacts
        == store.execute("SELECT count(*) FROM journey_touches WHERE delivered").fetchone()[0]
    )


def test_days_run_in_order(store):
    launch(store, example("idle-sms"))
    run(store, range(3))
    with pytest.raises(ConfigError, match="days run in order"):
        run_day(store, DAY0 - timedelta(days=1), now=NOW)


@pytest.mark.slow
def test_a_run_killed_as_it_commits_leaves_nothing(store, config: StoreConfig, key: str):
    launch(store, example("activation-push"))
    run(store, range(5))
    before = sizes(store)
    path = config.path
    store.close()
    killed_mid_run(path, config.extension_directory, key, DAY0 + timedelta(days=5))
    with Store.open(config, key=key) as reopened:
        assert sizes(reopened) == before
        assert not run_day(reopened, DAY0 + timedelta(days=5), now=NOW).replayed
        assert sizes(reopened)["journey_runs"] == before["journey_runs"] + 1


@pytest.mark.slow
def test_caps_hold_across_strategies_and_campaigns(store):
    cap = {"cooling_off_days": 2, "frequency_cap": {"contacts": 2, "days": 10}}
    nodes = [
        {"id": "in", "kind": "entry", "event": "download", "next": "a"},
        {"id": "a", "kind": "action", "channel": "sms", "content_id": "x", "next": "w"},
        {"id": "w", "kind": "wait", "days": 1, "next": "a"},
    ]
    launch(store, strategy("every-day", nodes, screening=cap, goal="assets_10k"))
    launch(store, strategy("every-day-2", nodes, screening=cap, priority=2, goal="assets_10k"))
    # a campaign contacted every customer with an even id on day 3
    store.execute(
        "INSERT INTO contacts SELECT customer_id, 'campaign-x', 'call_centre', ? , 1 "
        "FROM customers WHERE customer_id % 2 = 0",
        [DAY0 + timedelta(days=3)],
    )
    run(store, range(15))
    contacts = pl.from_arrow(
        store.execute("SELECT customer_id, source, day FROM contacts").fetch_arrow_table()
    )
    journey = contacts.filter(pl.col("source") != "campaign-x")
    assert journey.height > 0
    blocked = store.execute(
        "SELECT count(*) FROM journey_runs WHERE counts LIKE '%blocked:priority%'"
    ).fetchone()[0]
    assert blocked > 0  # every-day (priority 1) took the days both asked for
    by_customer = {c: sorted(g["day"].to_list()) for (c,), g in contacts.group_by("customer_id")}
    for customer, day in journey.select("customer_id", "day").iter_rows():
        every = by_customer[customer]
        # the cap: at most 2 contacts in the 10 days before a journey touch and on its day
        assert sum(day - timedelta(days=10) <= d <= day for d in every) <= 2, (customer, every)
        # cooling off: no other contact in the 2 days before, none on the same day
        assert sum(day - timedelta(days=2) <= d <= day for d in every) == 1, (customer, every)


@pytest.mark.slow
def test_no_customer_is_in_two_nodes_of_one_strategy(store):
    launch(store, example("activation-push"))
    launch(store, example("idle-sms"), stage="pilot")
    run(store, range(25))
    state = pl.from_arrow(store.execute("SELECT * FROM journey_state").fetch_arrow_table())
    assert (
        state.select(pl.struct("strategy_id", "customer_id").is_duplicated().any()).item() is False
    )
    known = {(s, n.id) for s in ("activation-push", "idle-sms") for n in example(s).nodes}
    assert set(zip(state["strategy_id"], state["node_id"], strict=True)) <= known
    waiting = state.filter(pl.col("finished_on").is_null())
    assert waiting["due_on"].null_count() == 0


def test_the_dry_run_counts_without_writing(store):
    launch(store, example("activation-push"))
    create_strategy(store, example("idle-sms"), actor="test", now=NOW)  # a draft
    before = sizes(store)
    counts = dry_run(
        store, DAY0 + timedelta(days=10), now=NOW, strategy_ids=["activation-push", "idle-sms"]
    )
    assert sizes(store) == before
    entry = counts.filter((pl.col("strategy_id") == "idle-sms") & (pl.col("kind") == "entry"))
    downloads = store.execute(
        "SELECT count(DISTINCT customer_id) FROM journey_events WHERE event = 'download' "
        "AND occurred_at::DATE = ?",
        [DAY0 + timedelta(days=10)],
    ).fetchone()[0]
    assert entry["visits"].item() == downloads
    assert set(counts.columns) >= {"visits", "asked", "delivered", "held_out", "blocked"}


def test_point_in_time_events_received_later_are_not_seen(store):
    launch(store, example("idle-sms"))
    # every event was received at NOW: a run whose clock is before that sees none of them
    early = run_day(store, DAY0 + timedelta(days=2), now=NOW.replace(year=2020))
    assert early.total("entered") == 0


def test_whitelist_stage_takes_the_named_customers_only(store):
    launch(store, example("idle-sms"), stage="whitelist")
    result = run_day(store, DAY0, now=NOW)
    state = store.execute("SELECT customer_id, arm FROM journey_state").fetchall()
    assert state == [(1_000_003, "treatment")] and result.total("entered") == 1


def test_a_condition_on_a_missing_profile_column_says_which(store):
    nodes = [
        {"id": "in", "kind": "entry", "stage": "acquire", "next": "old"},
        {
            "id": "old",
            "kind": "condition",
            "when": {"on": "feature", "column": "age", "op": ">=", "value": 30},
            "then": "out",
            "else": "out",
        },
        {"id": "out", "kind": "exit"},
    ]
    launch(store, strategy("by-age", nodes))
    with pytest.raises(ConfigError, match="age"):
        run_day(store, DAY0, now=NOW)
    profiles = pl.DataFrame({"customer_id": [1_000_001], "age": [40]})
    assert run_day(store, DAY0, now=NOW, profiles=profiles).day == DAY0
