"""The readout of a strategy: per arm and per node, treatment against the held-out control.

Per customer who entered the strategy (its arm fixed at entry), as of `as_of` and with the
events received by `now`:

    goal          reached the strategy's goal milestone on or after the day of entry
    exposed       an exposure event on one of the strategy's delivered touches
    clicked       a click event on one of them
    opted_out     an opt_out event on one of them
    converted     a later lifecycle stage on `as_of` than on the day of entry (stage conversion)
    retained      app activity in days 24-30 after entry, over the customers entered at least
                  30 days before `as_of` (day-30 retention)

The arms are compared on goal, converted and retained with `fusion.campaigns.statistics.compare`
(Newcombe's hybrid score interval of the difference, the pooled z-test). Exposure, clicks and
opt-outs describe the treated arm (a held-out control touch is never sent). Per node: the
customers who entered it, were touched there (delivered or held out), exposed, clicked, and
reached the goal after it, per arm.

Every count leaves through `fusion.reports.disclosure.suppress` at k: a count under k (or one
that would expose such a count) is withheld, with every rate and comparison computed from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from contracts.journeys import MILESTONES
from fusion.campaigns.statistics import Comparison, compare, json_ready
from fusion.journeys.book import get_strategy
from fusion.journeys.lifecycle import ACTIVITY_EVENTS, milestones, naive_utc, stage_expr
from fusion.reports.disclosure import DEFAULT_K, Layout, check_k, suppress
from fusion.store import Store

__all__ = ["ARM_COUNTS", "COMPARED", "JourneyReadout", "readout", "write_readout"]

ARM_COUNTS = (
    "customers",
    "goal",
    "exposed",
    "clicked",
    "opted_out",
    "converted",
    "eligible_retention",
    "retained",
)
"""The readout's per-arm counts (customers who ...)."""
COMPARED = {"goal": "customers", "converted": "customers", "retained": "eligible_retention"}
"""The metrics compared treatment vs control, with the count each rate is of."""
_RANK = {"acquire": 0, "activate": 1, "grow": 2}


@dataclass(frozen=True)
class JourneyReadout:
    """A strategy's readout: arms, comparisons, nodes and the funnel, k-anonymised."""

    strategy_id: str
    stage: str
    goal: str
    as_of: date
    k: int
    arms: pl.DataFrame
    comparisons: dict[str, Comparison | None]
    nodes: pl.DataFrame
    funnel: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """Return the readout as JSON-ready data (no customer id in it)."""
        return json_ready(
            {
                "strategy_id": self.strategy_id,
                "stage": self.stage,
                "goal": self.goal,
                "as_of": self.as_of.isoformat(),
                "k": self.k,
                "arms": self.arms.to_dicts(),
                "comparisons": {m: c.to_dict() if c else None for m, c in self.comparisons.items()},
                "nodes": self.nodes.to_dicts(),
                "funnel": self.funnel.to_dicts(),
            }
        )


_CUSTOMERS_SQL = f"""
WITH s AS (
    SELECT customer_id, arm, entered_on FROM journey_state WHERE strategy_id = $id
),
answers AS (
    SELECT t.customer_id,
           bool_or(e.event = 'exposure') AS exposed, bool_or(e.event = 'click') AS clicked,
           bool_or(e.event = 'opt_out') AS opted_out
    FROM journey_touches AS t JOIN journey_events AS e ON e.touch_id = t.touch_id
    WHERE t.strategy_id = $id AND e.occurred_at < $end AND e.received_at <= $now
    GROUP BY t.customer_id
),
activity AS (
    SELECT s.customer_id,
           bool_or(date_diff('day', s.entered_on, e.occurred_at::DATE) BETWEEN 24 AND 30)
               AS retained
    FROM s JOIN journey_events AS e USING (customer_id)
    WHERE e.event IN ({", ".join(f"'{e}'" for e in ACTIVITY_EVENTS)})
      AND e.occurred_at < $end AND e.received_at <= $now
    GROUP BY s.customer_id
)
SELECT s.customer_id, s.arm, s.entered_on,
       coalesce(a.exposed, false) AS exposed, coalesce(a.clicked, false) AS clicked,
       coalesce(a.opted_out, false) AS opted_out, coalesce(v.retained, false) AS retained
FROM s LEFT JOIN answers AS a USING (customer_id) LEFT JOIN activity AS v USING (customer_id)
"""  # noqa: S608 - constants only

_NODES_SQL = """
WITH v AS (
    SELECT DISTINCT customer_id, node_id, arm, min(day) OVER (PARTITION BY customer_id, node_id)
        AS first_day
    FROM journey_visits WHERE strategy_id = $id AND day <= $as_of
),
t AS (
    SELECT t.node_id, t.customer_id,
           bool_or(e.event = 'exposure') AS exposed, bool_or(e.event = 'click') AS clicked
    FROM journey_touches AS t LEFT JOIN journey_events AS e ON e.touch_id = t.touch_id
        AND e.occurred_at < $end AND e.received_at <= $now
    WHERE t.strategy_id = $id AND t.day <= $as_of
    GROUP BY t.node_id, t.customer_id
)
SELECT v.node_id, v.arm, v.customer_id, v.first_day, t.customer_id IS NOT NULL AS touched,
       coalesce(t.exposed, false) AS exposed, coalesce(t.clicked, false) AS clicked
FROM v LEFT JOIN t ON t.node_id = v.node_id AND t.customer_id = v.customer_id
"""


