"""The daily engine: every live strategy evaluated against the event log up to a day, customers
moved along their flows, the day's touches emitted, and each customer's state kept in the store.

One run of day D, all in ONE transaction with its `journey_runs` row:

    1. facts      milestones, lifecycle stage and last activity of every customer from the events
                  that occurred by the end of D and were received by `now` (point in time),
                  each customer's branch, and the profile columns the conditions read
    2. entrants   per strategy, by its stage: the whitelist's named customers (whitelist), or the
                  customers its entry node takes on D (in the entry's lifecycle stage, or with the
                  entry's event since the previous run day), within horizon_days of their
                  download, not at the goal, never in the strategy before; the pilot (small
                  traffic) and the A/B test admit the share whose keyed rank
                  HMAC(salt, "entry|" id) falls under pilot_share / ab_share, full launch all
                  of them. Arms: `fusion.campaigns.assignment.assign_arms` over the day's
                  entrants (strata = branch), keyed by HMAC(salt, "day|" D), with the stage's
                  control share (none for the whitelist)
    3. walk       the entrants and the customers due on D go through the flows
                  (`fusion.journeys.flow`)
    4. touches    the actions asked for, of both arms, pass the campaigns' screening
                  (`fusion.campaigns.screening.screen`: suppression lists, complaints, frequency
                  cap and cooling off over the shared `contacts`), then a customer contacted on
                  D already (by a campaign) is left alone, then one touch per customer and day
                  across strategies: the lowest priority number wins (ties: the strategy id).
                  A winning treatment touch is delivered and written to `contacts` (source =
                  the strategy id); a winning control touch is held out: recorded, never sent,
                  never in `contacts` (the readout compares the arms on what the touch asked for)
    5. write      state rows of the moved and entered customers replaced, node visits, touches
                  and the run's row with its counts, in the one transaction

A day with a run row is done: running it again returns its stored touches and writes nothing. A
process killed before the commit leaves nothing of the day. Days are run in order: a day before
the latest run day is refused unless it is done.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from contracts.errors import ConfigError
from contracts.journeys import JOURNEY_TOUCHES
from fusion.campaigns.assignment import assign_arms, entry_order
from fusion.campaigns.screening import ScreeningContext, screen
from fusion.journeys.book import StrategyRecord, get_strategy, live_strategies, strategy_salts
from fusion.journeys.flow import Walked, profile_columns, walk
from fusion.journeys.lifecycle import milestones, naive_utc
from fusion.journeys.strategy import AnswerCondition, ConditionNode, Strategy
from fusion.store import Store
from matcher.keyed_hash import hmac_digest

__all__ = ["STATE_SCHEMA", "DayRun", "dry_run", "run_day"]

STATE_SCHEMA = {
    "strategy_id": pl.String,
    "customer_id": pl.Int64,
    "version": pl.Int32,
    "stage": pl.String,
    "arm": pl.String,
    "branch_id": pl.String,
    "entered_on": pl.Date,
    "node_id": pl.String,
    "node_since": pl.Date,
    "due_on": pl.Date,
    "finished_on": pl.Date,
    "finish_reason": pl.String,
}
"""The columns of `journey_state`: one row per (strategy, customer)."""
_ANSWERS_SCHEMA = {
    "strategy_id": pl.String,
    "customer_id": pl.Int64,
    "node_id": pl.String,
    "clicked": pl.Boolean,
    "exposed": pl.Boolean,
    "opted_out": pl.Boolean,
}
_COUNT_SCHEMA = {
    "strategy_id": pl.String,
    "node_id": pl.String,
    "measure": pl.String,
    "customers": pl.Int64,
}


@dataclass(frozen=True)
class DayRun:
    """One day's run: the touches to deliver, those held out, and what every node did.

    touches: JOURNEY_TOUCHES rows of the treatment arm, one per customer at most: what the
        channels deliver. held_out: the control arm's touches (same schema), never delivered.
    counts: strategy_id, node_id, measure, customers, long: per node `visits` (customers who
        entered it on the day), `asked`, `delivered`, `held_out`, `blocked`; per node where they
        finished `finished:<reason>`; per strategy (node "*") `entered` and `blocked:<rule>`.
    replayed: the day was done before; nothing was written.
    """

    day: date
    replayed: bool
    touches: pl.DataFrame
    held_out: pl.DataFrame
    counts: pl.DataFrame
    strategies: dict[str, int] = field(default_factory=dict)

    def total(self, measure: str) -> int:
        """Return the day's customers counted under `measure`, over every strategy and node."""
        rows = self.counts.filter(pl.col("measure") == measure)
        return int(rows.get_column("customers").sum()) if rows.height else 0

    def to_dict(self) -> dict[str, Any]:
        """Return the run as JSON-ready data (counts only; the touches stay frames)."""
        return {
            "day": self.day.isoformat(),
            "replayed": self.replayed,
            "strategies": self.strategies,
            "delivered": self.touches.height,
            "held_out": self.held_out.height,
            "counts": self.counts.to_dicts(),
        }


