"""The readout against statsmodels, its k-anonymity, the page, and the stage gates."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import polars as pl
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from contracts.errors import GateRefused
from fusion.journeys.book import create_strategy, get_strategy, promote_strategy, strategy_history
from fusion.journeys.engine import run_day
from fusion.journeys.events import load_events
from fusion.journeys.readout import readout, write_readout
from fusion.store import Store
from tests.support.journeys import DAY0, NOW, example


def walk_days(store: Store, name: str, stage: str, days: int) -> None:
    create_strategy(store, example(name), actor="t", now=NOW, salt=b"s" * 32)
    store.execute("UPDATE journey_strategies SET stage = ? WHERE strategy_id = ?", [stage, name])
    for d in range(days):
        run_day(store, DAY0 + timedelta(days=d), now=NOW)


def answer_touches(store: Store, event: str, share: float) -> None:
    touches = pl.from_arrow(
        store.execute(
            "SELECT touch_id, customer_id, day FROM journey_touches WHERE delivered "
            "ORDER BY touch_id"
        ).fetch_arrow_table()
    )
    chosen = touches.head(int(touches.height * share))
    load_events(
        store,
        chosen.select(
            "customer_id",
            pl.lit(event).alias("event"),
            "touch_id",
            (pl.col("day").cast(pl.Datetime("us")) + pl.duration(hours=12)).alias("occurred_at"),
        ),
        source="channel",
        now=NOW,
    )


@pytest.mark.slow
def test_readout_intervals_match_statsmodels_and_the_page_is_written(store, tmp_path):
    walk_days(store, "idle-sms", "full", 30)
    answer_touches(store, "exposure", 0.8)
    answer_touches(store, "click", 0.3)
    result = readout(store, "idle-sms", as_of=DAY0 + timedelta(days=39), now=NOW, k=1)
    arms = {r["arm"]: r for r in result.arms.to_dicts()}
    assert (
        arms["treatment"]["customers"] + arms["control"]["customers"]
        == store.execute(
            "SELECT count(*) FROM journey_state WHERE strategy_id = 'idle-sms'"
        ).fetchone()[0]
    )
    assert arms["treatment"]["exposed"] > 0 and not arms["control"]["exposed"]  # 0: withheld
    compared = [c for c in result.comparisons.values() if c is not None]
    assert compared
    for c in compared:
        low, high = confint_proportions_2indep(
            c.successes_t, c.n_t, c.successes_c, c.n_c, method="newcomb", compare="diff"
        )
        assert c.diff_ci_low == pytest.approx(low, abs=1e-9)
        assert c.diff_ci_high == pytest.approx(high, abs=1e-9)
    sms = result.nodes.filter((pl.col("node_id") == "sms") & (pl.col("arm") == "treatment"))
    assert sms["touched"].item() > 0
    page = write_readout(result, tmp_path / "out")
    assert (
        page.read_text().count("<table") == 3 and (tmp_path / "out" / "funnel.png").stat().st_size
    )
    assert "1000" not in (tmp_path / "out" / "readout.json").read_text().split('"nodes"')[0][-5:]

    strict = readout(store, "idle-sms", as_of=DAY0 + timedelta(days=39), now=NOW, k=10_000)
    assert strict.arms["customers"].null_count() == 2
    assert all(c is None for c in strict.comparisons.values())


def test_gates_go_stage_by_stage_and_need_touches(store):
    name = "idle-sms"
    create_strategy(store, example(name), actor="t", now=NOW)
    with pytest.raises(GateRefused) as skipped:
        promote_strategy(store, name, actor="t", now=NOW, to_stage="pilot")
    assert skipped.value.gate == "order"
    promote_strategy(store, name, actor="t", now=NOW)
    with pytest.raises(GateRefused) as untouched:
        promote_strategy(store, name, actor="t", now=NOW)
    assert untouched.value.gate == "whitelist_touched"
    # the named customer downloaded 20 days ago and has been idle since: the SMS goes out
    load_events(
        store,
        pl.DataFrame(
            {
                "customer_id": [1_000_003],
                "event": ["download"],
                "occurred_at": [datetime.combine(DAY0, time()) - timedelta(days=20)],
            }
        ),
        source="t",
        now=NOW,
    )
    run_day(store, DAY0, now=NOW)
    touched = store.execute("SELECT count(*) FROM journey_touches WHERE delivered").fetchone()[0]
    assert touched == 1
    with pytest.raises(GateRefused) as unconfirmed:
        promote_strategy(store, name, actor="t", now=NOW)
    assert unconfirmed.value.gate == "whitelist_confirmed"
    answer_touches(store, "exposure", 1.0)
    promoted = promote_strategy(store, name, actor="t", now=NOW)
    assert promoted.to_stage == "pilot" and get_strategy(store, name).stage == "pilot"
    assert [h["to_stage"] for h in strategy_history(store, name)] == ["whitelist", "pilot"]
