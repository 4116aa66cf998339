"""Match the bank's customer extract with the vendor's data, salted or OPRF, and report on it.

Salted: key the extract with the shared salt epoch (in this process, or by bucket on a cluster
`Engine`) and intersect with the vendor's keys, on every identifier of the declared priority
(default: mobile number > ID number > device id, those the extract has columns for). OPRF:
blind the extract into a request for the vendor, then finish with its answer: only the matched
customers' sealed rows are opened. The
local vendor (`answer_as_local_vendor`) is for demos and tests, where one run folder holds both
keyrings.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from contracts.errors import ConfigError
from fusion.jobs import Engine, key_customers
from fusion.match import (
    MatchRun,
    check_same_customers,
    check_vendor_batches,
    forget_snapshot,
    load_extract,
    match,
)
from fusion.oprf_psi import OprfMatchRun, OprfRequestInfo, finish_match, request_match
from fusion.pipeline.bank import Bank
from fusion.progress import Progress, report_to
from fusion.reports.coverage import CoverageReport, coverage_report
from fusion.reports.disclosure import DEFAULT_K
from fusion.reports.match import write_match_report
from fusion.runfolder import RunFolder
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import Keyring
from matcher.oprf_exchange import ElementFile, answer_request
from matcher.psi import CustomerKeys, combine_keys, usable_priority

__all__ = [
    "MatchOutcome",
    "answer_as_local_vendor",
    "cluster_keys",
    "finish_oprf",
    "match_oprf_locally",
    "match_report",
    "match_report_dir",
    "match_salted",
    "newest_oprf_epoch",
    "request_oprf",
]


@dataclass(frozen=True)
class MatchOutcome:
    """A finished match: its counts, the extract's unusable phones by reason, the OPRF details."""

    run: MatchRun
    reasons: dict[str, int]  # unusable phones by reason (never a phone)
    oprf: OprfMatchRun | None = None  # OPRF mode: vendor rows opened and dropped

    def to_dict(self) -> dict[str, object]:
        """Return the match's counts as the demo summary holds them."""
        return {
            "customers": self.run.customers,
            "matched": self.run.matched,
            "coverage": self.run.coverage,
            "invalid": self.run.invalid,
            "duplicated": self.run.duplicated,
            "identifiers": list(self.run.identifiers),
            "conflicts": self.run.conflicts,
            "by_identifier": self.run.by_identifier,
        }


def match_salted(
    bank: Bank,
    extract: pl.DataFrame,
    *,
    snapshot_date: date,
    now: datetime,
    epoch: str | None = None,
    engine: Engine | None = None,
    replace: bool = False,
    identifiers: Sequence[str] | None = None,
) -> MatchOutcome:
    """Return the salted match of `extract` under salt `epoch` (default: the current one).

    `identifiers` is the declared priority, highest first (default: mobile number, ID number,
    device id, those the extract has a column for). With an `engine` the extract is keyed by
    bucket there (`cluster_keys`); the match is the same. Refused before anything is written
    (ConfigError): no loaded vendor batch of the epoch by the snapshot date (nobody could
    match), or the snapshot already holds another extract's customers, unless `replace`, which
    replaces them (and their keys under other epochs).
    """
    salt = bank.keyring.salt(epoch) if epoch else bank.keyring.current_salt()
    priority = usable_priority(extract.columns, identifiers)
    check_vendor_batches(bank.store, epoch_id=salt.epoch_id, snapshot_date=snapshot_date)
    another = check_same_customers(
        bank.store, extract, snapshot_date=snapshot_date, replace=replace
    )
    keys = cluster_keys(engine, bank.folder, extract, salt, priority) if engine else None
    with bank.store.transaction():  # a refused extract leaves the snapshot as it was
        if another:
            forget_snapshot(bank.store, snapshot_date)
        loaded = load_extract(
            bank.store,
            extract,
            epoch=salt,
            snapshot_date=snapshot_date,
            now=now,
            keys=keys,
            identifiers=priority,
        )
        run = match(
            bank.store,
            epoch_id=salt.epoch_id,
            snapshot_date=snapshot_date,
            now=now,
            identifiers=priority,
        )
    return MatchOutcome(run, loaded.reasons)


def cluster_keys(
    engine: Engine,
    folder: RunFolder,
    extract: pl.DataFrame,
    salt: SaltEpoch,
    identifiers: Sequence[str] = ("mobile",),
) -> CustomerKeys:
    """Return the extract's keys computed by bucket on `engine`; its key files go once read.

    Each identifier type is keyed by its own job (a value's holders meet in its key's bucket),
    then each customer's keys are combined into its composite key here.
    """
    job = folder.new_job("keys")
    try:
        per_type, reasons = {}, {}
        for kind in identifiers:
            keyed = key_customers(engine, extract, salt, job / kind, kind=kind)
            per_type[kind] = keyed.read()
            if kind == "mobile":
                reasons = keyed.reasons
                if tuple(identifiers) == ("mobile",):
                    return CustomerKeys(per_type[kind], keyed.invalid, keyed.duplicated, reasons)
        return combine_keys(per_type, reasons=reasons)
    finally:
        # Keys on disk are pseudonyms of identifiers: they live in the encrypted store, not here.
        shutil.rmtree(job, ignore_errors=True)


