"""What the running service holds: the store, keys, tokens, models, the ingest worker, the audit.

One process, one DuckDB writer. The store's own connection belongs to the ingest worker thread
(DuckDB keeps a single writer; batches load one at a time, in arrival order); request threads
take one cursor each (`cursor()`), which DuckDB allows concurrently in one process. The audit
log is written by its own thread in small batches, so a request never waits on it; `close()`
flushes it. The audit fails closed: a failed write keeps its records and is retried with
back-off, and while the log cannot keep up (`audit_queue_limit` records waiting, or writes
failing for longer than `audit_outage_seconds`) `audit_open()` is False and the app answers
503 to every request but GET /healthz, until a write succeeds again. The ingest worker writes
each upload's verdict to the `uploads` table, so GET /v1/batches survives a restart. At start,
sealed files a previous run left in the inbox are queued again, and partial uploads a crash
left in the work folder are deleted.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import queue
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from contracts.errors import BatchRefused, ModelError
from fusion.features import FeatureSet
from fusion.ingest import IngestOutcome, ingest_file
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.scoring import Scorer
from fusion.store import Store
from fusion.tokens import Principal, TokenBook, revoke_token
from matcher.envelope import read_manifest
from matcher.keyring import Keyring

__all__ = ["LATENCY_BUCKETS", "AuditRecord", "Service", "Upload"]

log = logging.getLogger("bankfusion.api")
_TOKEN_RELOAD_SECONDS = 1.0  # on a miss: a new token works within a second
_TOKEN_REFRESH_SECONDS = 5.0  # on any request: a revocation by any writer stops the token
# How the upload route names the sealed files it puts in the inbox: <vendor id>-<upload id>.
_UPLOADED = re.compile(r"^(?P<vendor>.+)-(?P<upload>[0-9a-f]{24})\.sealed$")
_MAX_UPLOADS_KEPT = 10_000  # uploads whose verdict GET /v1/batches can still show from memory
_AUDIT_BATCH = 500  # records per audit write
_AUDIT_BACKOFF = (0.05, 2.0)  # seconds between retries of a failed audit write: first, most
_AUDIT_FLUSH_SECONDS = 10.0  # how long close() keeps retrying before it gives records up
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _naive_utc(moment: datetime) -> datetime:
    """Return `moment` as the store keeps timestamps: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class AuditRecord:
    """One request: who, in which role, which route, what came back."""

    at: datetime
    actor: str
    role: str | None
    action: str
    detail: str | None
    rows: int | None
    status: str


