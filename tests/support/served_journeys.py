"""A served run with journeys in it: the shared API demo run copied, its store given journey
events, three strategies and a month of daily runs BEFORE the service starts (the service is
the single writer of its DuckDB file), then served with one token per role.

    journey-push   the activation push (examples/journeys/activation-push.toml), whitelist
                   passed, in small traffic (pilot_share 0.5) for the rest of October, its
                   channels' exposure, click and opt-out answers loaded day by day; its gate
                   to the A/B test waits for more exposed customers than the world has
    journey-idle   the idle SMS (examples/journeys/idle-sms.toml) at the whitelist stage,
                   its named customer touched and never confirmed exposed (a refused gate)
    journey-draft  the idle SMS again, still a draft
"""

from __future__ import annotations

import pickle
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from fusion.journeys.book import create_strategy, promote_strategy
from fusion.journeys.engine import DayRun, run_day
from fusion.journeys.events import load_events
from fusion.journeys.strategy import load_strategy
from fusion.runfolder import RunFolder
from fusion.store import Store
from fusion.tokens import create_token
from matcher.keyring import Keyring
from tests.support.journeys import DAY0, EXAMPLES, journey_events
from tests.support.server import NOW, ServedRun, serve_copy
from tests.support.shared_runs import shared_run

__all__ = [
    "DRAFT",
    "IDLE",
    "LAST_DAY",
    "PUSH",
    "WRITTEN_AT",
    "JourneyWorld",
    "journey_run",
    "push_document",
    "serve_journeys",
]

PUSH, IDLE, DRAFT = "journey-push", "journey-idle", "journey-draft"
LAST_DAY = date(2026, 10, 31)  # the last day run before serving
WRITTEN_AT = datetime(2026, 12, 1, tzinfo=UTC)  # the fixture's clock: before any test's "now"
_WHITELIST_DAYS = 4  # entry, 3 days' wait, then the push
_CUSTOMERS = 1500  # of the demo's 6,000, given a journey


@dataclass(frozen=True)
class JourneyWorld:
    """What the fixture wrote: who has events, the named customers, the touches delivered."""

    customers: list[int]  # customers with journey events
    whitelist: list[int]  # journey-push's named customers (no events of their own)
    idle_whitelist: list[int]
    delivered: pl.DataFrame  # journey-push's delivered touches: touch_id, customer_id, day
    marketer: str = field(repr=False)  # a marketer token (the served run's tokens have none)


def push_document(name: str = PUSH, **changes: Any) -> dict[str, Any]:
    """Return the activation push's document, renamed, with top-level changes."""
    document = tomllib.loads((EXAMPLES / "activation-push.toml").read_text(encoding="utf-8"))
    return {**document, "name": name, **changes}


def _idle_document(name: str, whitelist: list[int]) -> dict[str, Any]:
    document = tomllib.loads((EXAMPLES / "idle-sms.toml").read_text(encoding="utf-8"))
    document["stages"]["whitelist"] = whitelist
    return {**document, "name": name}


def _events_of(ids: list[int]) -> pl.DataFrame:
    """Return the seeded world's milestone and log-in events, on the run's own customer ids."""
    events = journey_events(len(ids), seed=7, first=0, spread_days=30, days=60)
    mapping = pl.DataFrame({"customer_id": range(len(ids)), "bank_id": ids})
    return (
        events.join(mapping.cast({"customer_id": pl.Int64}), on="customer_id")
        .with_columns(pl.col("bank_id").alias("customer_id"))
        .drop("bank_id")
    )


def _named(push: list[int], idle: list[int]) -> pl.DataFrame:
    """Return the named customers' own events: all downloaded on the first day (the journey's
    horizon counts from it); the push's named customers registered too (so they are stuck
    before binding a card)."""
    at = datetime.combine(DAY0, time(8))
    rows = [(c, "download", at) for c in (*push, *idle)] + [
        (c, "register", at + timedelta(hours=1)) for c in push
    ]
    return pl.DataFrame(
        rows,
        schema={"customer_id": pl.Int64, "event": pl.String, "occurred_at": pl.Datetime("us")},
        orient="row",
    )


