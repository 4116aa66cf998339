"""One day's walk through the strategies' flows, over whole columns: where each customer goes.

The walk takes the cursors (one row per strategy and customer looked at today: the customers
whose due day has come, and the day's entrants at their entry node) and moves them, one step
for every cursor at a time, until each is parked:

    entry          -> next
    condition      -> then when its condition holds on the day's facts, else -> else
    wait           arrived today: parked until day + days; woken today (its due day): -> next
    action         a touch is asked for (channel, content, offer), -> next
    exit           finished ("exit")

A loop always holds a wait node (the declaration refuses others), so the steps are at most the
number of nodes of the largest flow plus one. Each step is a few polars expressions over every
cursor at once; the loop is over steps, never over customers. Customers whose horizon is over
(days since download > horizon_days) or who reached the goal (with exit_on_goal) finish before
moving ("horizon", "goal").

Frames:
    cursors   strategy_id, customer_id, node_id, woke bool + carried columns (arm, stage...)
    facts     customer_id, `<milestone>_on` dates, last_active_on, life_stage, and the profile
              columns the conditions read, prefixed `p_` (tags: `p_tags`, a list)
    answers   strategy_id, node_id (the condition's), customer_id, clicked, exposed, opted_out
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from contracts.errors import ConfigError
from fusion.journeys.strategy import (
    ActionNode,
    AnswerCondition,
    Condition,
    ConditionNode,
    EntryNode,
    FeatureCondition,
    IdleCondition,
    MilestoneCondition,
    ScoreCondition,
    StageCondition,
    Strategy,
    TagCondition,
    WaitNode,
)

__all__ = ["NODES_SCHEMA", "Walked", "node_table", "profile_columns", "walk"]

NODES_SCHEMA = {
    "strategy_id": pl.String,
    "node_id": pl.String,
    "kind": pl.String,
    "next_node": pl.String,
    "then_node": pl.String,
    "else_node": pl.String,
    "days": pl.Int32,
    "channel": pl.String,
    "content_id": pl.String,
    "offer_id": pl.String,
}
_KEYS = ["strategy_id", "customer_id"]


@dataclass(frozen=True)
class Walked:
    """Where the walk left every cursor, the nodes entered, and the touches asked for.

    parked: the cursors' columns + node_id, node_since (date), due_on (date | null),
        finished_on (date | null), finish_reason (str | null).
    visits: strategy_id, customer_id, node_id, arm: one row per node entered today.
    actions: strategy_id, customer_id, node_id, arm, branch_id (when the cursors carry it),
        channel, content_id, offer_id.
    """

    parked: pl.DataFrame
    visits: pl.DataFrame
    actions: pl.DataFrame


def node_table(strategies: Mapping[str, Strategy]) -> pl.DataFrame:
    """Return one row per node of every strategy (NODES_SCHEMA)."""
    rows = []
    for name, strategy in strategies.items():
        for node in strategy.nodes:
            row = dict.fromkeys(NODES_SCHEMA) | {
                "strategy_id": name,
                "node_id": node.id,
                "kind": node.kind,
            }
            if isinstance(node, ConditionNode):
                row |= {"then_node": node.then, "else_node": node.otherwise}
            elif isinstance(node, WaitNode):
                row |= {"next_node": node.next, "days": node.days}
            elif isinstance(node, ActionNode):
                row |= {
                    "next_node": node.next,
                    "channel": node.channel,
                    "content_id": node.content_id,
                    "offer_id": node.offer_id,
                }
            elif isinstance(node, EntryNode):
                row |= {"next_node": node.next}
            rows.append(row)
    return pl.DataFrame(rows, schema=NODES_SCHEMA)


def profile_columns(strategies: Mapping[str, Strategy]) -> list[str]:
    """Return the profile columns the strategies' conditions read (tags as `tags`)."""
    columns: dict[str, None] = {}
    for strategy in strategies.values():
        for node in strategy.nodes:
            if isinstance(node, ConditionNode):
                when = node.when
                if isinstance(when, TagCondition):
                    columns["tags"] = None
                elif isinstance(when, FeatureCondition):
                    columns[when.column] = None
                elif isinstance(when, ScoreCondition):
                    columns[f"score_{when.model}"] = None
    return list(columns)


def walk(
    cursors: pl.DataFrame,
    strategies: Mapping[str, Strategy],
    *,
    facts: pl.DataFrame,
    answers: pl.DataFrame,
    day: date,
) -> Walked:
    """Return the walk of `cursors` through their flows on `day` (module docstring)."""
    nodes = node_table(strategies)
    walked_columns = ("node_id", "woke", "node_since", "due_on", "finished_on", "finish_reason")
    carried = [c for c in cursors.columns if c not in walked_columns]
    frame = cursors.with_columns(pl.lit(value=False).alias("moved")).join(
        facts, on="customer_id", how="left"
    )
    frame, finished = _early_exits(frame, strategies, day)
    parked = [finished]
    visits: list[pl.DataFrame] = []
    actions: list[pl.DataFrame] = []
    condition = _conditions(strategies, day)
    limit = max((len(s.nodes) for s in strategies.values()), default=0) + 2
    branch = ["branch_id"] if "branch_id" in frame.columns else []  # the touches' branch
    for _ in range(limit):
        if frame.is_empty():
            break
        frame = frame.join(nodes, on=["strategy_id", "node_id"], how="left")
        frame = frame.join(answers, on=[*_KEYS, "node_id"], how="left")
        kind = pl.col("kind")
        is_action = kind == "action"
        actions.append(
            frame.filter(is_action).select(
                *_KEYS, "node_id", "arm", *branch, "channel", "content_id", "offer_id"
            )
        )
        wait_here = (kind == "wait") & ~pl.col("woke")
        stop = wait_here | (kind == "exit")
        parked.append(_parked_here(frame.filter(stop), carried, wait_here, day))
        target = (
            pl.when(kind == "condition")
            .then(pl.when(condition).then(pl.col("then_node")).otherwise(pl.col("else_node")))
            .otherwise(pl.col("next_node"))
        )
        frame = (
            frame.filter(~stop)
            .with_columns(
                target.alias("node_id"),
                pl.lit(value=True).alias("moved"),
                pl.lit(value=False).alias("woke"),
            )
            .drop(
                *(c for c in NODES_SCHEMA if c not in ("strategy_id", "node_id")),
                "clicked",
                "exposed",
                "opted_out",
            )
        )
        visits.append(frame.select(*_KEYS, "node_id", "arm"))
    if not frame.is_empty():
        raise ConfigError(
            f"{frame.height} customer(s) were still moving after {limit} steps: a flow loops "
            "without a wait node; check the strategies' declarations",
            setting="strategies",
        )
    return Walked(
        parked=pl.concat(parked, how="vertical_relaxed"),
        visits=pl.concat(visits) if visits else pl.DataFrame(),
        actions=pl.concat(actions) if actions else pl.DataFrame(),
    )


