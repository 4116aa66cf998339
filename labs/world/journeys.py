"""The journey world: 100 days of a new-to-app cohort, answering the journey engine's touches.

`JourneySimulator(world, config)` picks the cohort from the world's bank extract (a seeded
`cohort_share` of all customers, drawn among those not on mobile banking yet, each entering on a
day of the first `intake_days`) and moves it a day at a time:

    simulator = JourneySimulator(load_world(path))
    touches = None
    for day in simulator.days:
        events = simulator.step(day, touches)     # rows of contracts.journeys.JOURNEY_EVENT_LOG
        touches = engine(day, events)             # rows of JOURNEY_TOUCHES, answered next step

A step answers the touches handed to it (dated that day or before, never after) and returns the
day's events: milestones in order, log-ins after registering, and exposure, click and opt-out
answers naming their touch. The hazards and the touches' true effects are in
`labs.world.journey_truth`. Touches of an arm in `silent_arms` (the hold-out's bookkeeping rows)
and touches to customers outside the cohort are recorded and never answered.

Every random number is drawn per (customer, day) from the world's seed and the config's seed,
whatever the touches: the same customers with and without a strategy's touches live through the
same draws (common random numbers), so `true_effects` replays them both ways and returns the
strategy's exact effect on the customers it treated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from contracts.journeys import (
    ANSWER_EVENTS,
    JOURNEY_CHANNELS,
    JOURNEY_EVENT_LOG,
    JOURNEY_EVENTS,
    JOURNEY_TOUCHES,
    MILESTONES,
)
from labs.world.errors import WorldError
from labs.world.files import WorldFiles
from labs.world.journey_truth import (
    PERSIST,
    JourneyPeople,
    daily_hazard,
    journey_people,
    login_probability,
)
from labs.world.personas import PERSONAS

__all__ = [
    "COHORT_SCHEMA",
    "JourneyConfig",
    "JourneySimulator",
    "customer_effects",
    "true_effects",
]

I64 = np.ndarray[Any, np.dtype[np.int64]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]

COHORT_SCHEMA = {"customer_id": pl.Int64, "branch_id": pl.String, "entered_on": pl.Date}
_STREAM = 0x10E7  # the journeys' own random streams, apart from the world's
_COHORT_DRAWS = 1 << 20  # the cohort's stream; a day's stream is its index (< 367)
# A day's uniforms: milestone, its time, log-in, its time; then per channel exposure, click,
# opt-out and the exposure's time.
_N_STREAMS = 4 + 4 * len(JOURNEY_CHANNELS)
_REGISTERED = MILESTONES.index("register") + 1  # stage (milestones reached) once registered
_BOUND = MILESTONES.index("bind_card") + 1
_NEEDS_STAGE = {"in_app_popup": _REGISTERED, "app_push": MILESTONES.index("first_open") + 1}
_POPUP = JOURNEY_CHANNELS.index("in_app_popup")
_US_MINUTE = 60_000_000
_US_HOUR = 60 * _US_MINUTE
_US_DAY = 24 * _US_HOUR
_EVENT_ORDER = {event: i for i, event in enumerate(JOURNEY_EVENTS)}


@dataclass(frozen=True, kw_only=True)
class JourneyConfig:
    """The cohort and calendar of a journey run (the truth model is fixed by the code)."""

    start: date = date(2026, 10, 1)  # the day after the default world's snapshot
    days: int = 100
    cohort_share: float = 0.07  # of all the bank's customers, drawn among the unregistered
    intake_days: int = 28  # customers enter on a day of [start, start + intake_days)
    seed: int = 0  # with the world's seed: the cohort and every daily draw
    silent_arms: tuple[str, ...] = ("control",)  # touches of these arms are never delivered

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.days <= 366:
            problems.append(f"days must be within 1..366, got {self.days!r}")
        if not 0.0 < self.cohort_share <= 1.0:
            problems.append(f"cohort_share must be a share in (0, 1], got {self.cohort_share!r}")
        if not 1 <= self.intake_days <= self.days:
            problems.append(f"intake_days must be within 1..days, got {self.intake_days!r}")
        if self.seed < 0:
            problems.append(f"seed must be a non-negative integer, got {self.seed!r}")
        if problems:
            raise WorldError("cannot run the journey world: " + "; ".join(problems))

    def day_index(self, day: date) -> int:
        """Return the number of days from the start to `day`."""
        return (day - self.start).days


@dataclass(frozen=True)
class _Population:
    """The cohort's truth and where its random numbers come from."""

    people: JourneyPeople
    seeds: tuple[int, int]  # the world's seed, the config's seed
    config: JourneyConfig

    def uniforms(self, t: int) -> F64:
        """Return day t's uniforms, (_N_STREAMS, cohort size), the same for any touches."""
        sequence = np.random.SeedSequence([*self.seeds, _STREAM, t])
        return np.random.Generator(np.random.PCG64(sequence)).random((_N_STREAMS, self.people.n))


