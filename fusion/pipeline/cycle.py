"""One scheduled cycle for a snapshot: ingest -> match -> features -> score -> monitor -> lists.

`run_cycle` is what `fusion cycle --snapshot D` runs from cron or an orchestrator. It is
idempotent: each step that finished is recorded in `<run>/cycles/<D>/state.json` with what it
depended on, and a step whose inputs have not changed since is skipped, so a second run for the
same snapshot writes nothing and says so. A step that failed is simply run again next time.

    ingest    the sealed files waiting in the inbox (skipped when none wait)
    match     the extract for D under the current salt epoch (skipped when D is matched under
              it; the extract is needed only when it is not)
    features  D's feature table (skipped when it was built and the match did not run again)
    score     the base scored with the CURRENT models; the lists are written to the cycle's
              staging folder, not yet where branches read them (skipped when the same model
              versions scored D's table already)
    monitor   `fusion.pipeline.monitoring`: the report, the latest result for /metrics
    lists     the staged lists swapped in where branches read them; withheld on a monitoring
              alert unless `lists_on_alert`, since drifted scores should not reach branches
              unseen

Two cycles never overlap: the cycle holds an exclusive `flock` on `<run>/cycles/cycle.lock`
(the kernel drops it when the process dies, so a killed cycle leaves no stale lock), and a
second one is refused at once (StoreLockedError), naming the pid that holds it. The store is
opened once, as its single writer, for the whole cycle.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import ConfigError, StoreLockedError
from contracts.input_files import read_parquet_input
from fusion.lists import LISTS, build_target_lists, write_branch_lists
from fusion.match import keyed_epochs
from fusion.monitoring import MONITORED, MonitorSettings, Status
from fusion.pipeline.bank import Bank, ingest_batches, open_bank
from fusion.pipeline.feature_tables import (
    build_snapshot_features,
    features_dir,
    read_features,
    scoring_manifest,
)
from fusion.pipeline.matching import match_salted
from fusion.pipeline.monitoring import monitor_snapshot, write_monitoring
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from matcher.atomic import write_atomic
from matcher.keyring import Keyring

__all__ = ["STEPS", "CycleResult", "CycleStep", "run_cycle"]

STEPS = ("ingest", "match", "features", "score", "monitor", "lists")
LOCK_FILE = "cycle.lock"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class CycleStep:
    """What one step of the cycle did: ran (with what it found) or was skipped (and why)."""

    name: str
    ran: bool
    detail: str
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleResult:
    """The steps of one cycle run, in order, and the monitoring verdict it ended with."""

    snapshot_date: date
    steps: tuple[CycleStep, ...]
    status: Status = Status.OK  # the monitoring verdict (this run's, or the recorded one)
    report: Path | None = None
    findings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """Return whether any step ran (a repeated cycle changes nothing)."""
        return any(step.ran for step in self.steps)


@contextmanager
def _cycle_lock(folder: RunFolder) -> Iterator[None]:
    """Hold the run's cycle lock for the block; refuse at once when another cycle holds it."""
    root = folder.root / "cycles"
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreLockedError(
                f"another cycle (pid {holder}) is running on {folder.root}: cycles never "
                "overlap; wait for it to finish (the scheduler's next run picks up where it "
                "ends), or stop it",
                path=str(path),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


class _State:
    """The steps done for one snapshot, with what each depended on (`state.json`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.steps: dict[str, dict[str, Any]] = json.loads(path.read_text())["steps"]
        except (OSError, ValueError, KeyError):
            self.steps = {}

    def done(self, step: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Return the record of `step` when it finished with these inputs, else None."""
        record = self.steps.get(step)
        return record if record is not None and record.get("inputs") == inputs else None

    def record(self, step: str, inputs: dict[str, Any], at: datetime, **extra: Any) -> None:
        self.steps[step] = {"inputs": inputs, "at": at.isoformat(), **extra}
        text = json.dumps({"steps": self.steps}, indent=1, sort_keys=True, default=str)
        write_atomic(self.path, text + "\n")


def _ingest(bank: Bank, clock: Callable[[], datetime]) -> CycleStep:
    waiting = bank.folder.inbox.ensure().pending()
    if not waiting:
        return CycleStep("ingest", False, "no sealed file waits in the inbox")
    outcomes = ingest_batches(bank, clock=clock)
    bad = tuple(
        f"batch {o.ledger_id or o.batch_id} {o.status}"
        for o in outcomes
        if o.status in ("refused", "quarantined")
    )
    loaded = sum(o.status == "loaded" for o in outcomes)
    return CycleStep("ingest", True, f"{loaded} of {len(outcomes)} sealed files loaded", bad)


def _match(bank: Bank, day: date, extract: Path | None, now: datetime) -> CycleStep:
    epoch = bank.keyring.current_salt().epoch_id
    if epoch in keyed_epochs(bank.store, day):
        return CycleStep("match", False, f"snapshot {day} is matched under salt epoch {epoch}")
    if extract is None:
        raise ConfigError(
            f"snapshot {day} is not matched under salt epoch {epoch} and no extract was given; "
            "pass --extract with the bank's customer extract of that date",
            setting="extract",
        )
    frame = read_parquet_input(
        extract,
        what="customer extract",
        columns=("customer_id", "phone"),
        hint="one row per customer with customer_id, phone and the bank's features",
    )
    done = match_salted(bank, frame, snapshot_date=day, now=now)
    findings = () if done.run.matched else (f"nobody matched of {done.run.customers:,}",)
    return CycleStep(
        "match", True, f"{done.run.matched:,} of {done.run.customers:,} customers matched", findings
    )


def _features(bank: Bank, day: date, rematched: bool) -> CycleStep:
    try:
        features_dir(bank.folder, day)
        built = True
    except ConfigError:
        built = False
    if built and not rematched:
        return CycleStep("features", False, f"the feature table of {day} is built")
    # The CURRENT models' training columns, codes and top apps, so they can score this table.
    like = scoring_manifest(bank.folder, day)
    table = build_snapshot_features(bank, snapshot_date=day, replace=rematched, like=like).features
    return CycleStep("features", True, f"{table.table.height:,} customers built")


def _staging(folder: RunFolder, day: date) -> Path:
    return folder.root / "cycles" / day.isoformat() / "lists"


def _versions(registry: Registry) -> dict[str, str | None]:
    return {name: registry.current(name) for name in MONITORED}


def _score(
    folder: RunFolder, day: date, state: _State, inputs: dict[str, Any], at: datetime
) -> CycleStep:
    if state.done("score", inputs):
        return CycleStep("score", False, f"the current models scored {day} already")
    lists = build_target_lists(
        Registry(folder.models),
        read_features(folder, day),
        scores_dir=folder.scores,
        lists_dir=_staging(folder, day),
    )
    state.record("score", inputs, at, rows=lists.scores.rows)
    return CycleStep("score", True, f"{lists.scores.rows:,} customers scored; lists staged")


def _publish(folder: RunFolder, day: date) -> int:
    """Swap the staged lists of `day` in where branches read them; return the rows published."""
    rows = 0
    for name in LISTS:
        staged = sorted((_staging(folder, day) / name).glob("*.parquet"))
        if not staged:
            continue
        frame = pl.concat([pl.read_parquet(p) for p in staged]).drop("rank", strict=False)
        write_branch_lists(frame, folder.lists / name)
        rows += frame.height
    return rows


def run_cycle(
    folder: RunFolder,
    *,
    snapshot_date: date,
    clock: Callable[[], datetime],
    extract: Path | None = None,
    settings: MonitorSettings | None = None,
    lists_on_alert: bool = False,
) -> CycleResult:
    """Return what one cycle for `snapshot_date` did (module docstring), under the run's lock."""
    keyring = Keyring.open(folder.bank_keys)  # a run without a keyring: refused, nothing made
    with _cycle_lock(folder), open_bank(folder, keyring=keyring) as bank:
        state = _State(folder.root / "cycles" / snapshot_date.isoformat() / STATE_FILE)
        steps = [_ingest(bank, clock)]
        steps.append(_match(bank, snapshot_date, extract, clock()))
        steps.append(_features(bank, snapshot_date, rematched=steps[-1].ran))
        manifest = json.loads((features_dir(folder, snapshot_date) / "manifest.json").read_text())
        inputs: dict[str, Any] = {
            "models": _versions(Registry(folder.models)),
            "features": {k: manifest.get(k) for k in ("rows", "matched", "salt_epoch", "batches")},
        }
        steps.append(_score(folder, snapshot_date, state, inputs, clock()))
        monitored = state.done("monitor", inputs)
        report = None
        if monitored is None:
            result = monitor_snapshot(
                bank, snapshot_date=snapshot_date, now=clock(), settings=settings
            )
            report = write_monitoring(folder, result)
            alerts = tuple(result.findings(Status.ALERT))
            state.record("monitor", inputs, clock(), status=result.status.value, alerts=alerts)
            monitored = state.done("monitor", inputs)
            steps.append(CycleStep("monitor", True, f"verdict {result.status.value}", alerts))
        else:
            steps.append(CycleStep("monitor", False, f"monitored already: {monitored['status']}"))
        assert monitored is not None
        status = Status(monitored["status"])
        steps.append(_lists(folder, snapshot_date, state, inputs, status, lists_on_alert, clock()))
    findings = tuple(f for step in steps for f in step.findings)
    return CycleResult(snapshot_date, tuple(steps), status, report, findings)


def _lists(
    folder: RunFolder,
    day: date,
    state: _State,
    inputs: dict[str, Any],
    status: Status,
    lists_on_alert: bool,
    at: datetime,
) -> CycleStep:
    held = status is Status.ALERT and not lists_on_alert
    wanted = {**inputs, "withheld": held}
    if state.done("lists", wanted):
        what = "withheld (monitoring alert)" if held else "published"
        return CycleStep("lists", False, f"the lists of {day} were {what} already")
    if held:
        state.record("lists", wanted, at)
        return CycleStep(
            "lists",
            True,
            f"withheld: monitoring alerted; the lists stay staged in {_staging(folder, day)} "
            "(run again with --lists-on-alert to publish them)",
        )
    rows = _publish(folder, day)
    state.record("lists", wanted, at, rows=rows)
    return CycleStep("lists", True, f"{rows:,} list rows published per branch")