def run_day(
    store: Store, day: date, *, now: datetime, profiles: pl.DataFrame | None = None
) -> DayRun:
    """Return the run of `day` over every live strategy, written in one transaction.

    `profiles`: customer_id and the columns the conditions read (bank features by name,
    `score_<model>`, `tags` as a list of tag ids); None when no condition reads one. A done day
    returns its stored run (`replayed`). Raises ConfigError for a day before the latest run.
    """
    with store.transaction():
        stored = _stored_run(store, day)
        if stored is not None:
            return stored
        latest = store.execute("SELECT max(day) FROM journey_runs").fetchone()
        last_day = latest[0] if latest else None
        if last_day is not None and day < last_day:
            raise ConfigError(
                f"day {day} comes before {last_day}, the latest day run; days run in order: "
                "run the days after it, or rerun a day already run (its touches come back)",
                setting="day",
            )
        records = live_strategies(store)
        planned = _plan(store, day, now=now, profiles=profiles, records=records, since=last_day)
        _write(store, day, now=now, planned=planned, records=records)
    return planned.run


def dry_run(
    store: Store,
    day: date,
    *,
    now: datetime,
    profiles: pl.DataFrame | None = None,
    strategy_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Return per strategy and node how many customers the run of `day` would take; no write.

    Columns: strategy_id, node_id, kind, visits, asked, delivered, held_out, blocked. Live
    strategies are taken at their stage; a draft or closed strategy named in `strategy_ids` is
    taken as at full launch with no control (everyone its entry would take).
    """
    if strategy_ids is None:
        records = live_strategies(store)
    else:
        records = []
        for name in strategy_ids:
            record = get_strategy(store, name)
            if record.stage not in ("whitelist", "pilot", "ab", "full"):
                record = StrategyRecord(
                    record.strategy,
                    record.version,
                    "dry-run",
                    record.created_at,
                    record.created_by,
                    record.updated_at,
                )
            records.append(record)
    latest = store.execute("SELECT max(day) FROM journey_runs WHERE day < ?", [day]).fetchone()
    planned = _plan(
        store, day, now=now, profiles=profiles, records=records, since=latest[0] if latest else None
    )
    wide = planned.run.counts.filter(pl.col("node_id") != "*").pivot(
        "measure", index=["strategy_id", "node_id"], values="customers", aggregate_function="sum"
    )
    kinds = pl.DataFrame(
        [(r.strategy_id, n.id, n.kind) for r in records for n in r.strategy.nodes],
        schema=["strategy_id", "node_id", "kind"],
        orient="row",
    )
    measures = ("visits", "asked", "delivered", "held_out", "blocked")
    out = kinds.join(wide, on=["strategy_id", "node_id"], how="left")
    return out.select(
        "strategy_id",
        "node_id",
        "kind",
        *(
            pl.col(m).fill_null(0).cast(pl.Int64).alias(m)
            if m in out.columns
            else pl.lit(0, dtype=pl.Int64).alias(m)
            for m in measures
        ),
    )


# -- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    run: DayRun
    state: pl.DataFrame  # new rows for every changed (strategy, customer)
    replaced: pl.DataFrame  # strategy_id, customer_id whose stored row is replaced
    visits: pl.DataFrame
    touches: pl.DataFrame  # JOURNEY_TOUCHES + delivered


def _plan(
    store: Store,
    day: date,
    *,
    now: datetime,
    profiles: pl.DataFrame | None,
    records: Sequence[StrategyRecord],
    since: date | None,
) -> _Planned:
    strategies = {r.strategy_id: r.strategy for r in records}
    facts = _facts(store, day, now=now, profiles=profiles, strategies=strategies)
    due = _due(store, day, list(strategies))
    entrants = _entrants(store, day, now=now, since=since, records=records, facts=facts)
    cursors = pl.concat([due, entrants], how="vertical_relaxed")
    answers = _answers(store, day, now=now, strategies=strategies, cursors=cursors)
    walked = walk(cursors, strategies, facts=facts, answers=answers, day=day)
    touches, blocked = _touches(store, day, walked.actions, records=records, profiles=profiles)
    entry_visits = entrants.select("strategy_id", "customer_id", "node_id", "arm")
    visits = (
        pl.concat([entry_visits, walked.visits], how="vertical_relaxed")
        if walked.visits.width
        else entry_visits
    )
    counts = _counts(walked, visits, touches, blocked, entrants)
    run = DayRun(
        day=day,
        replayed=False,
        touches=_touch_frame(touches.filter(pl.col("delivered"))),
        held_out=_touch_frame(touches.filter(~pl.col("delivered"))),
        counts=counts,
        strategies={r.strategy_id: r.version for r in records},
    )
    state = walked.parked.select(list(STATE_SCHEMA)).cast(STATE_SCHEMA)  # type: ignore[arg-type]
    return _Planned(
        run,
        state,
        due.select("strategy_id", "customer_id"),
        visits.with_columns(pl.lit(day).alias("day")),
        touches,
    )


def _facts(
    store: Store,
    day: date,
    *,
    now: datetime,
    profiles: pl.DataFrame | None,
    strategies: Mapping[str, Strategy],
) -> pl.DataFrame:
    """Return the day's facts per customer (fusion.journeys.flow's `facts`)."""
    frame = milestones(store, day, now=now).rename({"stage": "life_stage"}).drop("milestone")
    wanted = profile_columns(strategies)
    if not wanted:
        return frame
    if profiles is None or "customer_id" not in profiles.columns:
        raise ConfigError(
            f"the strategies' conditions read the profile column(s) {', '.join(wanted)}; pass "
            "profiles with customer_id and those columns",
            setting="profiles",
        )
    missing = [c for c in wanted if c not in profiles.columns]
    if missing:
        raise ConfigError(
            f"the profiles lack the column(s) {', '.join(missing)} a condition reads; add them "
            "(features by name, scores as score_<model>, tags as a list), or change the condition",
            setting="profiles",
        )
    chosen = profiles.select(
        pl.col("customer_id").cast(pl.Int64), *(pl.col(c).alias(f"p_{c}") for c in wanted)
    ).unique("customer_id", keep="first")
    return frame.join(chosen, on="customer_id", how="left")


def _due(store: Store, day: date, names: list[str]) -> pl.DataFrame:
    """Return the stored state rows whose due day has come (woke = True)."""
    frame = pl.from_arrow(
        store.execute(
            f"SELECT {', '.join(STATE_SCHEMA)} FROM journey_state "  # noqa: S608
            "WHERE list_contains(?, strategy_id) AND finished_on IS NULL AND due_on <= ?",
            [names, day],
        ).fetch_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame.cast(STATE_SCHEMA).with_columns(pl.lit(value=True).alias("woke"))  # type: ignore[arg-type]


def _event_customers(store: Store, event: str, start: date, day: date, now: datetime) -> pl.Series:
    end = datetime.combine(day + timedelta(days=1), datetime.min.time())
    begin = datetime.combine(start, datetime.min.time())
    frame = pl.from_arrow(
        store.execute(
            "SELECT DISTINCT customer_id FROM journey_events WHERE event = ? AND occurred_at >= ? "
            "AND occurred_at < ? AND received_at <= ?",
            [event, begin, end, naive_utc(now)],
        ).fetch_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame.get_column("customer_id").cast(pl.Int64)


def _eligible(
    store: Store,
    record: StrategyRecord,
    day: date,
    *,
    now: datetime,
    since: date | None,
    facts: pl.DataFrame,
) -> pl.DataFrame:
    """Return customer_id of the customers the strategy's entry takes on `day` (branch later)."""
    strategy = record.strategy
    if record.stage == "whitelist":
        return pl.DataFrame(
            {"customer_id": sorted(set(strategy.stages.whitelist))},
            schema={"customer_id": pl.Int64},
        )
    entry = strategy.entry()
    within = pl.col("download_on").is_not_null() & (
        pl.col("download_on") >= day - timedelta(days=strategy.horizon_days)
    )
    if strategy.exit_on_goal:
        within = within & pl.col(f"{strategy.goal}_on").is_null()
    if entry.stage is not None:
        taken = facts.filter(within & (pl.col("life_stage") == entry.stage))
    else:
        start = since + timedelta(days=1) if since is not None else day
        assert entry.event is not None
        who = _event_customers(store, entry.event, start, day, now)
        taken = facts.filter(within & pl.col("customer_id").is_in(who.implode()))
    return taken.select("customer_id")


