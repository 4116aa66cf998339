"""A small journey world for the engine's tests: customers in a real store and their first days'
events drawn from a seed, the two example strategies, and a run killed as it commits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.journeys import MILESTONES
from fusion.journeys.strategy import Strategy, load_strategy
from fusion.store import Store

__all__ = [
    "DAY0",
    "EXAMPLES",
    "NOW",
    "example",
    "journey_events",
    "killed_mid_run",
    "seed_customers",
    "strategy",
]

DAY0 = date(2026, 10, 1)
NOW = datetime(2027, 6, 1)  # after every event: each is received
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"
_PROBABILITY = {
    "first_open": 0.9,
    "register": 0.75,
    "bind_card": 0.6,
    "first_transaction": 0.6,
    "assets_10k": 0.4,
}


def seed_customers(store: Store, n: int, *, first: int = 1_000_001, branches: int = 4) -> None:
    """Insert customers first .. first + n - 1 into the store, in B001 .. B00<branches>."""
    store.execute(
        "INSERT INTO customers (customer_id, branch_id) SELECT range, "
        "'B00' || (1 + range % ?)::VARCHAR FROM range(?, ?)",
        [branches, first, first + n],
    )


def journey_events(
    n: int, *, seed: int = 1, first: int = 1_000_001, spread_days: int = 30, days: int = 60
) -> pl.DataFrame:
    """Return the milestone and log-in events of n customers (JOURNEY_EVENT_LOG columns).

    Downloads spread over `spread_days` from DAY0; each later milestone follows the previous one
    after 0-6 days with its probability; registered customers log in on ~15% of days.
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n, dtype=np.int64)
    day = rng.integers(0, spread_days, n).astype(np.int64)
    alive = np.ones(n, dtype=bool)
    rows: list[pl.DataFrame] = []
    for milestone in MILESTONES:
        if milestone != "download":
            alive &= rng.random(n) < _PROBABILITY[milestone]
            day = day + rng.integers(0, 7, n)
        keep = alive & (day < days)
        rows.append(_events(ids[keep], milestone, day[keep], rng))
        if milestone == "register":
            registered, start = ids[keep], day[keep]
    logins = rng.random((registered.size, days)) < 0.15
    who, when = np.nonzero(logins & (np.arange(days)[None, :] > start[:, None]))
    rows.append(_events(registered[who], "login", when.astype(np.int64), rng))
    return pl.concat(rows).sort("occurred_at", "customer_id")


def _events(ids: np.ndarray, event: str, day: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    seconds = rng.integers(8 * 3600, 22 * 3600, ids.size)
    start = datetime.combine(DAY0, datetime.min.time())
    return pl.DataFrame(
        {
            "event_key": None,
            "customer_id": ids,
            "event": event,
            "occurred_at": pl.Series((day * 86_400 + seconds) * 1000).cast(pl.Duration("ms"))
            + start,
            "touch_id": None,
        },
        schema={
            "event_key": pl.String,
            "customer_id": pl.Int64,
            "event": pl.String,
            "occurred_at": pl.Datetime("us"),
            "touch_id": pl.String,
        },
    )


def example(name: str, **changes: Any) -> Strategy:
    """Return an example strategy (examples/journeys/<name>.toml) with top-level changes."""
    import tomllib

    document = tomllib.loads((EXAMPLES / f"{name}.toml").read_text())
    document.update(changes)
    return load_strategy(document)


def strategy(name: str, nodes: list[dict[str, Any]], **changes: Any) -> Strategy:
    """Return a valid strategy named `name` with the given nodes (no control by default is not
    allowed: control_share is at least 0.05)."""
    document: dict[str, Any] = {
        "name": name,
        "priority": 1,
        "goal": "bind_card",
        "screening": {"cooling_off_days": 0, "frequency_cap": {"contacts": 10, "days": 30}},
        "stages": {
            "whitelist": [1_000_001],
            "ab": {"baseline_rate": 0.2, "minimum_detectable_effect": 0.1},
        },
        "nodes": nodes,
    }
    document.update(changes)
    return load_strategy(document)


_ROOT = Path(__file__).resolve().parents[2]
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date, datetime
    import fusion.store
    from fusion.journeys.engine import run_day
    from fusion.store import Store, StoreConfig

    path, ext, key, day = sys.argv[1:5]
    def die(self, con):
        os.kill(os.getpid(), signal.SIGKILL)
    config = StoreConfig(path, threads=2, extension_directory=ext)
    with Store.open(config, key=key) as store:
        fusion.store.Store._commit = die
        run_day(store, date.fromisoformat(day), now=datetime(2027, 6, 1))
    """
)


def killed_mid_run(path: Path, extensions: Path, key: str, day: date) -> None:
    """Run `run_day` of `day` on the store in a subprocess SIGKILLed as it commits."""
    env = os.environ | {"PYTHONPATH": str(_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, str(path), str(extensions), key, day.isoformat()],
        env=env,
        capture_output=True,
        cwd=_ROOT,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
