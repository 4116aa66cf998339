"""Ingest sealed vendor batches: inbox -> open -> replay check -> contract -> load or quarantine.

Each batch ends in exactly one of four states, recorded in the `batches` ledger:

    loaded       verified, opened, contract passed; rows committed in ONE DuckDB transaction
                 together with the ledger row, so a crash leaves either everything or nothing
    duplicate    the same batch_id with the same sealed digest was already judged; nothing loads
    quarantined  verified and opened, but the payload broke its contract (or names an unknown
                 salt epoch or taxonomy version); the sealed file moves to quarantine/ with a report
    refused      it could not be verified or opened, its decrypted payload is not the one whose
                 SHA-256 the vendor signed, or it reused a batch_id with another digest; the
                 ledger row is keyed by the sealed file's digest, never by the claimed batch_id,
                 so a forged file cannot block the real batch of that id

A sealed file leaves the inbox only after its outcome is committed: a killed worker finds it
again on the next run and, since nothing of it was committed, does the whole job again.
The decrypted payload exists only as a 0600 file in the private work folder while it is loaded.
An OPRF-mode batch (manifest mode "oprf") passes the same gates with its own contract (label and
sealed row shapes) and loads into `vendor_oprf_rows`, still sealed row by row under keys only
the vendor's OPRF key derives; the bank opens the rows of its own customers at match time
(`fusion.oprf_psi`).

The batch is opened without the envelope's payload digest check, so decryption runs as fast as a
raw AES-GCM pass; the payload's SHA-256 is computed on a worker thread while the batch is read,
validated and loaded, and compared with the signed payload_sha256 before any verdict on its
content (load or quarantine) is committed. Format v2 signs the GCM tags, not the ciphertext, and
GCM does not commit to the ciphertext for a holder of the data key: without this check the vendor
could deliver content it did not sign the digest of, and later disown it (docs/envelope.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import BatchConflictError, BatchRefused, ConfigError, KeyringError
from contracts.schemas import MatchMode
from contracts.suites import (
    ContractReport,
    RuleResult,
    validate_vendor_batch,
    validate_vendor_oprf_batch,
)
from contracts.taxonomy import load_taxonomy
from fusion.retention import FolderUsage, Retention, find_copy, keep, prune, stamp, tighten, usage
from fusion.store import Store
from matcher.atomic import write_atomic
from matcher.envelope import open_sealed
from matcher.keyring import Keyring
from matcher.manifest import Manifest

__all__ = ["ARCHIVE_RETENTION", "Inbox", "IngestOutcome", "ingest_file", "ingest_inbox"]

log = logging.getLogger(__name__)

SEALED_SUFFIX = ".sealed"
HASH_BLOCK = 8 << 20  # large reads: hashlib releases the GIL, and few calls cross into C


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one sealed file; safe to show to the vendor (no keys, no causes)."""

    batch_id: str | None
    vendor_id: str | None
    status: str  # loaded | duplicate | quarantined | refused
    rows: int
    reasons: tuple[str, ...] = ()
    report: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # The ledger row the verdict wrote or found: the batch id, or for a refusal "refused:" and
    # the sealed file's SHA-256 (refusals are never filed under the id they claim).
    ledger_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ARCHIVE_RETENTION = Retention(max_bytes=16 << 30, max_age=timedelta(days=365))


@dataclass(frozen=True)
class Inbox:
    """The folders of the ingest worker under one run folder, and how much of them is kept.

    `quarantine` bounds the refused and quarantined files, `archive` the loaded ones (the
    signed record of what each vendor sent): past either bound the oldest go first.
    """

    root: Path
    quarantine_retention: Retention = field(default_factory=Retention)
    archive_retention: Retention = ARCHIVE_RETENTION

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def ensure(self) -> Inbox:
        for folder in (self.inbox, self.quarantine, self.archive, self.work):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        return self

    def pending(self) -> list[Path]:
        """Return the sealed files waiting in the inbox, oldest first."""
        files = [p for p in self.inbox.iterdir() if p.suffix == SEALED_SUFFIX and p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def usage(self) -> dict[str, tuple[FolderUsage, Retention]]:
        """Return how full the quarantine and the archive are, each with its bound, by name."""
        return {
            "quarantine": (usage(self.quarantine), self.quarantine_retention),
            "archive": (usage(self.archive), self.archive_retention),
        }

    def tidy(self, *, now: datetime) -> list[Path]:
        """Prune the quarantine and the archive to their bounds, tighten what older versions
        kept (0600 files, 0700 folders); return the entries removed."""
        removed = self.prune(now=now)
        tighten(self.quarantine)
        tighten(self.archive)
        return removed

    def prune(self, *, now: datetime) -> list[Path]:
        """Remove the quarantine's and the archive's entries past their bounds; return them."""
        removed = prune(self.quarantine, self.quarantine_retention, now=now)
        removed += prune(self.archive, self.archive_retention, now=now)
        if removed:
            log.info("pruned %d kept sealed file(s) past their retention", len(removed))
        return removed


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.name] = time.perf_counter() - self.start