def _population(world: WorldFiles, config: JourneyConfig) -> _Population:
    """Return the cohort drawn from the world's files with its truth."""
    try:
        world_seed = int(json.loads(world.manifest.read_text())["config"]["seed"])
        bank = pl.read_parquet(
            world.customers,
            columns=[
                "customer_id", "branch_id", "age", "online_banking", "wechat_bound", "payroll",
                "aum_current", "mb_registered",
            ],
        )  # fmt: skip
        personas = pl.read_parquet(
            world.personas, columns=["customer_id", "persona", "second_persona", "fintech"]
        ).filter(pl.col("customer_id").is_not_null())
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as error:
        raise WorldError(
            f"no readable world under {world.root} ({type(error).__name__}); generate one with "
            f"`fusion world --out {world.root}`"
        ) from None
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([world_seed, config.seed, _STREAM, _COHORT_DRAWS]))
    )
    pool = bank.filter(~pl.col("mb_registered")).sort("customer_id")
    size = min(round(config.cohort_share * bank.height), pool.height)
    chosen = np.sort(rng.choice(pool.height, size=size, replace=False))
    frame = pool[chosen].join(personas, on="customer_id", how="left", maintain_order="left")
    if frame["persona"].null_count():
        raise WorldError("the world's truth/personas.parquet lacks bank customers; regenerate it")
    people = journey_people(frame, rng, config.intake_days)
    return _Population(people, (world_seed, config.seed), config)


@dataclass
class _Run:
    """The state of some cohort customers (`rows` of the cohort) as the days go by."""

    population: _Population
    rows: I64
    people: JourneyPeople = field(init=False)
    stage: I64 = field(init=False)  # milestones reached
    registered_day: I64 = field(init=False)
    last_moved: I64 = field(init=False)  # day of the last milestone (or of entering)
    opted_out: Mask = field(init=False)  # (channel, customer)
    live_until: I64 = field(init=False)  # last day a channel's effect is live, (channel, customer)

    def __post_init__(self) -> None:
        self.people = self.population.people.subset(self.rows)
        n, channels = self.people.n, len(JOURNEY_CHANNELS)
        self.stage = np.zeros(n, dtype=np.int64)
        self.registered_day = np.full(n, -1, dtype=np.int64)
        self.last_moved = self.people.entry_day.copy()
        self.opted_out = np.zeros((channels, n), dtype=bool)
        self.live_until = np.full((channels, n), -1, dtype=np.int64)

    def advance(self, t: int, pos: I64, channel: I64) -> _Day:
        """Return day t's events, touches (at positions `pos`, by `channel`) answered first."""
        people, u = self.people, self.population.uniforms(t)[:, self.rows]
        active = people.entry_day <= t
        registered = self.stage >= _REGISTERED
        answers = _Answers.draw(self, u, t, pos, channel, active)
        live = self.live_until >= t
        login = (
            active
            & registered
            & (
                u[2]
                < login_probability(
                    people,
                    self.stage >= _BOUND,
                    t - self.registered_day,
                    (people.effect_login * live).sum(axis=0),
                )
            )
        )
        login_at = 7 * _US_HOUR + (u[3] * 15 * _US_HOUR).astype(np.int64)
        answers.pop_up(self, t, login, login_at)
        boost = (people.effect_next * (self.live_until >= t)).sum(axis=0)
        moved = active & (self.stage < len(MILESTONES))
        moved &= u[0] < daily_hazard(people, self.stage, t - self.last_moved, boost)
        moved_at = 10 * _US_HOUR + (u[1] * 12 * _US_HOUR).astype(np.int64)
        # A milestone that follows a pop-up comes after it.
        np.maximum.at(
            moved_at, answers.pos[answers.popup], answers.at[answers.popup] + 2 * 60 * 10**6
        )
        reached = self.stage[moved]
        self.stage[moved] += 1
        self.last_moved[moved] = t
        self.registered_day[moved & (self.stage == _REGISTERED)] = t
        return _Day(
            login=np.flatnonzero(login),
            login_at=login_at[login],
            moved=np.flatnonzero(moved),
            milestone=reached,
            moved_at=moved_at[moved],
            answers=answers,
        )