def _answers(run: DayRun, rng: np.random.Generator, *, everyone: bool) -> pl.DataFrame:
    """Return the channels' answers to a day's delivered touches: most exposed (`everyone`:
    all), some click, a few opt out, each an hour or two after the touch."""
    touches = run.touches
    if touches.is_empty():
        return pl.DataFrame()
    n = touches.height
    draw = np.zeros(n) if everyone else rng.random(n)
    at = datetime.combine(run.day, time(20))
    rows = []
    for touch_id, customer, u in zip(
        touches["touch_id"], touches["customer_id"], draw, strict=True
    ):
        if u < 0.85:
            rows.append((touch_id, customer, "exposure", at))
        if u < 0.3:
            rows.append((touch_id, customer, "click", at + timedelta(hours=1)))
        if 0.84 < u < 0.85:
            rows.append((touch_id, customer, "opt_out", at + timedelta(hours=2)))
    return pl.DataFrame(
        rows,
        schema={
            "touch_id": pl.String,
            "customer_id": pl.Int64,
            "event": pl.String,
            "occurred_at": pl.Datetime("us"),
        },
        orient="row",
    )


def _write_journeys(run: Path) -> JourneyWorld:
    """Write the journey world into the store of run folder `run` (not served now)."""
    folder = RunFolder(run)
    keyring = Keyring.open(folder.bank_keys)
    now, actor = WRITTEN_AT, "fixture"
    rng = np.random.default_rng(11)
    with Store.open(folder.store, key=keyring.store_key()) as store:
        ids = [
            int(r[0])
            for r in store.execute("SELECT customer_id FROM customers ORDER BY 1").fetchall()
        ]
        chosen = sorted(int(i) for i in rng.choice(ids, _CUSTOMERS + 3, replace=False))
        whitelist, idle_whitelist, customers = chosen[:2], chosen[2:3], chosen[3:]
        events = pl.concat(
            [_events_of(customers), _named(whitelist, idle_whitelist)], how="diagonal"
        )
        load_events(store, events, source="fixture-app", now=now)
        push = load_strategy(
            push_document(
                stages={
                    **push_document()["stages"],
                    "whitelist": whitelist,
                    "pilot_share": 0.5,
                    "guardrails": {"min_exposed": 100_000, "opt_out_rate_max": 0.05},
                }
            )
        )
        for strategy in (push, load_strategy(_idle_document(IDLE, idle_whitelist))):
            create_strategy(store, strategy, actor=actor, now=now)
            promote_strategy(store, strategy.name, actor=actor, now=now)
        create_strategy(
            store, load_strategy(_idle_document(DRAFT, whitelist)), actor=actor, now=now
        )
        delivered = []
        day = DAY0
        while day <= LAST_DAY:
            ran = run_day(store, day, now=now)
            pushed = ran.touches.filter(pl.col("strategy_id") == PUSH)
            delivered.append(pushed.select("touch_id", "customer_id", "day"))
            whitelisting = day < DAY0 + timedelta(days=_WHITELIST_DAYS)
            answers = _answers(
                DayRun(day, False, pushed, ran.held_out, ran.counts), rng, everyone=whitelisting
            )
            if answers.height:
                load_events(store, answers, source="fixture-channel", now=now)
            if day == DAY0 + timedelta(days=_WHITELIST_DAYS - 1):
                promote_strategy(store, PUSH, actor=actor, now=now)  # the whitelist confirmed
            day += timedelta(days=1)
        marketer = create_token(store, role="marketer", now=NOW, label="journeys").secret
    return JourneyWorld(customers, whitelist, idle_whitelist, pl.concat(delivered), marketer)


def journey_run(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, demo_run: Path
) -> tuple[Path, JourneyWorld]:
    """Return a copy of `demo_run` with the journey world written into its store, and the world.

    Built once per test run whichever module or xdist worker asks first (`shared_run`); tests
    serve copies of it (`serve_journeys`).
    """

    def build(run: Path) -> str:
        shutil.copytree(demo_run, run, symlinks=True)
        world = _write_journeys(run)
        (run.parent / f"{run.name}.world.pickle").write_bytes(pickle.dumps(world))
        return "written"

    run, _ = shared_run(tmp_path_factory, worker_id, "journeys-run", build)
    world: JourneyWorld = pickle.loads((run.parent / f"{run.name}.world.pickle").read_bytes())
    return run, world


@contextmanager
def serve_journeys(
    journeys: tuple[Path, JourneyWorld], root: Path
) -> Iterator[tuple[ServedRun, JourneyWorld]]:
    """Serve a copy of the run of `journey_run`, with its journey world."""
    run, world = journeys
    with serve_copy(run, root) as served:
        yield served, world