def _ledger_row(batch_id: str, store: Store) -> tuple[str, str] | None:
    row = store.execute(
        "SELECT sealed_sha256, status FROM batches WHERE batch_id = ?", [batch_id]
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


@dataclass(frozen=True, kw_only=True)
class _Verdict:
    """One row of the batch ledger: what became of a sealed file, and why."""

    ledger_id: str
    manifest: Manifest | None
    vendor_id: str | None
    sealed_sha256: str
    status: str
    rows: int
    reasons: tuple[str, ...]
    report: dict[str, Any] | None

    @classmethod
    def of_batch(
        cls, manifest: Manifest, digest: str, report: ContractReport, *, status: str, rows: int
    ) -> _Verdict:
        """Return the verdict on a batch that passed the gate, filed under its own batch id."""
        return cls(
            ledger_id=manifest.batch_id,
            manifest=manifest,
            vendor_id=manifest.vendor_id,
            sealed_sha256=digest,
            status=status,
            rows=rows,
            reasons=report.failed,
            report=report.to_dict(),
        )

    def outcome(self, seconds: Mapping[str, float]) -> IngestOutcome:
        """Return what the vendor is told of this verdict, with the stages' timings."""
        return IngestOutcome(
            self.ledger_id,
            self.vendor_id,
            self.status,
            self.rows,
            self.reasons,
            self.report,
            dict(seconds),
            ledger_id=self.ledger_id,
        )


def _record(store: Store, verdict: _Verdict, *, now: datetime) -> None:
    manifest = verdict.manifest
    store.execute(
        "INSERT OR REPLACE INTO batches (batch_id, vendor_id, sealed_sha256, status, rows,"
        " salt_epoch, taxonomy_version, mode, reasons, report, received_at, finished_at,"
        " created_at, suite, oprf_public_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            verdict.ledger_id,
            verdict.vendor_id,
            verdict.sealed_sha256,
            verdict.status,
            verdict.rows,
            manifest.salt_epoch if manifest else None,
            manifest.taxonomy_version if manifest else None,
            manifest.mode if manifest else None,
            json.dumps(list(verdict.reasons)),
            None if verdict.report is None else json.dumps(verdict.report),
            now,
            now,
            min(_data_time(manifest), _naive_utc(now)) if manifest else None,
            (manifest.suite or "X25519") if manifest else None,  # versions 1 and 2: X25519
            manifest.oprf_public_key if manifest else None,
        ],
    )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _data_time(manifest: Manifest) -> datetime:
    """Return the manifest's created_at ("2026-11-03T09:30:00Z") as the store's naive UTC.

    The ledger keeps min(created_at, received): a vendor's clock cannot date a batch into the
    future (it would then outrank later batches); backdating stays possible and is the vendor's
    signed statement.
    """
    return datetime.strptime(manifest.created_at, "%Y-%m-%dT%H:%M:%SZ")


def _refuse(
    store: Store,
    inbox: Inbox,
    sealed: Path,
    digest: str,
    manifest: Manifest | None,
    vendor_id: str | None,
    reason: str,
    now: datetime,
) -> str:
    """Record a refusal under the file's digest (never the claimed batch_id), move the file,
    and return the ledger id it was filed under."""
    ledger_id = f"refused:{digest}"
    with store.transaction():
        _record(
            store,
            _Verdict(
                ledger_id=ledger_id,
                manifest=manifest,
                vendor_id=vendor_id,
                sealed_sha256=digest,
                status="refused",
                rows=0,
                reasons=(reason,),
                report=None,
            ),
            now=now,
        )
    _keep_once(sealed, inbox.quarantine, inbox=inbox, now=now)
    return ledger_id


def _keep_once(sealed: Path, folder: Path, *, inbox: Inbox, now: datetime) -> None:
    """Move `sealed` into `folder` unless a copy of it is kept there already (a replay: then
    delete it), and prune the kept folders to their bounds."""
    if find_copy(folder, sealed) is not None:
        sealed.unlink(missing_ok=True)
    else:
        keep(sealed, folder, now=now)
    inbox.prune(now=now)


