"""The journey loop on a run folder: what `fusion journey ...`, the API and the demo call.

Each function takes the run folder and its open store and calls one step of `fusion.journeys`;
none holds a rule of its own but the one that joins the run's files to the engine:

    journey_profiles    the `profiles` frame the strategies' conditions read: customer_id, the
                        feature table's columns, score_<model> from the scores `fusion score`
                        keeps, and tags (the feature table's interest tags, as a list of ids)
    run_journey_days    the daily engine over a range of days, in order (a day done before is
                        replayed: its touches come back, nothing is written)
    journey_dry_run     one day computed without writing
    journey_readout     a strategy's readout, with its opt-out comparison, written as pages

Profiles are read point in time: the newest feature snapshot dated on or before the day (the
scores are the ones kept beside the lists, scored from the newest snapshot). Only the columns
the live strategies' conditions read are built, so a run whose conditions read none builds
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.statistics import Comparison, compare, json_ready
from fusion.features import TABLE_FILE, FeatureSet
from fusion.journeys.book import get_strategy, live_strategies
from fusion.journeys.engine import DayRun, dry_run, run_day
from fusion.journeys.flow import profile_columns
from fusion.journeys.lifecycle import naive_utc
from fusion.journeys.readout import JourneyReadout, readout, write_readout
from fusion.progress import Progress, report_to
from fusion.reports.disclosure import DEFAULT_K, check_k
from fusion.runfolder import RunFolder
from fusion.store import Store
from matcher.atomic import write_atomic

__all__ = [
    "SCORE_COLUMNS",
    "JourneyDays",
    "JourneyReadoutFiles",
    "OptOuts",
    "journey_dry_run",
    "journey_profiles",
    "journey_readout",
    "journey_readouts",
    "opt_out_comparison",
    "run_journey_days",
]

SCORE_COLUMNS = {
    "acquisition": "score",
    "rescue": "score",
    "uplift": "predicted_uplift",
}
"""The score files `fusion score` keeps (scores/<model>.parquet) and the column each ranks by:
the profile column `score_<model>`."""


def _snapshot_on_or_before(folder: RunFolder, day: date) -> Path | None:
    """Return the newest built feature folder dated on or before `day` (None: there is none)."""
    built = []
    for path in folder.features.glob("*"):
        try:
            dated = date.fromisoformat(path.name)
        except ValueError:
            continue
        if dated <= day and (path / "manifest.json").exists():
            built.append((dated, path))
    return max(built)[1] if built else None


def journey_profiles(
    folder: RunFolder,
    store: Store,
    *,
    day: date,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame | None:
    """Return the profiles the journey conditions read on `day`, or None when there are none.

    Columns: customer_id, then the feature table's columns, `score_<model>` for every score file
    kept (`SCORE_COLUMNS`), and `tags` (the customer's interest tag ids, a list; empty when the
    customer was not matched), one row per customer of the newest feature snapshot dated on or
    before `day`. `columns` limits the frame to those columns (unknown names are left out; the
    engine names what is missing); None builds them all. None when no snapshot is that old.
    `store` (the run's open store) is not read: profiles come from the run's files.
    """
    del store  # the profiles come from the run's files (the API's dry run passes its store)
    path = _snapshot_on_or_before(folder, day)
    if path is None:
        return None
    wanted = None if columns is None else set(columns)
    schema = pl.read_parquet_schema(path / TABLE_FILE)
    keep = [c for c in schema if c == "customer_id" or wanted is None or c in wanted]
    frame = pl.read_parquet(path / TABLE_FILE, columns=keep)
    for model, column in SCORE_COLUMNS.items():
        name = f"score_{model}"
        scores = folder.scores / f"{model}.parquet"
        if (wanted is None or name in wanted) and scores.is_file():
            found = pl.read_parquet(scores, columns=["customer_id", column]).rename({column: name})
            frame = frame.join(found.unique("customer_id"), on="customer_id", how="left")
    if wanted is None or "tags" in wanted:
        frame = frame.join(_tag_lists(path), on="customer_id", how="left").with_columns(
            pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.Int64)))
        )
    return frame


def _tag_lists(path: Path) -> pl.DataFrame:
    """Return customer_id, tags (list of tag ids) from the snapshot's tag CSR matrix."""
    features = FeatureSet.read(path)
    csr = features.tags.tocsr()
    tag_ids = np.asarray(features.tag_ids, dtype=np.int64)[csr.indices]
    offsets = np.asarray(csr.indptr, dtype=np.int64)
    rows = features.table.get_column("customer_id").cast(pl.Int64)
    lists = (
        pl.Series("tags", tag_ids)
        .to_frame()
        .with_columns(pl.Series("row", np.repeat(np.arange(rows.len()), np.diff(offsets))))
    )
    grouped = lists.group_by("row").agg(pl.col("tags"))
    return (
        pl.DataFrame({"row": np.arange(rows.len()), "customer_id": rows})
        .join(grouped, on="row", how="left")
        .select("customer_id", "tags")
    )


@dataclass(frozen=True)
class JourneyDays:
    """The days one call ran: each day's run (replayed when it was done before)."""

    runs: list[DayRun] = field(default_factory=list)

    @property
    def done(self) -> int:
        """Return the days run now (not replayed)."""
        return sum(not r.replayed for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """Return the days as JSON-ready data (per day: counts, delivered, held out)."""
        return {"days": [r.to_dict() for r in self.runs], "run": self.done}


def _profiles_for(
    folder: RunFolder, store: Store, day: date, strategy_ids: Sequence[str] | None = None
) -> pl.DataFrame | None:
    """Return the profiles of the columns the strategies' conditions read (None: none read)."""
    if strategy_ids is None:
        strategies = {r.strategy_id: r.strategy for r in live_strategies(store)}
    else:
        strategies = {name: get_strategy(store, name).strategy for name in strategy_ids}
    wanted = profile_columns(strategies)
    if not wanted:
        return None
    return journey_profiles(folder, store, day=day, columns=wanted)


def run_journey_days(
    folder: RunFolder,
    store: Store,
    start: date,
    end: date,
    *,
    now: datetime,
    progress: Progress | None = None,
) -> JourneyDays:
    """Return the engine's runs of every day from `start` to `end`, in order (one transaction
    each). A day done before comes back replayed; a day before the latest one run and not done
    is refused (ConfigError), as `fusion.journeys.engine.run_day` refuses it."""
    if end < start:
        raise ConfigError(
            f"the days run from {start} to {end}: the end comes before the start; swap them",
            setting="to",
        )
    report = report_to(progress)
    total = (end - start).days + 1
    runs: list[DayRun] = []
    cached: tuple[tuple[str, ...], Path | None, pl.DataFrame | None] | None = None
    for offset in range(total):
        day = start + timedelta(days=offset)
        strategies = {r.strategy_id: r.strategy for r in live_strategies(store)}
        wanted = tuple(profile_columns(strategies))
        snapshot = _snapshot_on_or_before(folder, day) if wanted else None
        if cached is None or cached[:2] != (wanted, snapshot):
            # Profiles change only with the strategies' columns or the snapshot: built once.
            profiles = journey_profiles(folder, store, day=day, columns=wanted) if wanted else None
            cached = (wanted, snapshot, profiles)
        runs.append(run_day(store, day, now=now, profiles=cached[2]))
        report(f"day {day}", (offset + 1) / total)
    return JourneyDays(runs)


def journey_dry_run(
    folder: RunFolder,
    store: Store,
    *,
    day: date,
    now: datetime,
    strategy_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Return per strategy and node what the run of `day` would do (nothing is written)."""
    profiles = _profiles_for(folder, store, day, strategy_ids)
    return dry_run(store, day, now=now, profiles=profiles, strategy_ids=strategy_ids)


_OPT_OUTS_SQL = """
SELECT s.arm, count(*) AS customers,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM journey_events AS e
           WHERE e.customer_id = s.customer_id AND e.event = 'opt_out'
             AND e.occurred_at >= s.entered_on AND e.occurred_at < $end
             AND e.received_at <= $now)) AS opted_out
FROM journey_state AS s WHERE s.strategy_id = $id
GROUP BY s.arm
"""


@dataclass(frozen=True)
class OptOuts:
    """The opt-out rate of the treatment arm against the control's.

    comparison: `fusion.campaigns.statistics.compare` of the arms. When the control's opt-outs
        number under k they are withheld (`control_withheld`) and the comparison is made with
        k - 1 of them, the most the control can have: its difference and interval are then the
        smallest the data allow, so a lower bound above 0 still says the strategy harms.
    """

    comparison: Comparison
    control_withheld: bool

    @property
    def harmful(self) -> bool:
        """Return whether the treatment arm opts out significantly more than the control."""
        return self.comparison.diff_ci_low > 0

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON-ready data (the withheld control count left out)."""
        found: dict[str, Any] = json_ready(self.comparison.to_dict())
        if self.control_withheld:
            found = {**found, "successes_c": None, "rate_c": None}
        return {**found, "control_withheld": self.control_withheld, "harmful": self.harmful}


def opt_out_comparison(
    store: Store, strategy_id: str, *, as_of: date, now: datetime, k: int = DEFAULT_K
) -> OptOuts | None:
    """Return the opt-outs of the treatment arm against the control's (None: a treatment cell
    or the control's size is under k).

    A customer counts as opted out with an opt_out event (on any touch, of any strategy or
    campaign) from the day of entering to the end of `as_of`: the control's opt-outs are the
    ones the strategy did not cause, so the difference estimates the opt-out rate the strategy
    caused (Newcombe's interval). A control count under k is withheld (`OptOuts`).
    """
    check_k(k)
    end = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    rows = store.execute(
        _OPT_OUTS_SQL, {"id": strategy_id, "end": end, "now": naive_utc(now)}
    ).fetchall()
    arms = {str(arm): (int(n), int(opted)) for arm, n, opted in rows}
    (n_t, o_t), (n_c, o_c) = arms.get("treatment", (0, 0)), arms.get("control", (0, 0))
    if min(o_t, n_t - o_t, n_c - o_c) < k:
        return None
    withheld = o_c < k
    return OptOuts(compare(o_t, n_t, k - 1 if withheld else o_c, n_c), withheld)


@dataclass(frozen=True)
class JourneyReadoutFiles:
    """A strategy's readout, its opt-out comparison, and the files they were written to."""

    readout: JourneyReadout
    opt_outs: OptOuts | None
    files: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        """Return the readout as JSON-ready data, the opt-out comparison under "opt_outs"."""
        return {
            **self.readout.to_dict(),
            "opt_outs": self.opt_outs.to_dict() if self.opt_outs else None,
            "files": {name: str(path) for name, path in self.files.items()},
        }


def journey_readout(
    folder: RunFolder,
    store: Store,
    strategy_id: str,
    *,
    as_of: date,
    now: datetime,
    k: int = DEFAULT_K,
    out_dir: Path | None = None,
) -> JourneyReadoutFiles:
    """Return the strategy's readout as of `as_of`, written to `out_dir` (default:
    reports/journeys/<strategy>/): readout.html, funnel.png, readout.json, and opt_outs.json."""
    result = readout(store, strategy_id, as_of=as_of, now=now, k=k)
    harm = opt_out_comparison(store, strategy_id, as_of=as_of, now=now, k=k)
    target = out_dir or folder.reports / "journeys" / strategy_id
    page = write_readout(result, target)
    opt_outs = write_atomic(
        target / "opt_outs.json",
        json.dumps(harm.to_dict() if harm else None, indent=2) + "\n",
    )
    return JourneyReadoutFiles(
        result,
        harm,
        {"html": page, "json": target / "readout.json", "opt_outs": opt_outs},
    )


def journey_readouts(
    folder: RunFolder,
    store: Store,
    *,
    as_of: date,
    now: datetime,
    strategy_ids: Sequence[str],
    k: int = DEFAULT_K,
) -> dict[str, JourneyReadoutFiles]:
    """Return the readouts of the strategies, each written under reports/journeys/<id>/."""
    return {
        name: journey_readout(folder, store, name, as_of=as_of, now=now, k=k)
        for name in strategy_ids
    }