def newest_oprf_epoch(bank: Bank) -> str:
    """Return the OPRF epoch of the newest loaded OPRF batch."""
    row = bank.store.execute(
        "SELECT salt_epoch FROM batches WHERE mode = 'oprf' AND status = 'loaded' "
        "ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise ConfigError(
            "no OPRF batch is loaded, so the vendor's OPRF epoch is unknown: ingest its OPRF "
            "batch first (`fusion ingest`), or name the epoch with --epoch",
            setting="epoch",
        )
    return str(row[0])


def request_oprf(
    bank: Bank,
    extract: pl.DataFrame,
    *,
    snapshot_date: date,
    now: datetime,
    epoch: str | None = None,
    engine: Engine | None = None,
    replace: bool = False,
    identifiers: Sequence[str] | None = None,
) -> tuple[OprfRequestInfo, ElementFile]:
    """Return the request's counts and the blinded request for the vendor's OPRF `epoch`.

    `identifiers` is the declared priority, as for `match_salted` (kept with the request, so
    `finish_oprf` takes only the answer).

    `epoch` defaults to the newest loaded OPRF batch's (`newest_oprf_epoch`). With `engine` the
    blinding runs as the bucketed job on it (the same request as in this process). A snapshot
    that holds another extract's customers is refused (ConfigError) unless `replace`, before
    the request costs the vendor's budget anything; `finish_oprf` checks again.
    """
    check_same_customers(bank.store, extract, snapshot_date=snapshot_date, replace=replace)
    epoch_id = epoch or newest_oprf_epoch(bank)
    return request_match(
        bank.store,
        extract,
        epoch_id=epoch_id,
        snapshot_date=snapshot_date,
        now=now,
        engine=engine,
        job_dir=_job_dir(bank, engine),
        identifiers=identifiers,
    )


def finish_oprf(
    bank: Bank,
    extract: pl.DataFrame,
    answer: ElementFile,
    *,
    now: datetime,
    engine: Engine | None = None,
    replace: bool = False,
) -> MatchOutcome:
    """Return the match the vendor's `answer` finishes (matched rows opened, the rest dropped).

    With `engine` the unblinding runs as the bucketed job on it (the same labels). A snapshot
    that holds another extract's customers is refused (ConfigError) unless `replace`, which
    replaces them in the match's transaction."""
    requested = bank.store.execute(
        "SELECT snapshot_date FROM oprf_requests WHERE request_id = ?", [answer.request_id]
    ).fetchone()
    # An unknown request is finish_match's to refuse, with its own message.
    snapshot_date: date | None = requested[0] if requested else None
    another = snapshot_date is not None and check_same_customers(
        bank.store, extract, snapshot_date=snapshot_date, replace=replace
    )
    # Only a replacement needs the outer transaction: a failed finish then keeps the old rows.
    with bank.store.transaction() if another else nullcontext():
        if another and snapshot_date is not None:
            forget_snapshot(bank.store, snapshot_date)
        done = finish_match(
            bank.store, extract, answer, now=now, engine=engine, job_dir=_job_dir(bank, engine)
        )
    return MatchOutcome(done.run, done.reasons, done)


def _job_dir(bank: Bank, engine: Engine | None) -> Path | None:
    """Return where a bucketed job keeps its partitions: a fresh jobs/ folder on a cluster."""
    # fusion.oprf_psi names its folder oprf-<random> in it, which a writer cleans up after a kill.
    return bank.folder.job_root() if engine is not None else None


def answer_as_local_vendor(
    folder: RunFolder, request: ElementFile, *, customers: int
) -> ElementFile:
    """Return the answer of the run's own vendor keyring to `request` (demos and tests only).

    `customers` is declared as the bank's count when the epoch has no budget yet, times the
    identifiers per customer a request of several asks about (rounded up: 3 for mobile number,
    ID number and device id), since the vendor's budget counts evaluations.
    """
    vendor = Keyring.open(folder.vendor_keys)
    per_customer = max(1, -(-len(request) // max(customers, 1)))
    with vendor.oprf_budget(request.epoch_id) as stored:
        declared = None if stored.read() else customers * per_customer
    answer, _ = answer_request(vendor, request, declared_customers=declared)
    return answer


def match_oprf_locally(
    bank: Bank,
    extract: pl.DataFrame,
    *,
    snapshot_date: date,
    now: datetime,
    epoch: str | None = None,
    progress: Progress | None = None,
    identifiers: Sequence[str] | None = None,
) -> MatchOutcome:
    """Return the OPRF match with the run's own vendor answering at once (demos and tests)."""
    report = report_to(progress)
    report("bank: blind", 0.0)
    _, request = request_oprf(
        bank, extract, snapshot_date=snapshot_date, now=now, epoch=epoch, identifiers=identifiers
    )
    report("bank: blind", 1.0)
    report("vendor: evaluate", 0.0)
    answer = answer_as_local_vendor(bank.folder, request, customers=extract.height)
    report("vendor: evaluate", 1.0)
    report("bank: open matched", 0.0)
    done = finish_oprf(bank, extract, answer, now=now)
    report("bank: open matched", 1.0)
    return done


def match_report_dir(folder: RunFolder, report: CoverageReport) -> Path:
    """Return the folder of the match report of `report`'s snapshot and salt epoch."""
    return folder.reports / f"match-{report.snapshot_date.isoformat()}-{report.salt_epoch}"


def match_report(bank: Bank, *, snapshot_date: date, salt_epoch: str, k: int = DEFAULT_K) -> Path:
    """Return the match and app-penetration report page written for the snapshot (cells < k
    suppressed)."""
    report = coverage_report(bank.store, snapshot_date=snapshot_date, salt_epoch=salt_epoch, k=k)
    return write_match_report(report, match_report_dir(bank.folder, report))