def _file_sha256(path: Path, *, stop: threading.Event | None = None) -> str:
    """Return the SHA-256 hex of the file (of a prefix only if `stop` was set: then unused)."""
    digest, block = hashlib.sha256(), memoryview(bytearray(HASH_BLOCK))
    with path.open("rb", buffering=0) as source:
        while not (stop is not None and stop.is_set()) and (got := source.readinto(block)):
            digest.update(block[:got])
    return digest.hexdigest()


class _PayloadDigest:
    """The decrypted payload's SHA-256, hashed on a worker thread from the moment it is opened.

    `verify` joins the worker and compares with the signed payload_sha256; `close` stops a hash
    whose result is no longer needed (duplicate, conflict) and joins the worker.
    """

    def __init__(self, payload: Path) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-payload-sha256")
        self._job = self._pool.submit(_file_sha256, payload, stop=self._stop)

    def verify(self, manifest: Manifest) -> None:
        """Return once the payload is the one the vendor signed; raise BatchRefused if not."""
        self._pool.shutdown(wait=True)
        if not hmac.compare_digest(self._job.result(), manifest.payload_sha256):
            raise BatchRefused(
                "payload digest mismatch: the SHA-256 of the decrypted payload differs from the "
                "payload_sha256 the vendor signed (chunks rewritten by a holder of the data key)",
                batch_id=manifest.batch_id,
                vendor=manifest.vendor_id,
            )

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def _gate_report(manifest: Manifest, keyring: Keyring) -> ContractReport | None:
    """Return a failed report when the batch names an epoch or taxonomy this bank lacks."""
    failures = []
    try:
        if (
            manifest.mode is MatchMode.SALTED
        ):  # an OPRF epoch's key is the vendor's alone: nothing to hold
            keyring.salt(manifest.salt_epoch)
    except KeyringError:
        failures.append(
            RuleResult(
                rule="salt_epoch_known",
                description=f"salt epoch {manifest.salt_epoch!r} is not in the bank's keyring",
                passed=False,
                failed_rows=manifest.rows,
            )
        )
    try:
        load_taxonomy(manifest.taxonomy_version)
    except ConfigError:
        failures.append(
            RuleResult(
                rule="taxonomy_known",
                description=f"taxonomy version {manifest.taxonomy_version!r} is unknown here",
                passed=False,
                failed_rows=manifest.rows,
            )
        )
    if not failures:
        return None
    return ContractReport(
        contract=manifest.contract,
        rows=manifest.rows,
        rules=tuple(failures),
        batch_id=manifest.batch_id,
    )


def _load_rows(store: Store, batch: pl.DataFrame, manifest: Manifest) -> None:
    tagged = batch.with_columns(
        salt_epoch=pl.lit(manifest.salt_epoch), batch_id=pl.lit(manifest.batch_id)
    )
    # The batch's taxonomy comes with it (once per version): reports and features name apps
    # and tags by it, whichever command built the run.
    store.load_taxonomy(load_taxonomy(manifest.taxonomy_version))
    if manifest.mode is MatchMode.OPRF:  # sealed rows wait for the bank's match (fusion.oprf_psi)
        store.insert_frame("vendor_oprf_rows", tagged)
        return
    store.insert_frame(
        "vendor_apps",
        tagged.select("key", "salt_epoch", "batch_id", "app_ids", "app_days", "app_sessions"),
    )
    store.insert_frame(
        "vendor_tags", tagged.select("key", "salt_epoch", "batch_id", "tag_ids", "tag_weights")
    )


