"""Benchmark of one campaign plan: screen, take entrants, arbitrate, assign arms over 1M x 5.

The world: `n` customers in 20 branches, 5 campaigns each taking 40-60% of them (overlapping;
two without an uplift model, so their rows tie on value and the keyed tiebreak decides),
suppression lists covering ~2% of customers, ~n contacts over the last 60 days, complaints,
holders, earlier plans' assignments and used channel slots. The baseline is the plain DuckDB
join-and-filter a team would write first, measured in the same run on the same frames: anti-join
the active suppressions, the recent contacts and the recent complaints, then one campaign per
customer by row_number() over (partition by customer_id order by priority, expected_value desc),
with no capacity, no frequency cap per window, no keyed tiebreak, no entrants and no arms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from labs.bench.figures import Figure, best_of

__all__ = ["bench_campaign_plan", "bench_outcome_events"]

_DAY = date(2026, 3, 2)
_CAMPAIGNS = ("rescue-call", "card-sms", "loan-sms", "app-push-mb", "wealth-call")
_PRIORITY = (1, 2, 2, 3, 4)
_CHANNEL = ("call_centre", "sms", "sms", "app_push", "call_centre")
_CAPACITY = (150, 2_000, 2_000, 5_000, 150)
_SHARE = (0.45, 0.6, 0.4, 0.55, 0.5)
_CONTROL = (0.5, 0.05, 0.05, 0.5, 0.5)
_VALUE = (120.0, 40.0, 60.0, 20.0, 200.0)
_COST = (2.5, 0.05, 0.05, 0.01, 2.5)
_BRANCHES = 20
_CONSTANT_UPLIFT = ("card-sms", "app-push-mb")


@dataclass(frozen=True)
class _World:
    candidates: pl.DataFrame
    suppressions: pl.DataFrame
    contacts: pl.DataFrame
    complaints: pl.DataFrame
    holders: pl.DataFrame
    taken: pl.DataFrame
    used_slots: pl.DataFrame


def bench_campaign_plan(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """One plan of 5 campaigns over `n` customers, end to end, against a plain DuckDB join."""
    del work
    world = _world(n, seed=11)
    plan, query = _planner(world), _baseline(world)
    kept: list[int] = []
    plain: list[int] = []
    # Interleaved, best of 2 each: a burst of load on a shared machine hits both alike.
    value = baseline = float("inf")
    for _ in range(2):
        value = min(value, best_of(lambda: kept.append(plan()), 1))
        baseline = min(baseline, best_of(lambda: plain.append(query()), 1))
    rows = world.candidates.height
    yield Figure(
        name="campaigns.plan_1m_x5_seconds",
        value=value,
        unit="s",
        baseline=baseline,
        baseline_name="plain DuckDB anti-joins + row_number() per customer, no capacity or arms",
        ratio=baseline / value,
        target="within 3x of the plain DuckDB join",
        met=value <= 3 * baseline,
        note=f"{rows:,} candidate rows of {n:,} customers x 5 campaigns; the plan assigns "
        f"{kept[-1]:,} (the baseline keeps {plain[-1]:,}, without capacity)",
    )


def _planner(world: _World) -> Callable[[], int]:
    """Return the plan as a call (screen, take entrants, arbitrate, assign arms): rows assigned."""
    from fusion.campaigns.arbitration import ArbitrationPolicy, arbitrate
    from fusion.campaigns.assignment import assign_arms, take_entrants
    from fusion.campaigns.declaration import Screening
    from fusion.campaigns.screening import ScreeningContext, screen

    rules = {c: Screening() for c in _CAMPAIGNS}
    rules["app-push-mb"] = Screening(exclude_holders=["mb_registered"])
    rules["card-sms"] = Screening(cooling_off_days=7, exclude_holders=["card_count"])
    policies = {
        c: ArbitrationPolicy(
            priority=_PRIORITY[i],
            channel=_CHANNEL[i],
            capacity_per_branch_per_day=_CAPACITY[i],
            window_days=28,
            control_share=_CONTROL[i],
            value=_VALUE[i],
            cost_per_contact=_COST[i],
        )
        for i, c in enumerate(_CAMPAIGNS)
    }
    context = ScreeningContext(
        day=_DAY,
        suppressions=world.suppressions,
        contacts=world.contacts,
        complaints=world.complaints,
        holders=world.holders,
    )
    salts = {c: bytes([i + 1]) * 32 for i, c in enumerate(_CAMPAIGNS)}
    shares = dict(zip(_CAMPAIGNS, _CONTROL, strict=True))
    # The first campaign is in its pilot (5% of its audience), the others at full launch.
    quotas: dict[str, int | None] = dict.fromkeys(_CAMPAIGNS)
    quotas[_CAMPAIGNS[0]] = int(0.05 * world.candidates.height / len(_CAMPAIGNS))

    def plan() -> int:
        # In the planner's order: stage quotas before arbitration, so no slot goes to a
        # customer the stage would not take.
        screened = screen(world.candidates, rules, context)
        entrants = take_entrants(screened.frame, salts, quotas)
        arbitrated = arbitrate(
            entrants,
            policies,
            taken=world.taken,
            used_slots=world.used_slots,
            tiebreak_key="bench-tiebreak",
        )
        return assign_arms(arbitrated.frame, salts, shares).height

    return plan


def _baseline(world: _World) -> Callable[[], int]:
    """Return the plain DuckDB join-and-filter as a call returning its row count."""
    import duckdb

    policies = pl.DataFrame(
        {
            "campaign_id": list(_CAMPAIGNS),
            "priority": list(_PRIORITY),
            "value": list(_VALUE),
            "cost": list(_COST),
        }
    )
    sql = """
        WITH scored AS (
            SELECT c.*, c.expected_uplift * p.value - p.cost AS expected_value, p.priority
            FROM candidates c JOIN policies p USING (campaign_id)
            ANTI JOIN (SELECT customer_id FROM suppressions
                       WHERE since <= $day AND (until IS NULL OR until > $day)) s
                USING (customer_id)
            ANTI JOIN (SELECT customer_id FROM contacts
                       WHERE day >= $day - INTERVAL 14 DAY AND day < $day) r
                USING (customer_id)
            ANTI JOIN (SELECT customer_id FROM complaints
                       WHERE occurred_at >= $day - INTERVAL 6 MONTH) k
                USING (customer_id)
        )
        SELECT * EXCLUDE (rn) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY customer_id ORDER BY priority, expected_value DESC) AS rn
            FROM scored)
        WHERE rn = 1
    """
    tables = {
        "candidates": world.candidates,
        "suppressions": world.suppressions,
        "contacts": world.contacts,
        "complaints": world.complaints,
        "policies": policies,
    }

    def query() -> int:
        con = duckdb.connect()
        try:
            for name, frame in tables.items():
                con.register(name, frame.to_arrow())
            return con.execute(sql, {"day": _DAY}).pl().height
        finally:
            con.close()

    return query


def _world(n: int, *, seed: int) -> _World:
    """Return the synthetic plan inputs for `n` customers, built without row loops."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    branch = np.char.add("B", np.char.zfill(rng.integers(1, _BRANCHES + 1, n).astype(str), 2))
    parts = []
    for i, campaign in enumerate(_CAMPAIGNS):
        chosen = rng.random(n) < _SHARE[i]
        k = int(chosen.sum())
        decile = rng.integers(1, 11, k).astype(np.int8)
        parts.append(
            pl.DataFrame(
                {
                    "campaign_id": np.full(k, campaign),
                    "customer_id": ids[chosen],
                    "branch_id": branch[chosen],
                    "decile": pl.Series(decile).scatter(np.flatnonzero(rng.random(k) < 0.05), None),
                    # Two campaigns have no uplift model: their declared constant ties them all.
                    "expected_uplift": np.full(k, 0.01)
                    if campaign in _CONSTANT_UPLIFT
                    else rng.uniform(0.0, 0.05, k),
                }
            )
        )
    return _World(
        candidates=pl.concat(parts),
        suppressions=_suppressions(rng, ids),
        contacts=_contacts(rng, ids),
        complaints=_complaints(rng, ids),
        holders=pl.DataFrame(
            {
                "customer_id": ids,
                "mb_registered": rng.random(n) < 0.3,
                "card_count": rng.poisson(0.4, n).astype(np.int32),
            }
        ),
        taken=pl.DataFrame(
            {"customer_id": ids[rng.random(n) < 0.05], "campaign_id": "earlier-campaign"}
        ),
        used_slots=pl.DataFrame(
            {
                "channel": "call_centre",
                "branch_id": [f"B{b:02d}" for b in range(1, _BRANCHES + 1)],
                "used": rng.integers(0, 300, _BRANCHES),
            }
        ),
    )