@dataclass
class _Answers:
    """The day's touches (at positions `pos`) and how each was answered, with times of day."""

    pos: I64
    channel: I64
    exposed: Mask
    clicked: Mask
    opted_out: Mask
    at: I64  # exposure's time of day (us)
    click_at: I64
    opt_out_at: I64
    popup: Mask
    _u: F64  # (4, touches): exposure, click, opt-out, time uniforms

    @classmethod
    def draw(cls, run: _Run, u: F64, t: int, pos: I64, channel: I64, active: Mask) -> _Answers:
        """Return the answers to every touch but pop-ups (which wait for the day's log-in)."""
        people = run.people
        draws = np.stack([u[4 + 4 * channel + k, pos] for k in range(4)])
        needs = np.array([_NEEDS_STAGE.get(c, 0) for c in JOURNEY_CHANNELS])[channel]
        reachable = active[pos] & ~run.opted_out[channel, pos] & (run.stage[pos] >= needs)
        popup = channel == _POPUP
        exposed = reachable & ~popup & (draws[0] < people.p_exposure[channel, pos])
        answers = cls(
            pos=pos,
            channel=channel,
            exposed=exposed,
            clicked=np.zeros(len(pos), dtype=bool),
            opted_out=np.zeros(len(pos), dtype=bool),
            at=8 * _US_HOUR + (draws[3] * 2 * _US_HOUR).astype(np.int64),
            click_at=np.zeros(len(pos), dtype=np.int64),
            opt_out_at=np.zeros(len(pos), dtype=np.int64),
            popup=popup & reachable,
            _u=draws,
        )
        answers.settle(run, t, exposed)
        return answers

    def pop_up(self, run: _Run, t: int, login: Mask, login_at: I64) -> None:
        """Answer the pop-ups: shown to the customers who log in today, at their log-in."""
        shown = self.popup & login[self.pos]
        shown &= self._u[0] < run.people.p_exposure[self.channel, self.pos]
        self.popup = shown
        self.at = np.where(shown, login_at[self.pos] + 30 * 10**6, self.at)
        self.exposed |= shown
        self.settle(run, t, shown)

    def settle(self, run: _Run, t: int, exposed: Mask) -> None:
        """Draw clicks and opt-outs of the newly `exposed`; start their effects and opt-outs."""
        people, pos, channel, draw = run.people, self.pos, self.channel, self._u
        p_click = people.p_click[channel, pos]
        p_opt_out = people.p_opt_out[channel, pos]
        clicked = exposed & (draw[1] < p_click)
        opted = exposed & (draw[2] < p_opt_out)
        # Given an answer, its uniform is uniform below p: it sets how long the answer took.
        self.click_at = np.where(
            clicked,
            self.at + _US_MINUTE + (draw[1] / np.maximum(p_click, 1e-12) * 29 * _US_MINUTE),
            self.click_at,
        ).astype(np.int64)
        self.opt_out_at = np.where(
            opted,
            self.at + _US_MINUTE + (draw[2] / np.maximum(p_opt_out, 1e-12) * 2 * _US_HOUR),
            self.opt_out_at,
        ).astype(np.int64)
        self.clicked |= clicked
        self.opted_out |= opted
        ends = t + PERSIST[channel[exposed]] - 1
        np.maximum.at(run.live_until, (channel[exposed], pos[exposed]), ends)
        run.opted_out[channel[opted], pos[opted]] = True


@dataclass(frozen=True)
class _Day:
    """What happened to a run's customers on one day (positions in the run)."""

    login: I64
    login_at: I64
    moved: I64
    milestone: I64  # index in MILESTONES of the milestone each moved customer reached
    moved_at: I64
    answers: _Answers