def ingest_file(
    sealed: Path,
    *,
    store: Store,
    keyring: Keyring,
    inbox: Inbox,
    now: datetime,
    before_commit: Callable[[], None] | None = None,
) -> IngestOutcome:
    """Ingest one sealed file and return its outcome; the file leaves the inbox when judged.

    Args:
        sealed: a sealed batch file (normally inside `inbox.inbox`).
        store: the bank's store, opened for writing (this process is its single writer).
        keyring: the bank's keyring (HPKE keys, trusted vendor keys, salt epochs).
        inbox: the worker's folders (quarantine, archive, private work folder).
        now: the clock, as an argument so tests pin it.
        before_commit: called inside the load transaction just before COMMIT (tests use it to
            kill the process mid-load).
    """
    inbox.ensure()
    timer = _Timer()
    payload = inbox.work / f"{sealed.name}.parquet"
    # Plaintext a killed worker left for this file (its payload or open_sealed's temp file).
    for stale in inbox.work.glob(f"*{sealed.name}.parquet*"):
        _remove(stale)
    try:
        with timer.stage("open"):
            opened = open_sealed(
                sealed,
                payload,
                recipient_keys=keyring.recipient_private,
                vendor_keys=keyring.vendor_public,
                # The bank's suite policy (keyring.md): another suite is refused, the cause
                # telling the bank to ask for a batch sealed to its accepted key.
                accepted_suites=keyring.accepted_suites(),
                # Not here: v2 signs only the GCM tags, so the payload digest is what binds the
                # plaintext to the vendor, but it runs off the open's critical path instead,
                # overlapping validation and load (_PayloadDigest, checked before COMMIT).
                check_payload_digest=False,
            )
    except BatchRefused as refusal:
        digest = _file_sha256(sealed)
        # The cause is for the bank's eyes only: its log and ledger, never the sender.
        # Claimed ids come from an unverified manifest: quoted and cut, so they cannot forge
        # log lines or flood the log.
        log.warning(
            "batch refused: cause=%r claimed_batch=%.64r claimed_vendor=%.64r sealed_sha256=%s",
            refusal.cause,
            refusal.batch_id,
            refusal.vendor,
            digest,
        )
        # vendor_id stays empty: the claim is unverified and must not file the row under a
        # vendor (the log line above keeps it for investigation).
        filed = _refuse(store, inbox, sealed, digest, None, None, refusal.cause, now)
        return IngestOutcome(
            refusal.batch_id, refusal.vendor, "refused", 0, ("refused",), ledger_id=filed
        )
    payload_digest = _PayloadDigest(payload)
    try:
        return _judge_opened(
            _Opened(
                sealed,
                payload,
                payload_digest,
                opened.manifest,
                opened.sealed_sha256,
                store,
                keyring,
                inbox,
                now,
                timer,
                before_commit,
            )
        )
    finally:
        payload_digest.close()
        payload.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Opened:
    """A batch that opened: its files, verified manifest and digest, and where it is judged."""

    sealed: Path
    payload: Path
    payload_digest: _PayloadDigest
    manifest: Manifest
    digest: str
    store: Store
    keyring: Keyring
    inbox: Inbox
    now: datetime
    timer: _Timer
    before_commit: Callable[[], None] | None


def _judge_opened(job: _Opened) -> IngestOutcome:
    sealed, manifest, digest = job.sealed, job.manifest, job.digest
    store, inbox, now = job.store, job.inbox, job.now
    seen = _ledger_row(manifest.batch_id, store)
    if seen is not None and seen[0] == digest:
        log.info("batch %s already %s: duplicate, nothing loaded", manifest.batch_id, seen[1])
        # A worker killed after committing a verdict but before moving the file lands here:
        # the file goes where that verdict sends it. A replay of a file kept there already is
        # not kept twice.
        home = inbox.quarantine / manifest.batch_id if seen[1] == "quarantined" else inbox.archive
        _keep_once(sealed, home, inbox=inbox, now=now)
        return IngestOutcome(
            manifest.batch_id,
            manifest.vendor_id,
            "duplicate",
            0,
            (f"already {seen[1]}",),
            ledger_id=manifest.batch_id,
        )
    if seen is not None:
        conflict = BatchConflictError(
            f"batch {manifest.batch_id} was already received with another digest; "
            "send new data under a new batch_id",
            batch_id=manifest.batch_id,
        )
        log.warning("batch refused: %s", conflict)
        filed = _refuse(
            store, inbox, sealed, digest, manifest, manifest.vendor_id, "batch_id_conflict", now
        )
        return IngestOutcome(
            manifest.batch_id,
            manifest.vendor_id,
            "refused",
            0,
            ("batch_id_conflict",),
            ledger_id=filed,
        )

    try:
        return _judge_content(job)
    except BatchRefused as refusal:
        # Same handling as a batch that does not open: detail-free to the sender, the cause in
        # the bank's log and ledger. The manifest is verified here, so the row names the vendor.
        log.warning(
            "batch refused: cause=%r batch=%s vendor=%s sealed_sha256=%s",
            refusal.cause,
            manifest.batch_id,
            manifest.vendor_id,
            digest,
        )
        filed = _refuse(
            store, inbox, sealed, digest, manifest, manifest.vendor_id, refusal.cause, now
        )
        return IngestOutcome(
            manifest.batch_id, manifest.vendor_id, "refused", 0, ("refused",), ledger_id=filed
        )