def _suppressions(rng: np.random.Generator, ids: np.ndarray) -> pl.DataFrame:
    """Return ~2% of customers on a list; a tenth of entries expired, a few not yet started."""
    chosen = ids[rng.random(ids.size) < 0.02]
    k = chosen.size
    since = np.datetime64(_DAY) - rng.integers(-3, 700, k).astype("timedelta64[D]")
    expired = rng.random(k) < 0.1
    until = np.datetime64(_DAY) - rng.integers(0, 30, k).astype("timedelta64[D]")
    return pl.DataFrame(
        {
            "list_name": rng.choice(["do-not-disturb", "opt-out"], k),
            "customer_id": chosen,
            "since": pl.Series(since).cast(pl.Date),
            "until": pl.Series(until).cast(pl.Date),
            "expired": expired,
        }
    ).select(
        "list_name",
        "customer_id",
        "since",
        pl.when(pl.col("expired")).then(pl.col("until")).alias("until"),
    )


def _contacts(rng: np.random.Generator, ids: np.ndarray) -> pl.DataFrame:
    """Return one contact per customer on average, over the 60 days before the plan."""
    k = ids.size
    days = np.datetime64(_DAY) - rng.integers(1, 61, k).astype("timedelta64[D]")
    return pl.DataFrame(
        {
            "customer_id": rng.choice(ids, k),
            "source": rng.choice(["earlier-campaign", "service"], k),
            "channel": rng.choice(["sms", "call_centre"], k),
            "day": pl.Series(days).cast(pl.Date),
        }
    )