def _parked_here(
    stopped: pl.DataFrame, carried: list[str], wait_here: pl.Expr, day: date
) -> pl.DataFrame:
    """Return the cursors that stop at a wait or exit node today, as their state rows."""
    kind = pl.col("kind")
    return stopped.select(
        *carried,
        "node_id",
        pl.when(pl.col("moved"))
        .then(pl.lit(day))
        .otherwise(pl.col("node_since"))
        .alias("node_since"),
        pl.when(wait_here)
        .then(pl.lit(day) + pl.duration(days=pl.col("days")))
        .cast(pl.Date)
        .alias("due_on"),
        pl.when(kind == "exit").then(pl.lit(day)).cast(pl.Date).alias("finished_on"),
        pl.when(kind == "exit").then(pl.lit("exit")).alias("finish_reason"),
    )


def _early_exits(
    frame: pl.DataFrame, strategies: Mapping[str, Strategy], day: date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split off the cursors whose horizon is over or who reached the goal (exit_on_goal)."""
    horizon = pl.lit(None, dtype=pl.String)
    chain: Any = pl.when(pl.lit(value=False)).then(horizon)
    for name, strategy in strategies.items():
        mine = pl.col("strategy_id") == name
        over = pl.col("download_on").is_null() | (
            pl.col("download_on") < day - timedelta(days=strategy.horizon_days)
        )
        chain = chain.when(mine & over).then(pl.lit("horizon"))
        if strategy.exit_on_goal:
            chain = chain.when(mine & pl.col(f"{strategy.goal}_on").is_not_null()).then(
                pl.lit("goal")
            )
    frame = frame.with_columns(chain.alias("finish_reason"))
    done = frame.filter(pl.col("finish_reason").is_not_null())
    carried = [c for c in frame.columns if c in _CARRIED_OR_STATE]
    finished = done.select(
        *carried,
        pl.lit(None, dtype=pl.Date).alias("due_on"),
        pl.lit(day).alias("finished_on"),
        "finish_reason",
    )
    return frame.filter(pl.col("finish_reason").is_null()).drop("finish_reason"), finished


_CARRIED_OR_STATE = (
    "strategy_id",
    "customer_id",
    "version",
    "stage",
    "arm",
    "branch_id",
    "entered_on",
    "node_id",
    "node_since",
)


def _conditions(strategies: Mapping[str, Strategy], day: date) -> pl.Expr:
    """Return one expression giving each condition node's verdict on the row's facts."""
    chain: Any = pl.when(pl.lit(value=False)).then(pl.lit(value=False))
    for name, strategy in strategies.items():
        for node in strategy.nodes:
            if isinstance(node, ConditionNode):
                at = (pl.col("strategy_id") == name) & (pl.col("node_id") == node.id)
                chain = chain.when(at).then(_verdict(node.when, day))
    return chain.otherwise(pl.lit(value=False)).fill_null(value=False)


def _verdict(when: Condition, day: date) -> pl.Expr:
    """Return the condition as a boolean expression (a missing fact is false)."""
    if isinstance(when, TagCondition):
        return pl.col("p_tags").list.eval(pl.element().is_in(when.any_of)).list.any()
    if isinstance(when, FeatureCondition | ScoreCondition):
        column = when.column if isinstance(when, FeatureCondition) else f"score_{when.model}"
        value = pl.col(f"p_{column}")
        return {
            "<": value < when.value,
            "<=": value <= when.value,
            "==": value == when.value,
            "!=": value != when.value,
            ">=": value >= when.value,
            ">": value > when.value,
        }[when.op]
    if isinstance(when, MilestoneCondition):
        reached = pl.col(f"{when.milestone}_on").is_not_null()
        return reached if when.reached else ~reached
    if isinstance(when, StageCondition):
        return pl.col("life_stage").is_in(list(when.stages))
    if isinstance(when, IdleCondition):
        last = pl.coalesce(pl.col("last_active_on"), pl.col("download_on"))
        return last <= day - timedelta(days=when.days)
    assert isinstance(when, AnswerCondition)
    flag = {
        "clicked": "clicked",
        "not_clicked": "clicked",
        "exposed": "exposed",
        "opted_out": "opted_out",
    }[when.answer]
    value = pl.col(flag).fill_null(value=False)
    return ~value if when.answer == "not_clicked" else value