class JourneySimulator:
    """The journey world a day at a time: `step(day, touches)` returns the day's events."""

    def __init__(self, world: WorldFiles, config: JourneyConfig | None = None) -> None:
        self.config = config or JourneyConfig()
        self._population = _population(world, self.config)
        self._run = _Run(self._population, np.arange(self._population.people.n))
        self._next = 0  # index of the next day to step
        self._delivered: list[pl.DataFrame] = []
        people = self._population.people
        self.cohort = pl.DataFrame(
            {
                "customer_id": people.customer_id,
                "branch_id": people.branch_id,
                "entered_on": [
                    self.config.start + timedelta(days=int(d)) for d in people.entry_day
                ],
            },
            schema=COHORT_SCHEMA,
        )

    @property
    def days(self) -> list[date]:
        """Return every day of the run, in order."""
        return [self.config.start + timedelta(days=t) for t in range(self.config.days)]

    @property
    def stepped(self) -> int:
        """Return how many days have been stepped."""
        return self._next

    def step(self, day: date, touches: pl.DataFrame | None = None) -> pl.DataFrame:
        """Return `day`'s events (JOURNEY_EVENT_LOG rows, by time), answering `touches` first.

        `touches`: rows of JOURNEY_TOUCHES handed to the world since the last step, dated `day`
        or before; they are delivered on `day`. Days are stepped in order, none skipped.
        """
        t = self.config.day_index(day)
        if t != self._next or t >= self.config.days:
            expected = self.config.start + timedelta(days=self._next)
            raise WorldError(
                f"the journey world steps one day at a time from {self.config.start} for "
                f"{self.config.days} days: expected {expected}, got {day}"
            )
        handed = _checked_touches(touches, day)
        self._delivered.append(handed.with_columns(delivered_on=pl.lit(day, dtype=pl.Date)))
        pos, channel, kept = _touch_positions(handed, self._run.people, self.config)
        result = self._run.advance(t, pos, channel)
        self._next += 1
        return _event_frame(result, self._run.people.customer_id, kept["touch_id"], day)

    def delivered(self) -> pl.DataFrame:
        """Return every touch handed over so far (JOURNEY_TOUCHES) with its `delivered_on`."""
        empty = pl.DataFrame(schema={**JOURNEY_TOUCHES.columns, "delivered_on": pl.Date()})
        return pl.concat([empty, *self._delivered])

    def true_effects(
        self, strategy_id: str, *, customers: Iterable[int] | None = None
    ) -> pl.DataFrame:
        """Return `true_effects` of a strategy over the days stepped so far."""
        until = self.config.start + timedelta(days=self._next - 1)
        frame = _customer_effects(self._population, self.delivered(), strategy_id, customers, until)
        return _summarised(frame)

    def customer_effects(
        self, strategy_id: str, *, customers: Iterable[int] | None = None
    ) -> pl.DataFrame:
        """Return `customer_effects` of a strategy over the days stepped so far."""
        until = self.config.start + timedelta(days=self._next - 1)
        return _customer_effects(self._population, self.delivered(), strategy_id, customers, until)


def customer_effects(
    world: WorldFiles,
    delivered: pl.DataFrame,
    *,
    strategy_id: str,
    until: date,
    config: JourneyConfig | None = None,
    customers: Iterable[int] | None = None,
) -> pl.DataFrame:
    """Return each treated customer's events with and without the strategy's touches.

    The customers (default: every cohort customer a touch of the strategy was delivered to,
    silent arms aside) are replayed from the start to `until` twice with the same random
    numbers: with every touch of `delivered` (`JourneySimulator.delivered()`), and without the
    strategy's. Columns: customer_id, persona, age, since (the day the strategy's first touch
    was delivered to the customer; null: none, counted from the run's start), then
    `<event>_with` and `<event>_without` for every event of JOURNEY_EVENTS: how many times it
    happened from `since` to `until`. Before `since` both lives are the same, so the
    differences are the strategy's effects. Customers outside the cohort are left out.
    """
    population = _population(world, config or JourneyConfig())
    return _customer_effects(population, delivered, strategy_id, customers, until)


def true_effects(
    world: WorldFiles,
    delivered: pl.DataFrame,
    *,
    strategy_id: str,
    until: date,
    config: JourneyConfig | None = None,
    customers: Iterable[int] | None = None,
) -> pl.DataFrame:
    """Return the strategy's true average effect on the treated, one row per journey event.

    Arguments as `customer_effects`. Columns: event, customers, rate_with and rate_without (the
    share of the customers with the event at least once from their `since` to `until`), effect
    (rate_with - rate_without: for a milestone, its conversion lift; for opt_out, the opt-out
    rate the strategy caused), per_customer_with and per_customer_without (mean counts).
    """
    return _summarised(
        customer_effects(
            world,
            delivered,
            strategy_id=strategy_id,
            until=until,
            config=config,
            customers=customers,
        )
    )