def readout(
    store: Store, strategy_id: str, *, as_of: date, now: datetime, k: int = DEFAULT_K
) -> JourneyReadout:
    """Return the strategy's readout as of the end of `as_of` (module docstring)."""
    check_k(k)
    record = get_strategy(store, strategy_id)
    goal = record.strategy.goal
    end = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    params = {"id": strategy_id, "end": end, "now": naive_utc(now)}
    frame = pl.from_arrow(store.execute(_CUSTOMERS_SQL, params).fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    known = milestones(store, as_of, now=now)
    people = frame.cast({"customer_id": pl.Int64}).join(known, on="customer_id", how="left")
    entered = pl.col("entered_on")
    people = people.with_columns(
        (pl.col(f"{goal}_on") >= entered).fill_null(value=False).alias("goal"),
        (stage_expr().replace_strict(_RANK) > stage_expr(entered).replace_strict(_RANK)).alias(
            "converted"
        ),
        (entered + timedelta(days=30) <= as_of).alias("eligible_retention"),
    )
    people = people.with_columns(pl.col("retained") & pl.col("eligible_retention"))
    arms = people.group_by("arm").agg(
        pl.len().alias("customers"), *(pl.col(c).sum() for c in ARM_COUNTS[1:])
    )
    arms = _all_arms(arms).sort("arm", descending=True)
    comparisons = _comparisons(arms, k)
    rates = tuple((f"{c}_rate", (c, "customers")) for c in ARM_COUNTS[1:6])
    arms = arms.with_columns(
        *(
            pl.when(pl.col("customers") > 0).then(pl.col(c) / pl.col("customers")).alias(n)
            for n, (c, _) in rates
        ),
        pl.when(pl.col("eligible_retention") > 0)
        .then(pl.col("retained") / pl.col("eligible_retention"))
        .alias("retention_rate"),
    )
    layout = Layout(
        counts=ARM_COUNTS, derived=(*rates, ("retention_rate", ("retained", "eligible_retention")))
    )
    published = suppress(arms, layout, k=k, keep=("customers",))
    return JourneyReadout(
        strategy_id=strategy_id,
        stage=record.stage,
        goal=goal,
        as_of=as_of,
        k=k,
        arms=published,
        comparisons=comparisons,
        nodes=_nodes(store, record.strategy.nodes, params | {"as_of": as_of}, people, goal, k),
        funnel=_funnel(people, k),
    )


def _all_arms(arms: pl.DataFrame) -> pl.DataFrame:
    """Return the arm counts with a zero row for an arm nobody is in."""
    frame = pl.DataFrame({"arm": ["treatment", "control"]}).join(arms, on="arm", how="left")
    return frame.with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in ARM_COUNTS)


def _comparisons(arms: pl.DataFrame, k: int) -> dict[str, Comparison | None]:
    """Return treatment vs control per compared metric; None where a count is under k."""
    row = {r["arm"]: r for r in arms.to_dicts()}
    out: dict[str, Comparison | None] = {}
    for metric, base in COMPARED.items():
        t, c = row["treatment"], row["control"]
        cells = (t[metric], t[base] - t[metric], c[metric], c[base] - c[metric])
        out[metric] = None if min(cells) < k else compare(t[metric], t[base], c[metric], c[base])
    return out


def _nodes(
    store: Store, nodes: list[Any], params: dict[str, Any], people: pl.DataFrame, goal: str, k: int
) -> pl.DataFrame:
    """Return per node and arm: visitors, touched, exposed, clicked, goal after the visit."""
    frame = pl.from_arrow(store.execute(_NODES_SQL, params).fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    goal_on = people.select("customer_id", pl.col(f"{goal}_on").alias("goal_on"))
    frame = frame.cast({"customer_id": pl.Int64}).join(goal_on, on="customer_id", how="left")
    counts = frame.group_by("node_id", "arm").agg(
        pl.len().alias("visitors"),
        pl.col("touched").sum(),
        pl.col("exposed").sum(),
        pl.col("clicked").sum(),
        (pl.col("goal_on") >= pl.col("first_day")).fill_null(value=False).sum().alias("goal"),
    )
    order = pl.DataFrame(
        [(n.id, n.kind, arm) for n in nodes for arm in ("treatment", "control")],
        schema=["node_id", "kind", "arm"],
        orient="row",
    )
    names = ("visitors", "touched", "exposed", "clicked", "goal")
    table = order.join(counts, on=["node_id", "arm"], how="left").with_columns(
        pl.col(c).fill_null(0).cast(pl.Int64) for c in names
    )
    table = table.with_columns(
        pl.when(pl.col("visitors") > 0).then(pl.col("goal") / pl.col("visitors")).alias("goal_rate")
    )
    return suppress(
        table, Layout(counts=names, derived=(("goal_rate", ("goal", "visitors")),)), k=k
    )


def _funnel(people: pl.DataFrame, k: int) -> pl.DataFrame:
    """Return per arm the customers who reached each milestone by as_of (the funnel plot)."""
    table = people.group_by("arm").agg(
        pl.len().alias("customers"),
        *(pl.col(f"{m}_on").is_not_null().sum().alias(m) for m in MILESTONES),
    )
    table = _all_arms_funnel(table)
    return suppress(table, Layout(counts=("customers", *MILESTONES)), k=k)


def _all_arms_funnel(table: pl.DataFrame) -> pl.DataFrame:
    frame = pl.DataFrame({"arm": ["treatment", "control"]}).join(table, on="arm", how="left")
    return frame.with_columns(
        pl.col(c).fill_null(0).cast(pl.Int64) for c in ("customers", *MILESTONES)
    )


def write_readout(result: JourneyReadout, out_dir: Path) -> Path:
    """Return the path of the readout's HTML page, written with its funnel plot and JSON."""
    from fusion.reports.journeys import journey_page

    return journey_page(result, out_dir)
