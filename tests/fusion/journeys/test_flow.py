"""The walk, as a property: whatever the facts and answers, every cursor ends in exactly one
node of its strategy, and only on a wait (with a due day) or finished."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.journeys import MILESTONES
from fusion.journeys.engine import STATE_SCHEMA
from fusion.journeys.flow import walk
from tests.support.journeys import example

DAY = date(2026, 11, 1)
STRATEGIES = {name: example(name) for name in ("activation-push", "idle-sms")}
WAITS = {name: [n.id for n in s.nodes if n.kind == "wait"] for name, s in STRATEGIES.items()}


def cursors(rows: list[tuple[str, int, bool, int]]) -> pl.DataFrame:
    frame = []
    for name, customer, woke, wait in rows:
        strategy = STRATEGIES[name]
        node = WAITS[name][wait % len(WAITS[name])] if woke else strategy.entry().id
        frame.append(
            {
                "strategy_id": name,
                "customer_id": customer,
                "version": 1,
                "stage": "full",
                "arm": "treatment" if customer % 3 else "control",
                "branch_id": "B001",
                "entered_on": DAY,
                "node_id": node,
                "node_since": DAY - timedelta(days=3),
                "due_on": DAY if woke else None,
                "finished_on": None,
                "finish_reason": None,
                "woke": woke,
            }
        )
    return pl.DataFrame(frame, schema=STATE_SCHEMA | {"woke": pl.Boolean})


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(sorted(STRATEGIES)),
            st.integers(1, 40),
            st.booleans(),
            st.integers(0, 3),
        ),
        max_size=60,
        unique_by=lambda r: (r[0], r[1]),
    ),
    reached=st.lists(
        st.integers(-1, 60), min_size=len(MILESTONES) + 1, max_size=len(MILESTONES) + 1
    ),
    clicked=st.booleans(),
)
def test_every_cursor_ends_in_one_node(rows, reached, clicked):
    frame = cursors(rows)
    ids = list(range(1, 41))
    facts = (
        pl.DataFrame({"customer_id": ids})
        .with_columns(
            *(
                pl.when((pl.col("customer_id") * (i + 3)) % 61 > reached[i])
                .then(pl.lit(DAY - timedelta(days=(i + 1) * 2)))
                .otherwise(None)
                .alias(f"{m}_on")
                for i, m in enumerate(MILESTONES)
            ),
            pl.lit(DAY - timedelta(days=reached[-1] % 30)).alias("last_active_on"),
            pl.lit("activate").alias("life_stage"),
        )
        .with_columns(pl.col("download_on").fill_null(DAY - timedelta(days=5)))
    )
    answers = pl.DataFrame(
        {
            "strategy_id": "activation-push",
            "customer_id": ids,
            "node_id": "clicked",
            "clicked": clicked,
            "exposed": True,
            "opted_out": False,
        },
    )
    walked = walk(frame, STRATEGIES, facts=facts, answers=answers, day=DAY)
    parked = walked.parked
    assert parked.height == frame.height
    assert not parked.select(pl.struct("strategy_id", "customer_id").is_duplicated().any()).item()
    kinds = {(s, n.id): n.kind for s, st_ in STRATEGIES.items() for n in st_.nodes}
    for name, node, due, finished in parked.select(
        "strategy_id", "node_id", "due_on", "finished_on"
    ).iter_rows():
        assert (due is None) != (finished is None)
        if due is not None:
            assert kinds[(name, node)] == "wait" and due > DAY
    asked = walked.actions
    if asked.height:
        assert set(asked["node_id"]) <= {"push", "popup", "sms"}