def _checked_touches(touches: pl.DataFrame | None, day: date) -> pl.DataFrame:
    """Return the touches in JOURNEY_TOUCHES' columns; refuse what the world cannot deliver."""
    columns = JOURNEY_TOUCHES.columns
    if touches is None:
        return pl.DataFrame(schema=columns)
    missing = [name for name in columns if name not in touches.columns]
    if missing:
        raise WorldError(
            f"touches lack {', '.join(missing)}; hand the world rows of "
            "contracts.journeys.JOURNEY_TOUCHES"
        )
    frame = touches.select(list(columns)).cast(JOURNEY_TOUCHES.polars_schema)
    unknown = frame.filter(~pl.col("channel").is_in(JOURNEY_CHANNELS).fill_null(False))
    if unknown.height:
        raise WorldError(
            f"{unknown.height} touches name a channel outside {', '.join(JOURNEY_CHANNELS)}"
        )
    late = frame.filter(pl.col("day").is_null() | (pl.col("day") > day))
    if late.height:
        raise WorldError(
            f"{late.height} touches are dated after {day} (or not dated): hand a touch to the "
            "step of its own day or a later one"
        )
    return frame


def _touch_positions(
    touches: pl.DataFrame, people: JourneyPeople, config: JourneyConfig
) -> tuple[I64, I64, pl.DataFrame]:
    """Return the positions in `people` and channels of the touches the world delivers, and them.

    Touches of a silent arm and touches to customers outside `people` are left out.
    """
    kept = touches.filter(~pl.col("arm").is_in(config.silent_arms).fill_null(False))
    ids = kept["customer_id"].to_numpy().astype(np.int64)
    pos = np.minimum(np.searchsorted(people.customer_id, ids), max(people.n - 1, 0))
    inside = people.customer_id[pos] == ids if people.n else np.zeros(len(ids), dtype=bool)
    kept = kept.filter(pl.Series(inside))
    channel = (
        kept["channel"]
        .replace_strict(list(JOURNEY_CHANNELS), list(range(len(JOURNEY_CHANNELS))))
        .to_numpy()
        .astype(np.int64)
    )
    return pos[inside], channel, kept


def _event_frame(result: _Day, customer_id: I64, touch_ids: pl.Series, day: date) -> pl.DataFrame:
    """Return a day's events as JOURNEY_EVENT_LOG rows, sorted by time, customer and event."""
    answers = result.answers
    parts: list[tuple[I64, I64, I64, I64 | None]] = [
        (result.moved, result.milestone, result.moved_at, None),
        (result.login, np.full(len(result.login), _EVENT_ORDER["login"]), result.login_at, None),
    ]
    for event, mask, at in (
        ("exposure", answers.exposed, answers.at),
        ("click", answers.clicked, answers.click_at),
        ("opt_out", answers.opted_out, answers.opt_out_at),
    ):
        rows = np.flatnonzero(mask)
        parts.append((answers.pos[rows], np.full(len(rows), _EVENT_ORDER[event]), at[rows], rows))
    who = np.concatenate([p[0] for p in parts]).astype(np.int64)
    touch = np.concatenate(
        [np.full(len(p[0]), -1) if p[3] is None else p[3] for p in parts]
    ).astype(np.int64)
    midnight = (day - date(1970, 1, 1)).days * _US_DAY
    frame = pl.DataFrame(
        {
            "customer_id": customer_id[who],
            "order": np.concatenate([p[1] for p in parts]).astype(np.int64),
            "at": midnight + np.concatenate([p[2] for p in parts]).astype(np.int64),
            "touch_id": touch_ids.gather(np.maximum(touch, 0)).scatter(
                np.flatnonzero(touch < 0), None
            )
            if len(touch_ids)
            else pl.Series([None] * len(who), dtype=pl.String),
        }
    ).with_columns(event=pl.lit(pl.Series(JOURNEY_EVENTS)).gather(pl.col("order")))
    key = (
        pl.when(pl.col("touch_id").is_not_null())
        .then(pl.concat_str("touch_id", pl.lit(":"), "event"))
        .when(pl.col("event") == "login")
        .then(pl.concat_str(pl.col("customer_id").cast(pl.String), pl.lit(f":login:{day}")))
        .otherwise(pl.concat_str(pl.col("customer_id").cast(pl.String), pl.lit(":"), "event"))
    )
    return (
        frame.sort("at", "customer_id", "order", "touch_id")
        .select(
            key.alias("event_key"),
            "customer_id",
            "event",
            pl.col("at").cast(pl.Datetime("us")).alias("occurred_at"),
            "touch_id",
        )
        .cast(JOURNEY_EVENT_LOG.polars_schema)
    )