def _homes(store: Store, customers: pl.Series) -> pl.DataFrame:
    """Return customer_id, branch_id of `customers`: each one's branch in its newest extract.

    `fusion.journeys.lifecycle.branches` for the given customers only: the day's entrants are
    few, and a scan of every customer's extract rows each day would cost more than the rest of
    the entry step.
    """
    frame = pl.from_arrow(
        store.execute(
            "SELECT c.customer_id, arg_max(c.branch_id, coalesce(c.snapshot_date, "
            "DATE '1900-01-01')) AS branch_id FROM customers AS c "
            "JOIN (SELECT unnest(?::BIGINT[]) AS customer_id) AS v USING (customer_id) "
            "GROUP BY c.customer_id",
            [customers.unique().to_list()],
        ).fetch_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame.cast({"customer_id": pl.Int64, "branch_id": pl.String})


def _entrants(
    store: Store,
    day: date,
    *,
    now: datetime,
    since: date | None,
    records: Sequence[StrategyRecord],
    facts: pl.DataFrame,
) -> pl.DataFrame:
    """Return the day's entrants as cursors at their entry node, with their arms."""
    salts = strategy_salts(store, [r.strategy_id for r in records])
    known = pl.from_arrow(
        store.execute(
            "SELECT strategy_id, customer_id FROM journey_state "
            "WHERE list_contains(?, strategy_id)",
            [[r.strategy_id for r in records]],
        ).fetch_arrow_table()
    )
    assert isinstance(known, pl.DataFrame)
    known = known.cast({"strategy_id": pl.String, "customer_id": pl.Int64})
    parts = []
    for record in records:
        eligible = _eligible(store, record, day, now=now, since=since, facts=facts)
        fresh = _fresh(eligible, record, known, salts[record.strategy_id])
        if fresh.height:
            parts.append((record, fresh))
    if not parts:
        return _empty_cursors()
    homes = _homes(store, pl.concat([f.get_column("customer_id") for _, f in parts]))
    parts = [(r, f.join(homes, on="customer_id", how="inner")) for r, f in parts]
    parts = [(r, f) for r, f in parts if f.height]
    if not parts:
        return _empty_cursors()
    day_salts = {
        r.strategy_id: hmac_digest(salts[r.strategy_id], f"day|{day}".encode()) for r, _ in parts
    }
    shares = {
        r.strategy_id: r.strategy.stage_control_share(r.stage) if r.stage != "dry-run" else 0.0
        for r, _ in parts
    }
    frame = pl.concat([f for _, f in parts]).with_columns(
        pl.lit(None, dtype=pl.Int8).alias("decile")
    )
    return _as_cursors(assign_arms(frame, day_salts, shares), [r for r, _ in parts], day)


def _fresh(
    eligible: pl.DataFrame, record: StrategyRecord, known: pl.DataFrame, salt: bytes
) -> pl.DataFrame:
    """Return the eligible customers not yet in `record`'s strategy, within its stage's
    traffic share (a customer's place in the salted entry order decides)."""
    name = record.strategy_id
    fresh = eligible.join(
        known.filter(pl.col("strategy_id") == name).select("customer_id"),
        on="customer_id",
        how="anti",
    ).with_columns(pl.lit(name).alias("campaign_id"))
    share = record.strategy.stage_traffic_share(record.stage)
    if share < 1 and fresh.height:
        rank = entry_order(fresh, {name: salt}).get_column("entry")
        unit = rank.bin.slice(0, 8).bin.reinterpret(dtype=pl.UInt64, endianness="big")
        fresh = fresh.filter((unit.cast(pl.Float64) / 2.0**64 < share).to_numpy())
    return fresh


def _as_cursors(armed: pl.DataFrame, records: list[StrategyRecord], day: date) -> pl.DataFrame:
    """Return the armed entrants as journey_state rows at their strategy's entry node."""
    info = pl.DataFrame(
        [(r.strategy_id, r.version, r.stage, r.strategy.entry().id) for r in records],
        schema={
            "campaign_id": pl.String,
            "version": pl.Int32,
            "stage": pl.String,
            "node_id": pl.String,
        },
        orient="row",
    )
    return (
        armed.join(info, on="campaign_id")
        .select(
            pl.col("campaign_id").alias("strategy_id"),
            "customer_id",
            "version",
            "stage",
            "arm",
            "branch_id",
            pl.lit(day).alias("entered_on"),
            "node_id",
            pl.lit(day).alias("node_since"),
            pl.lit(None, dtype=pl.Date).alias("due_on"),
            pl.lit(None, dtype=pl.Date).alias("finished_on"),
            pl.lit(None, dtype=pl.String).alias("finish_reason"),
            pl.lit(value=False).alias("woke"),
        )
        .cast(STATE_SCHEMA | {"woke": pl.Boolean})  # type: ignore[arg-type]
    )


def _empty_cursors() -> pl.DataFrame:
    return pl.DataFrame(schema=STATE_SCHEMA | {"woke": pl.Boolean})


_ANSWERS_SQL = """
WITH latest AS (
    SELECT c.strategy_id, c.node_id, t.customer_id, arg_max(t.touch_id, t.day) AS touch_id,
           max(t.day) AS touch_day, any_value(c.within_days)::INTEGER AS within_days
    FROM {conditions} AS c
    JOIN journey_touches AS t ON t.strategy_id = c.strategy_id AND t.node_id = c.touch_node
    JOIN {cursors} AS k ON k.strategy_id = t.strategy_id AND k.customer_id = t.customer_id
    WHERE t.day <= $day
    GROUP BY c.strategy_id, c.node_id, t.customer_id
)
SELECT l.strategy_id, l.customer_id, l.node_id,
       coalesce(bool_or(e.event = 'click'), false) AS clicked,
       coalesce(bool_or(e.event = 'exposure'), false) AS exposed,
       coalesce(bool_or(e.event = 'opt_out'), false) AS opted_out
FROM latest AS l
LEFT JOIN journey_events AS e ON e.touch_id = l.touch_id AND e.occurred_at < $end
    AND e.received_at <= $now AND e.occurred_at::DATE <= l.touch_day + l.within_days
GROUP BY l.strategy_id, l.customer_id, l.node_id
"""


def _answers(
    store: Store,
    day: date,
    *,
    now: datetime,
    strategies: Mapping[str, Strategy],
    cursors: pl.DataFrame,
) -> pl.DataFrame:
    """Return how the cursors answered the touches their strategies' answer conditions name."""
    rows = [
        (name, node.id, node.when.touch, node.when.within_days)
        for name, strategy in strategies.items()
        for node in strategy.nodes
        if isinstance(node, ConditionNode) and isinstance(node.when, AnswerCondition)
    ]
    if not rows or cursors.is_empty():
        return pl.DataFrame(schema=_ANSWERS_SCHEMA)
    conditions = pl.DataFrame(
        rows, schema=["strategy_id", "node_id", "touch_node", "within_days"], orient="row"
    )
    keys = cursors.select("strategy_id", "customer_id").unique()
    end = datetime.combine(day + timedelta(days=1), datetime.min.time())
    with store.registered(conditions) as c_view, store.registered(keys) as k_view:
        frame = pl.from_arrow(
            store.execute(
                _ANSWERS_SQL.format(conditions=c_view, cursors=k_view),
                {"day": day, "end": end, "now": naive_utc(now)},
            ).fetch_arrow_table()
        )
    assert isinstance(frame, pl.DataFrame)
    return frame.cast(_ANSWERS_SCHEMA)  # type: ignore[arg-type]


# -- touches -----------------------------------------------------------------------------------


def _context_frame(store: Store, sql: str, view: str, params: list[object]) -> pl.DataFrame:
    frame = pl.from_arrow(store.execute(sql.format(view=view), params).fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _screening_context(
    store: Store,
    day: date,
    customers: pl.DataFrame,
    records: Sequence[StrategyRecord],
    profiles: pl.DataFrame | None,
) -> tuple[ScreeningContext, pl.Series]:
    """Return the screening context of the day's touch candidates, and who was contacted today."""
    reach = max(
        max(r.strategy.screening.frequency_cap.days, r.strategy.screening.cooling_off_days)
        for r in records
    )
    with store.registered(customers) as view:
        sup = _context_frame(
            store,
            "SELECT list_name, customer_id, since, until FROM suppressions "
            "WHERE customer_id IN (SELECT customer_id FROM {view})",
            view,
            [],
        )
        contacts = _context_frame(
            store,
            "SELECT customer_id, source, channel, day FROM contacts WHERE day >= ? AND "
            "day <= ? AND customer_id IN (SELECT customer_id FROM {view})",
            view,
            [day - timedelta(days=reach), day],
        )
        complaints = _context_frame(
            store,
            "SELECT customer_id, occurred_at FROM outcome_events WHERE event = "
            "'complained' AND customer_id IN (SELECT customer_id FROM {view})",
            view,
            [],
        )
    holders = profiles if profiles is not None else pl.DataFrame(schema={"customer_id": pl.Int64})
    today = contacts.filter(pl.col("day") == day).get_column("customer_id").unique()
    context = ScreeningContext(
        day=day,
        suppressions=sup.cast({"customer_id": pl.Int64}),
        contacts=contacts.cast({"customer_id": pl.Int64}),
        complaints=complaints,
        holders=holders,
    )
    return context, today.cast(pl.Int64)


def _touches(
    store: Store,
    day: date,
    actions: pl.DataFrame,
    *,
    records: Sequence[StrategyRecord],
    profiles: pl.DataFrame | None,
) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """Return the day's touches (JOURNEY_TOUCHES + delivered) and per strategy what was blocked."""
    blocked: dict[str, dict[str, int]] = {}
    if actions.width == 0 or actions.is_empty():
        return pl.DataFrame(schema=JOURNEY_TOUCHES.columns | {"delivered": pl.Boolean}), blocked
    rules = {r.strategy_id: r.strategy.screening for r in records}
    priority = pl.DataFrame(
        [(r.strategy_id, r.strategy.priority) for r in records],
        schema={"campaign_id": pl.String, "priority": pl.Int32},
        orient="row",
    )
    candidates = actions.rename({"strategy_id": "campaign_id"})  # branch_id from the state
    context, today = _screening_context(
        store, day, candidates.select("customer_id").unique(), records, profiles
    )
    screened = screen(
        candidates, {c: rules[c] for c in candidates["campaign_id"].unique()}, context
    )
    blocked = {c: {k: v for k, v in rules_.items() if v} for c, rules_ in screened.removed.items()}
    kept = screened.frame
    touched_today = kept.filter(pl.col("customer_id").is_in(today.implode()))
    for campaign, n in touched_today.group_by("campaign_id").len().iter_rows():
        blocked.setdefault(str(campaign), {})["contacted_today"] = int(n)
    kept = kept.filter(~pl.col("customer_id").is_in(today.implode()))
    ranked = kept.join(priority, on="campaign_id").sort("priority", "campaign_id", "node_id")
    winners = ranked.unique("customer_id", keep="first", maintain_order=True)
    losers = ranked.join(
        winners.select("campaign_id", "customer_id"), on=["campaign_id", "customer_id"], how="anti"
    )
    for campaign, n in losers.group_by("campaign_id").len().iter_rows():
        blocked.setdefault(str(campaign), {})["priority"] = int(n)
    touch_id = pl.format(
        "{}:{}:{}:{}",
        pl.col("campaign_id"),
        pl.col("node_id"),
        pl.lit(day.strftime("%Y%m%d")),
        pl.col("customer_id"),
    )
    return winners.select(
        touch_id.alias("touch_id"),
        pl.col("campaign_id").alias("strategy_id"),
        "node_id",
        "customer_id",
        "branch_id",
        "channel",
        "content_id",
        "offer_id",
        pl.lit(day).alias("day"),
        "arm",
        (pl.col("arm") == "treatment").alias("delivered"),
    ).sort("strategy_id", "node_id", "customer_id"), blocked


def _touch_frame(touches: pl.DataFrame) -> pl.DataFrame:
    return touches.select(list(JOURNEY_TOUCHES.columns)).cast(JOURNEY_TOUCHES.columns)  # type: ignore[arg-type]


def _counts(
    walked: Walked,
    visits: pl.DataFrame,
    touches: pl.DataFrame,
    blocked: Mapping[str, Mapping[str, int]],
    entrants: pl.DataFrame,
) -> pl.DataFrame:
    """Return the day's counts, long (DayRun.counts)."""

    def per_node(frame: pl.DataFrame, measure: str | pl.Expr) -> pl.DataFrame:
        if frame.width == 0 or frame.is_empty():
            return pl.DataFrame(schema=_COUNT_SCHEMA)
        label = pl.lit(measure) if isinstance(measure, str) else measure
        return (
            frame.with_columns(label.alias("measure"))
            .group_by("strategy_id", "node_id", "measure")
            .len("customers")
        )

    asked = walked.actions
    finished = walked.parked.filter(pl.col("finish_reason").is_not_null())
    parts = [
        per_node(visits, "visits"),
        per_node(asked, "asked"),
        per_node(touches.filter(pl.col("delivered")), "delivered"),
        per_node(touches.filter(~pl.col("delivered")), "held_out"),
        per_node(finished, pl.format("finished:{}", pl.col("finish_reason"))),
        per_node(entrants.with_columns(pl.lit("*").alias("node_id")), "entered"),
        pl.DataFrame(
            [
                (s, "*", f"blocked:{rule}", n)
                for s, rules in blocked.items()
                for rule, n in rules.items()
            ],
            schema=_COUNT_SCHEMA,
            orient="row",
        ),
    ]
    counts = pl.concat([p.cast(_COUNT_SCHEMA) for p in parts])  # type: ignore[arg-type]
    sent = counts.filter(pl.col("measure").is_in(["delivered", "held_out"]))
    blocked_nodes = (
        counts.filter(pl.col("measure") == "asked")
        .join(
            sent.group_by("strategy_id", "node_id").agg(pl.col("customers").sum().alias("sent")),
            on=["strategy_id", "node_id"],
            how="left",
        )
        .select(
            "strategy_id",
            "node_id",
            pl.lit("blocked").alias("measure"),
            (pl.col("customers") - pl.col("sent").fill_null(0)).alias("customers"),
        )
    )
    return pl.concat([counts, blocked_nodes.cast(_COUNT_SCHEMA)]).sort(  # type: ignore[arg-type]
        "strategy_id", "node_id", "measure"
    )


# -- writing and replay ------------------------------------------------------------------------


def _write(
    store: Store, day: date, *, now: datetime, planned: _Planned, records: Sequence[StrategyRecord]
) -> None:
    """Write the day in the caller's transaction: state, visits, touches, contacts, run row."""
    if planned.replaced.height:
        with store.registered(planned.replaced) as view:
            store.execute(
                f"DELETE FROM journey_state AS s USING {view} AS v "  # noqa: S608
                "WHERE s.strategy_id = v.strategy_id AND s.customer_id = v.customer_id"
            )
    for table, frame in (
        ("journey_state", planned.state),
        ("journey_visits", planned.visits),
        ("journey_touches", planned.touches),
    ):
        if frame.height:
            store.insert_frame(table, frame)
    delivered = planned.touches.filter(pl.col("delivered"))
    if delivered.height:
        store.insert_frame(
            "contacts",
            delivered.select(
                "customer_id", pl.col("strategy_id").alias("source"), "channel", "day"
            ),
        )
    run = planned.run
    stamp = naive_utc(now)
    store.execute(
        "INSERT INTO journey_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            day,
            stamp,
            stamp,
            json.dumps({r.strategy_id: r.version for r in records}, sort_keys=True),
            run.total("entered"),
            planned.replaced.height + run.total("entered"),
            run.touches.height,
            run.held_out.height,
            run.total("blocked"),
            json.dumps(run.counts.to_dicts()),
        ],
    )


def _stored_run(store: Store, day: date) -> DayRun | None:
    """Return the stored run of `day`, or None when the day has not been run."""
    row = store.execute(
        "SELECT strategies, counts FROM journey_runs WHERE day = ?", [day]
    ).fetchone()
    if row is None:
        return None
    touches = pl.from_arrow(
        store.execute(
            f"SELECT {', '.join(JOURNEY_TOUCHES.columns)}, delivered FROM journey_touches "  # noqa: S608
            "WHERE day = ? ORDER BY strategy_id, node_id, customer_id",
            [day],
        ).fetch_arrow_table()
    )
    assert isinstance(touches, pl.DataFrame)
    counts = pl.DataFrame(json.loads(row[1]), schema=_COUNT_SCHEMA)
    return DayRun(
        day=day,
        replayed=True,
        touches=_touch_frame(touches.filter(pl.col("delivered"))),
        held_out=_touch_frame(touches.filter(~pl.col("delivered"))),
        counts=counts,
        strategies=json.loads(row[0]),
    )