def _read_payload(
    payload: Path, manifest: Manifest
) -> tuple[pl.DataFrame, None] | tuple[None, ContractReport]:
    """Read the opened Parquet payload, or return a failed report when it is not Parquet.

    A signed payload that does not read is the vendor's fault, not the bank's: it is quarantined
    with a report like any other broken batch (once its digest matches what was signed).
    """
    try:
        return pl.read_parquet(payload), None
    except (pl.exceptions.PolarsError, OSError) as exc:
        log.warning("batch %s payload unreadable: %s", manifest.batch_id, type(exc).__name__)
        rule = RuleResult(
            rule="payload_readable",
            description=(
                "the payload is a readable Parquet file "
                f"(it failed to read: {type(exc).__name__}); re-pack it with `fusion vendor pack`"
            ),
            passed=False,
            failed_rows=manifest.rows,
        )
        return None, ContractReport(
            contract=manifest.contract,
            rows=manifest.rows,
            rules=(rule,),
            batch_id=manifest.batch_id,
        )


def _validate(batch: pl.DataFrame, manifest: Manifest) -> ContractReport:
    if manifest.mode is MatchMode.OPRF:
        return validate_vendor_oprf_batch(
            batch, expected_rows=manifest.rows, batch_id=manifest.batch_id
        )
    return validate_vendor_batch(
        batch,
        taxonomy=load_taxonomy(manifest.taxonomy_version),
        expected_rows=manifest.rows,
        batch_id=manifest.batch_id,
    )


def _judge_content(job: _Opened) -> IngestOutcome:
    """Quarantine or load the opened payload; raise BatchRefused if it is not what was signed.

    Every verdict on the content waits for the payload digest: a report or a load of content
    the vendor did not sign could be disowned.
    """
    sealed, payload, payload_digest, manifest, digest = (
        job.sealed, job.payload, job.payload_digest, job.manifest, job.digest
    )  # fmt: skip
    store, keyring, inbox, now, timer = job.store, job.keyring, job.inbox, job.now, job.timer
    report = _gate_report(manifest, keyring)
    batch: pl.DataFrame | None = None
    if report is None:
        try:
            with timer.stage("read"):
                batch, report = _read_payload(payload, manifest)
            if batch is not None:
                with timer.stage("validate"):
                    report = _validate(batch, manifest)
        except Exception:
            payload_digest.verify(manifest)  # a rewritten payload is refused, not a crash
            raise
    assert report is not None
    if not report.passed or batch is None:
        payload_digest.verify(manifest)
        return _quarantine(sealed, manifest, digest, report, store, inbox, now, timer)

    with timer.stage("load"), store.transaction():
        _load_rows(store, batch, manifest)
        verdict = _Verdict.of_batch(manifest, digest, report, status="loaded", rows=batch.height)
        _record(store, verdict, now=now)
        # Last, so the hash overlaps the whole load; a mismatch rolls all of it back.
        with timer.stage("digest_wait"):
            payload_digest.verify(manifest)
        if job.before_commit is not None:
            job.before_commit()
    keep(sealed, inbox.archive, now=now)
    inbox.prune(now=now)
    log.info("batch %s loaded: %d rows in %s", manifest.batch_id, batch.height, _fmt(timer.seconds))
    return verdict.outcome(timer.seconds)


def _quarantine(
    sealed: Path,
    manifest: Manifest,
    digest: str,
    report: ContractReport,
    store: Store,
    inbox: Inbox,
    now: datetime,
    timer: _Timer,
) -> IngestOutcome:
    target = inbox.quarantine / manifest.batch_id
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(target / "report.json", json.dumps(report.to_dict(), indent=2), mode=0o600)
    write_atomic(target / "report.txt", report.summary() + "\n", mode=0o600)
    with store.transaction():
        verdict = _Verdict.of_batch(manifest, digest, report, status="quarantined", rows=0)
        _record(store, verdict, now=now)
    keep(sealed, target, now=now)
    stamp(target, now=now)  # the batch's folder is the quarantine's entry
    inbox.prune(now=now)
    log.warning("batch %s quarantined: %s", manifest.batch_id, ", ".join(report.failed))
    return verdict.outcome(timer.seconds)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fmt(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items())


def ingest_inbox(
    *, store: Store, keyring: Keyring, inbox: Inbox, clock: Callable[[], datetime]
) -> Iterator[IngestOutcome]:
    """Ingest every sealed file waiting in the inbox, oldest first, yielding each outcome."""
    inbox.ensure()
    # Plaintext left by a killed worker: nothing of it was committed, so it is only a risk.
    for stale in inbox.work.iterdir():
        _remove(stale)
    inbox.tidy(now=clock())
    for sealed in inbox.pending():
        yield ingest_file(sealed, store=store, keyring=keyring, inbox=inbox, now=clock())