def _customer_effects(
    population: _Population,
    delivered: pl.DataFrame,
    strategy_id: str,
    customers: Iterable[int] | None,
    until: date,
) -> pl.DataFrame:
    """Return `customer_effects` on a loaded population."""
    config, people = population.config, population.people
    last = config.day_index(until)
    if not 0 <= last < config.days:
        raise WorldError(
            f"until must be a day of the run ({config.start} and the {config.days - 1} days "
            f"after), got {until}"
        )
    if "delivered_on" not in delivered.columns:
        raise WorldError("delivered lacks delivered_on; pass JourneySimulator.delivered()")
    touches = delivered.filter(
        ~pl.col("arm").is_in(config.silent_arms).fill_null(False)
        & (pl.col("delivered_on") <= until)
    )
    own = touches.filter(pl.col("strategy_id") == strategy_id)
    ids = own["customer_id"] if customers is None else pl.Series(list(customers), dtype=pl.Int64)
    wanted = np.unique(ids.to_numpy().astype(np.int64))
    rows = np.flatnonzero(np.isin(people.customer_id, wanted))
    first = own.group_by("customer_id").agg(pl.col("delivered_on").min().alias("since"))
    frame = (
        pl.DataFrame({"customer_id": people.customer_id[rows]}, schema={"customer_id": pl.Int64})
        .join(first, on="customer_id", how="left", maintain_order="left")
        .with_columns(
            persona=pl.Series(PERSONAS).gather(people.persona[rows].astype(np.int64)),
            age=pl.Series(people.age[rows]).cast(pl.Int64),
        )
    )
    since = (
        frame.select(
            (pl.col("since").fill_null(config.start) - pl.lit(config.start)).dt.total_days()
        )
        .to_series()
        .to_numpy()
        .astype(np.int64)
    )
    mine = touches.filter(
        pl.col("customer_id").is_in(pl.Series(people.customer_id[rows]).implode())
    )
    with_touches = _replay(population, rows, mine, last, since)
    without = _replay(
        population, rows, mine.filter(pl.col("strategy_id") != strategy_id), last, since
    )
    counts = {
        f"{event}_{arm}": counts[:, k]
        for k, event in enumerate(JOURNEY_EVENTS)
        for arm, counts in (("with", with_touches), ("without", without))
    }
    return frame.with_columns(**{name: pl.Series(v, dtype=pl.Int64) for name, v in counts.items()})


def _replay(
    population: _Population, rows: I64, touches: pl.DataFrame, last: int, since: I64
) -> I64:
    """Return each customer's event counts (JOURNEY_EVENTS order) on days since[i]..last."""
    run = _Run(population, rows)
    start = population.config.start
    by_day = touches.with_columns(
        t=(pl.col("delivered_on") - pl.lit(start)).dt.total_days()
    ).partition_by("t", as_dict=True)
    counts = np.zeros((len(rows), len(JOURNEY_EVENTS)), dtype=np.int64)
    answer = [JOURNEY_EVENTS.index(event) for event in ANSWER_EVENTS]
    empty = pl.DataFrame(schema=touches.schema)
    for t in range(last + 1):
        pos, channel, _ = _touch_positions(by_day.get((t,), empty), run.people, population.config)
        day = run.advance(t, pos, channel)
        counted = since <= t
        np.add.at(counts, (day.moved[counted[day.moved]], day.milestone[counted[day.moved]]), 1)
        counts[day.login[counted[day.login]], _EVENT_ORDER["login"]] += 1
        answers = day.answers
        for k, mask in zip(
            answer, (answers.exposed, answers.clicked, answers.opted_out), strict=True
        ):
            hits = answers.pos[mask & counted[answers.pos]]
            np.add.at(counts[:, k], hits, 1)
    return counts


def _summarised(frame: pl.DataFrame) -> pl.DataFrame:
    """Return `true_effects`' rows from `customer_effects`' frame."""
    rows = []
    for event in JOURNEY_EVENTS:
        treated = frame[f"{event}_with"].to_numpy()
        untreated = frame[f"{event}_without"].to_numpy()
        rate_with, rate_without = _mean(treated > 0), _mean(untreated > 0)
        rows.append(
            {
                "event": event,
                "customers": frame.height,
                "rate_with": rate_with,
                "rate_without": rate_without,
                "effect": rate_with - rate_without,
                "per_customer_with": _mean(treated),
                "per_customer_without": _mean(untreated),
            }
        )
    return pl.DataFrame(rows)


def _mean(values: np.ndarray[Any, Any]) -> float:
    """Return the mean of `values` as a float (NaN when there are none)."""
    return float(values.mean()) if len(values) else float("nan")