@dataclass
class Upload:
    """A sealed file received from a vendor and what the ingest worker made of it."""

    upload_id: str
    token_id: str
    vendor_id: str | None
    path: Path
    claimed_batch_id: str | None
    received_at: datetime
    outcome: IngestOutcome | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Service:
    """The state every route shares; built by `create_app`'s lifespan, closed at shutdown."""

    def __init__(
        self,
        folder: RunFolder,
        keyring: Keyring,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        audit_queue_limit: int = 10_000,
        audit_outage_seconds: float = 5.0,
    ) -> None:
        self.folder = folder
        self.keyring = keyring
        self.store = store
        self.clock = clock
        self.registry = Registry(folder.models)
        self.metrics: Counter[tuple[str, str, str]] = Counter()  # (method, route, status)
        # route -> request counts per latency bucket (the last: slower than every bound), sum
        self.latency: dict[str, tuple[list[int], list[float]]] = {}
        self.uploads: dict[str, Upload] = {}
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._scorer_lock = threading.Lock()
        self._token_lock = threading.Lock()
        self.outcomes_lock = threading.Lock()  # POST /v1/outcomes: check and insert as one
        # Cursors are made from this one, never from the store's own connection, which the
        # ingest worker may be using at that moment.
        self._factory = store.cursor()
        self._tokens = TokenBook.load(store)
        self._tokens_loaded = time.monotonic()
        self._queries = 0  # analyst queries running now (take_query_slot)
        self._scorer: tuple[str, Scorer] | None = None
        # Not a bounded queue.Queue: the bound stops new requests (audit_open), but the record
        # of a request already let in is always kept, or that request would go unaudited.
        self._audit: deque[AuditRecord] = deque()
        self._audit_ready = threading.Condition()
        self._audit_limit = audit_queue_limit
        self._audit_outage = audit_outage_seconds
        self._audit_failing_since: float | None = None  # monotonic time of the first failure
        self._audit_closing = False
        self.audit_failures = 0  # failed audit writes since start (each retried)
        self.audit_dropped = 0  # records of requests refused with 503 that found no room
        self._ingest: queue.Queue[Upload | None] = queue.Queue()
        self._receiving: Counter[str] = Counter()  # uploads of each vendor streaming in now
        self._audit_thread = threading.Thread(target=self._audit_loop, name="audit", daemon=True)
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="ingest", daemon=True)
        self._audit_thread.start()
        self._ingest_thread.start()
        self._resume_inbox()

    @classmethod
    def start(
        cls, run: Path, *, audit_queue_limit: int = 10_000, audit_outage_seconds: float = 5.0
    ) -> Service:
        """Return the service of run folder `run`: the bank's keyring and its store, opened."""
        folder = RunFolder(Path(run))
        keyring = Keyring.open(folder.bank_keys)
        folder.inbox.ensure()
        store = Store.open(folder.store, key=keyring.store_key())
        try:
            return cls(
                folder,
                keyring,
                store,
                audit_queue_limit=audit_queue_limit,
                audit_outage_seconds=audit_outage_seconds,
            )
        except BaseException:
            store.close()
            raise

    def record(self, record: AuditRecord, seconds: float, *, admitted: bool = True) -> None:
        """Count a finished request for /metrics and queue its audit record.

        `admitted=False` marks a request refused because the audit was unavailable: its record
        is dropped (and counted) when the queue is already at its limit.
        """
        method, _, route = record.action.partition(" ")
        with self._lock:
            self.metrics[(method, route, record.status)] += 1
            counts, total = self.latency.setdefault(
                route, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
            )
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            total[0] += seconds
        self.audit(record, admitted=admitted)

    def metrics_snapshot(
        self,
    ) -> tuple[list[tuple[tuple[str, str, str], int]], dict[str, tuple[list[int], float]]]:
        """Return (request counts, latency buckets and sums by route), copied under the lock."""
        with self._lock:
            counts = sorted(self.metrics.items())
            latency = {route: (list(c), s[0]) for route, (c, s) in self.latency.items()}
        return counts, latency

    # -- store access --------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor on the store (made on first use)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self.store.cursor(of=self._factory)
                self._cursors.append(cur)
            self._local.cursor = cur
        return cur

    # -- tokens --------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal | None:
        """Return the caller, or None.

        The token book is reloaded from the store when it is older than a few seconds, and on
        a miss when it is older than a second.
        """
        self._reload_tokens(older_than=_TOKEN_REFRESH_SECONDS)
        principal = self._tokens.verify(token)
        if principal is None and self._reload_tokens(older_than=_TOKEN_RELOAD_SECONDS):
            principal = self._tokens.verify(token)
        return principal

    def revoke(self, token_id: str) -> bool:
        """Revoke a token in the store and drop it from memory at once; False if none was live."""
        cur = self.cursor()
        with self._token_lock:
            revoked = revoke_token(cur, token_id, now=self.clock())
            self._tokens = TokenBook.load(cur)
            self._tokens_loaded = time.monotonic()
        return revoked

    def _reload_tokens(self, *, older_than: float) -> bool:
        """Reload the token book if it is older than `older_than` seconds; return whether."""
        if time.monotonic() - self._tokens_loaded <= older_than:
            return False
        # Its own lock, and the cursor made before taking it: the service lock guards the
        # metrics the event loop updates, and must never wait on a store read.
        cur = self.cursor()
        with self._token_lock:
            if time.monotonic() - self._tokens_loaded > older_than:
                self._tokens = TokenBook.load(cur)
                self._tokens_loaded = time.monotonic()
        return True

    # -- analyst queries -----------------------------------------------------------------------

    def take_query_slot(self, limit: int) -> bool:
        """Return whether a query may run now (fewer than `limit` run); True takes a slot."""
        with self._lock:
            if self._queries >= limit:
                return False
            self._queries += 1
            return True

    def release_query_slot(self) -> None:
        """Give back a slot `take_query_slot` gave."""
        with self._lock:
            self._queries -= 1

    # -- models --------------------------------------------------------------------------------

    def scorer(self) -> Scorer:
        """Return the scorer of the CURRENT acquisition model over the newest features."""
        version = self.registry.current("acquisition")
        if version is None:
            raise ModelError(
                "no acquisition model is current; run `fusion train` for this run folder",
                model="acquisition",
            )
        cached = self._scorer
        if cached is not None and cached[0] == version:
            return cached[1]
        # Its own lock: loading a model and its features takes seconds, and the service lock is
        # taken by the event loop (metrics, audit), which must never wait on that.
        with self._scorer_lock:
            if self._scorer is None or self._scorer[0] != version:
                model = self.registry.load_score_model("acquisition", version)
                snapshot = str(model.metadata.get("snapshot_date", ""))
                folder = self.folder.features / snapshot
                if not (folder / "manifest.json").exists():
                    raise ModelError(
                        f"the features of snapshot {snapshot} that model {version} was trained "
                        f"on are not under {self.folder.features}; run `fusion features`",
                        model="acquisition",
                    )
                self._scorer = (version, Scorer(model, FeatureSet.read(folder)))
            return self._scorer[1]

    # -- audit ---------------------------------------------------------------------------------

    def audit(self, record: AuditRecord, *, admitted: bool = True) -> None:
        """Queue one audit record; its thread writes it within a fraction of a second."""
        with self._audit_ready:
            if not admitted and len(self._audit) >= self._audit_limit:
                self.audit_dropped += 1
                log.warning("audit queue full: record of a refused %s dropped", record.action)
                return
            self._audit.append(record)
            self._audit_ready.notify()

    def audit_open(self) -> bool:
        """Return whether the audit log keeps up, so a new request may be served.

        False while `audit_queue_limit` records wait, or while writes have failed for longer
        than `audit_outage_seconds`; True again once a write succeeds and the queue drains.
        """
        with self._audit_ready:
            if len(self._audit) >= self._audit_limit:
                return False
            since = self._audit_failing_since
        return since is None or time.monotonic() - since <= self._audit_outage

    def audit_depth(self) -> int:
        """Return how many audit records wait to be written."""
        with self._audit_ready:
            return len(self._audit)

    def _audit_loop(self) -> None:
        cur = self.cursor()
        backoff = _AUDIT_BACKOFF[0]
        closing_since: float | None = None
        while True:
            with self._audit_ready:
                while not self._audit and not self._audit_closing:
                    self._audit_ready.wait()
                if not self._audit:
                    return  # closing, everything written
                if self._audit_closing and closing_since is None:
                    closing_since = time.monotonic()
                # Copied, not popped: a failed write keeps them at the head, in order.
                batch = list(itertools.islice(self._audit, _AUDIT_BATCH))
            try:
                self._write_audit(cur, batch)
            except Exception:
                with self._audit_ready:
                    self.audit_failures += 1
                    if self._audit_failing_since is None:
                        self._audit_failing_since = time.monotonic()
                    waiting = len(self._audit)
                log.exception(
                    "audit write failed; %d record(s) kept, retrying in %.2f s", waiting, backoff
                )
                if closing_since is not None and (
                    time.monotonic() - closing_since > _AUDIT_FLUSH_SECONDS
                ):
                    log.error("service closing: %d audit record(s) could not be written", waiting)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, _AUDIT_BACKOFF[1])
                continue
            with self._audit_ready:
                for _ in batch:
                    self._audit.popleft()
                if self._audit_failing_since is not None:
                    log.warning("audit writes succeed again")
                self._audit_failing_since = None
            backoff = _AUDIT_BACKOFF[0]

    @staticmethod
    def _write_audit(cur: duckdb.DuckDBPyConnection, records: list[AuditRecord]) -> None:
        """Insert `records` into audit_log in one statement; raises when the store refuses."""
        frame = pl.DataFrame(
            {
                "at": [r.at.astimezone(UTC).replace(tzinfo=None) for r in records],
                "actor": [r.actor for r in records],
                "role": [r.role for r in records],
                "action": [r.action for r in records],
                "detail": [r.detail for r in records],
                "rows": [r.rows for r in records],
                "status": [r.status for r in records],
            },
            schema={
                "at": pl.Datetime("us"),
                "actor": pl.String,
                "role": pl.String,
                "action": pl.String,
                "detail": pl.String,
                "rows": pl.Int64,
                "status": pl.String,
            },
        )
        cur.register("audit_batch", frame.to_arrow())
        try:
            cur.execute(
                'INSERT INTO audit_log ("at", actor, role, action, detail, rows, status) '
                'SELECT "at", actor, role, action, detail, rows, status FROM audit_batch'
            )
        finally:
            cur.unregister("audit_batch")

    # -- ingest --------------------------------------------------------------------------------

    def submit(self, upload: Upload) -> None:
        """Queue a received sealed file for the single ingest worker."""
        with self._lock:
            self.uploads[upload.upload_id] = upload
            if len(self.uploads) > _MAX_UPLOADS_KEPT:
                # Forget the oldest judged uploads; their verdicts stay in the ledger.
                for key in [k for k, u in self.uploads.items() if u.done.is_set()][
                    : len(self.uploads) - _MAX_UPLOADS_KEPT
                ]:
                    del self.uploads[key]
        self._ingest.put(upload)

    def uploads_claiming(self, batch_id: str) -> list[Upload]:
        """Return the uploads whose (unverified) manifest claimed `batch_id`, oldest first."""
        # Under the lock: request threads read while the event loop's `submit` inserts.
        with self._lock:
            return [u for u in self.uploads.values() if u.claimed_batch_id == batch_id]

    def admit_upload(self, vendor_id: str, limit: int) -> bool:
        """Reserve room for one more upload of `vendor_id`, or return False when it is full.

        A vendor has at most `limit` uploads streaming in or waiting for the ingest worker, so
        one vendor cannot fill the bank's disk or starve the others' batches. A True must be
        followed by `release_upload` once the upload is queued (or abandoned).
        """
        with self._lock:
            waiting = sum(
                1 for u in self.uploads.values() if u.vendor_id == vendor_id and not u.done.is_set()
            )
            if waiting + self._receiving[vendor_id] >= limit:
                return False
            self._receiving[vendor_id] += 1
            return True

    def release_upload(self, vendor_id: str) -> None:
        """Return the room `admit_upload` reserved (the upload is queued now, or abandoned)."""
        with self._lock:
            self._receiving[vendor_id] -= 1
            if self._receiving[vendor_id] <= 0:
                del self._receiving[vendor_id]

    def pending(self) -> int:
        return self._ingest.qsize()

    def _resume_inbox(self) -> None:
        """Queue the sealed files a previous run left in the inbox; delete partial uploads."""
        inbox = self.folder.inbox
        for part in inbox.work.glob(".upload-*.part"):
            part.unlink(missing_ok=True)  # never renamed into the inbox, so never accepted
        found = inbox.pending()
        for path in found:
            named = _UPLOADED.match(path.name)
            try:
                claimed: str | None = read_manifest(path).batch_id
            except BatchRefused:
                claimed = None  # the worker refuses and ledgers it
            self.submit(
                Upload(
                    upload_id=named["upload"] if named else secrets.token_hex(12),
                    token_id="inbox",  # noqa: S106 - no request brought it: found at start
                    # The route names a file after the token's vendor, which it checked
                    # against the manifest; other files (`fusion ingest`) are the bank's own.
                    vendor_id=named["vendor"] if named else None,
                    path=path,
                    claimed_batch_id=claimed,
                    received_at=self.clock(),
                )
            )
        if found:
            log.info("queued %d sealed file(s) found in the inbox at start", len(found))

    def _ingest_loop(self) -> None:
        while True:
            upload = self._ingest.get()
            if upload is None:
                return
            try:
                try:
                    outcome = ingest_file(
                        upload.path,
                        store=self.store,
                        keyring=self.keyring,
                        inbox=self.folder.inbox,
                        now=self.clock(),
                    )
                except Exception:
                    # The sealed file stays in the inbox: `fusion ingest` (or a restart) retries
                    # it. The vendor learns "failed", never why; the bank's log has the traceback.
                    log.exception("ingest of upload %s failed", upload.upload_id)
                    outcome = IngestOutcome(
                        upload.claimed_batch_id, upload.vendor_id, "failed", 0, ("ingest_error",)
                    )
                upload.outcome = outcome
                try:
                    self._write_verdict(upload, outcome)
                except Exception:
                    # The verdict stays in memory (and a loaded batch in the ledger); a restart
                    # forgets a refusal, as before the `uploads` table.
                    log.exception("verdict of upload %s not written", upload.upload_id)
            finally:
                upload.done.set()

    def _write_verdict(self, upload: Upload, outcome: IngestOutcome) -> None:
        """Write what the worker made of `upload` to the `uploads` table (status, never cause)."""
        self.store.execute(
            "INSERT OR REPLACE INTO uploads (upload_id, vendor_id, claimed_batch_id, ledger_id, "
            "status, received_at, judged_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                upload.upload_id,
                upload.vendor_id,
                upload.claimed_batch_id,
                outcome.ledger_id,  # None when the ingest failed: it wrote no ledger row
                outcome.status,
                _naive_utc(upload.received_at),
                _naive_utc(self.clock()),
            ],
        )

    def verdict(self, batch_id: str, vendor_id: str | None) -> str | None:
        """Return the stored verdict of the newest upload claiming `batch_id`, or None.

        `vendor_id` None (an admin) means any vendor's upload.
        """
        row = (
            self.cursor()
            .execute(
                "SELECT status FROM uploads WHERE claimed_batch_id = ? "
                "AND (CAST(? AS VARCHAR) IS NULL OR vendor_id = ?) "
                "ORDER BY received_at DESC, judged_at DESC LIMIT 1",
                [batch_id, vendor_id, vendor_id],
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Return once every queued upload is ingested (tests and shutdown), or False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            uploads = list(self.uploads.values())
        for upload in uploads:
            if not upload.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the queued work, flush the audit log and close the store."""
        self._ingest.put(None)
        self._ingest_thread.join(timeout=300)
        with self._audit_ready:
            self._audit_closing = True
            self._audit_ready.notify()
        self._audit_thread.join(timeout=_AUDIT_FLUSH_SECONDS + 20)
        with self._lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
            self._factory.close()
        self.store.close()

    def snapshot_path(self) -> Path:
        """Return the published head-office snapshot analysts' queries read."""
        return self.folder.snapshots / "head_office.duckdb"