def _complaints(rng: np.random.Generator, ids: np.ndarray) -> pl.DataFrame:
    """Return complaints by ~0.5% of customers over the last year."""
    chosen = ids[rng.random(ids.size) < 0.005]
    start = datetime.combine(_DAY, datetime.min.time()) - timedelta(days=365)
    seconds = rng.integers(0, 365 * 86_400, chosen.size).astype("timedelta64[s]")
    return pl.DataFrame(
        {"customer_id": chosen, "occurred_at": pl.Series(np.datetime64(start) + seconds)}
    )


def bench_outcome_events(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """Funnel events checked and recorded per second, against a plain Parquet load into DuckDB."""
    import duckdb

    from fusion.campaigns.book import create_campaign
    from fusion.campaigns.outcomes import record_events
    from fusion.store import Store
    from labs.demo_campaigns import demo_declarations
    from matcher.keyring import Keyring

    rng = np.random.default_rng(5)
    customers = max(1, n // 4)
    ids = np.arange(1, customers + 1, dtype=np.int64)
    keyring = Keyring.init(work / "bank-keys", role="bank")
    campaign = demo_declarations([1])[0]
    events = pl.DataFrame(
        {
            "campaign_id": campaign.name,
            "customer_id": rng.choice(ids, n),
            "event": rng.choice(["delivered", "contacted", "reached", "converted"], n),
            "occurred_at": datetime(2026, 10, 1)
            + pl.Series(rng.integers(0, 86_400_000 * 28, n)).cast(pl.Duration("ms")),
        }
    ).with_columns(
        pl.when(pl.col("event") == "converted").then(pl.lit(120.0)).alias("amount"),
        pl.lit(None, dtype=pl.String).alias("event_key"),
    )  # fmt: skip
    now = datetime(2027, 1, 1)
    with Store.open(work / "events.duckdb", key=keyring.store_key()) as store:
        create_campaign(store, campaign, actor="bench", now=now)
        store.execute("UPDATE campaigns SET stage = 'full'")
        base = pl.DataFrame({"customer_id": ids, "branch_id": "B001"})
        store.insert_frame("customers", base)
        store.insert_frame(
            "assignments",
            base.with_columns(
                pl.lit(campaign.name).alias("campaign_id"), pl.lit("p").alias("plan_id"),
                pl.lit("full").alias("stage"), pl.lit("treatment").alias("arm"),
                pl.lit("B001|d1").alias("stratum"), pl.lit(date(2026, 10, 1)).alias("window_start"),
                pl.lit(date(2026, 10, 29)).alias("window_end"), pl.lit(now).alias("assigned_at"),
            ),
        )  # fmt: skip
        start = time.perf_counter()
        recorded = record_events(store, events, source="bench", now=now)
        seconds = time.perf_counter() - start
    plain = work / "events.parquet"
    events.write_parquet(plain)

    def baseline_load() -> None:
        con = duckdb.connect(str(work / "plain.duckdb"))
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_parquet(?)", [str(plain)])
        con.close()

    base_s = best_of(baseline_load, 2)
    yield Figure(
        name="campaigns.outcome_events_per_s",
        value=n / seconds,
        unit="events/s",
        baseline=n / base_s,
        baseline_name="plain DuckDB load of the same events Parquet, no checks, no encryption",
        ratio=base_s / seconds,
        target="reported",
        met=None,
        note=f"{recorded.recorded:,} recorded, {recorded.refused.height:,} refused, into an "
        f"encrypted store with {customers:,} customers assigned",
    )
